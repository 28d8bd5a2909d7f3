/*
 * neuron_kernels.cu -- CUDA kernels for IF/LIF neurons: forward over time and BPTT.
 *
 * Design
 * ------
 * One CUDA thread owns one neuron (a grid-stride loop covers any N) and runs the whole time
 * recurrence in registers: the potential V in the forward pass, the carried dL/dV in the
 * backward pass. At step t the threads of a warp touch 32 consecutive elements of row t of
 * every [T, N] buffer, so every access is coalesced. Time is walked in chunks of UNROLL steps
 * whose loads are issued before any arithmetic, which keeps enough bytes in flight per thread
 * to run at memory bandwidth.
 *
 * Storage may be float32, float16 or bfloat16; arithmetic is float32 throughout and uses the
 * scalar formulas of include/spikecore_math.h, the header the CPU kernels include too. Build
 * with --fmad=false so that the forward pass is bit-identical to PyTorch's float32 arithmetic.
 *
 * The training route saves H[t] in the storage dtype. For 16-bit storage a rounded H could
 * land on the other side of the threshold than the H that decided the spike; store_h() then
 * moves it by one unit in the last place, so the backward pass always recomputes the same S.
 *
 * Kernels run on the caller's stream and device; every launch is checked and errors are
 * returned as codes + messages through the C API of cuda/spikecore_cuda.h.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdio.h>

#include "spikecore_cuda.h"
#include "spikecore_math.h"

namespace {

constexpr int UNROLL = 8;
constexpr int BLOCK = 256;
constexpr int MIN_BLOCKS_PER_SM = 4;  /* caps registers at 64: 1024 resident threads per SM */

using spikecore::charge;
using spikecore::charge_grad_v;
using spikecore::charge_grad_x;
using spikecore::fire;
using spikecore::hard_reset;
using spikecore::reset_grad;
using spikecore::soft_reset;

/* The surrogate switch stays out of line: inlined into every unrolled step it multiplies the
 * code size (and the build time) several-fold, while these kernels wait on memory anyway. */
__device__ __noinline__ float surrogate_grad(int index, float x, float alpha) {
    return spikecore::surrogate_grad(index, x, alpha);
}

/* --- storage <-> float ------------------------------------------------------------------- */
template <typename S> __device__ __forceinline__ float load(const S *p);
template <> __device__ __forceinline__ float load(const float *p) { return __ldg(p); }
template <> __device__ __forceinline__ float load(const __half *p) { return __half2float(__ldg(p)); }
template <> __device__ __forceinline__ float load(const __nv_bfloat16 *p) {
    return __bfloat162float(__ldg(p));
}

template <typename S> __device__ __forceinline__ S from_float(float v);
template <> __device__ __forceinline__ float from_float(float v) { return v; }
template <> __device__ __forceinline__ __half from_float(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_float(float v) {
    return __float2bfloat16_rn(v);
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

/* The neighbouring 16-bit float above (up) or below a value, on sign-magnitude bits. */
__device__ __forceinline__ unsigned short next_bits(unsigned short b, bool up) {
    const bool neg = b & 0x8000u;
    if (up) return neg ? (b == 0x8000u ? 0x0001u : b - 1) : b + 1;
    return neg ? b + 1 : (b == 0 ? 0x8001u : b - 1);
}
__device__ __forceinline__ __half nudge(__half q, bool up) {
    return __ushort_as_half(next_bits(__half_as_ushort(q), up));
}
__device__ __forceinline__ __nv_bfloat16 nudge(__nv_bfloat16 q, bool up) {
    return __ushort_as_bfloat16(next_bits(__bfloat16_as_ushort(q), up));
}
__device__ __forceinline__ float nudge(float q, bool) { return q; }

/* H in storage precision, on the same side of the threshold as the float H that fired. */
template <typename S>
__device__ __forceinline__ S store_h(float h, float s, float v_threshold) {
    S q = from_float<S>(h);
    const bool fired = s != 0.0f;
    if ((to_float(q) >= v_threshold) != fired) q = nudge(q, fired);
    return q;
}

/* --- kernels ----------------------------------------------------------------------------- */
template <typename S>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
forward_kernel(const S *__restrict__ x, const S *__restrict__ v0, S *__restrict__ spike,
               S *__restrict__ v_next, S *__restrict__ h_seq, S *__restrict__ v_seq,
               S *__restrict__ grad_s_to_h, S *__restrict__ grad_v_to_h,
               long long steps, long long n, sc_params p) {
    const float v_rest = p.hard_reset ? p.v_reset : 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float v = load(v0 + i);
        for (long long t0 = 0; t0 < steps; t0 += UNROLL) {
            float xs[UNROLL];
#pragma unroll
            for (int k = 0; k < UNROLL; ++k)
                if (t0 + k < steps) xs[k] = load(x + (t0 + k) * n + i);
#pragma unroll
            for (int k = 0; k < UNROLL; ++k) {
                if (t0 + k >= steps) break;
                const long long at = (t0 + k) * n + i;
                const float h = charge(p.charge_mode, xs[k], v, v_rest, p.reciprocal_tau);
                const float s = fire(h, p.v_threshold);
                spike[at] = from_float<S>(s);
                if (h_seq) h_seq[at] = store_h<S>(h, s, p.v_threshold);
                if (grad_s_to_h) {
                    const float sg = surrogate_grad(p.surrogate, h - p.v_threshold, p.alpha);
                    grad_s_to_h[at] = from_float<S>(sg);
                    grad_v_to_h[at] = from_float<S>(reset_grad(
                        p.hard_reset, p.detach_reset, h, s, sg, p.v_threshold, p.v_reset));
                }
                v = p.hard_reset ? hard_reset(h, s, p.v_reset) : soft_reset(h, s, p.v_threshold);
                if (v_seq) v_seq[at] = from_float<S>(v);
            }
        }
        v_next[i] = from_float<S>(v);
    }
}

template <typename S>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
backward_kernel(const S *__restrict__ grad_spike, const S *__restrict__ grad_v_next,
                const S *__restrict__ h_seq, const S *__restrict__ grad_s_to_h,
                const S *__restrict__ grad_v_to_h, S *__restrict__ grad_x,
                S *__restrict__ grad_v, long long steps, long long n, sc_params p) {
    const float dh_dx = charge_grad_x(p.charge_mode, p.reciprocal_tau);
    const float dh_dv = charge_grad_v(p.charge_mode, p.reciprocal_tau);
    const bool recompute = h_seq != nullptr;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float carry = load(grad_v_next + i);
        for (long long t1 = steps; t1 > 0; t1 -= UNROLL) {   /* steps t1-1 down to t1-UNROLL */
            float gs[UNROLL], a[UNROLL], b[UNROLL];
#pragma unroll
            for (int k = 0; k < UNROLL; ++k) {
                const long long t = t1 - 1 - k;
                if (t < 0) break;
                const long long at = t * n + i;
                gs[k] = load(grad_spike + at);
                if (recompute) {
                    a[k] = load(h_seq + at);
                } else {
                    a[k] = load(grad_s_to_h + at);
                    b[k] = load(grad_v_to_h + at);
                }
            }
#pragma unroll
            for (int k = 0; k < UNROLL; ++k) {
                const long long t = t1 - 1 - k;
                if (t < 0) break;
                float sg, dv_dh;
                if (recompute) {
                    const float h = a[k];
                    const float s = fire(h, p.v_threshold);
                    sg = surrogate_grad(p.surrogate, h - p.v_threshold, p.alpha);
                    dv_dh = reset_grad(p.hard_reset, p.detach_reset, h, s, sg, p.v_threshold,
                                       p.v_reset);
                } else {
                    sg = a[k];
                    dv_dh = b[k];
                }
                const float grad_h = gs[k] * sg + carry * dv_dh;
                grad_x[t * n + i] = from_float<S>(grad_h * dh_dx);
                carry = grad_h * dh_dv;
            }
        }
        grad_v[i] = from_float<S>(carry);
    }
}

/* --- host side: device guard, launch, error reporting ------------------------------------ */
int report(cudaError_t e, const char *what, char *err, int err_len) {
    if (e == cudaSuccess) return 0;
    if (err && err_len > 0) {
        if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice)
            snprintf(err, err_len, "no CUDA device is usable (%s: %s)", what,
                     cudaGetErrorString(e));
        else
            snprintf(err, err_len, "%s: %s", what, cudaGetErrorString(e));
    }
    return (int)e;
}

/* Runs `launch` with `device` current, then restores the caller's device. */
template <typename F>
int on_device(int device, F launch, const char *what, char *err, int err_len) {
    int previous = 0;
    cudaError_t e = cudaGetDevice(&previous);
    if (e != cudaSuccess) return report(e, "cudaGetDevice", err, err_len);
    if (previous != device && (e = cudaSetDevice(device)) != cudaSuccess)
        return report(e, "cudaSetDevice", err, err_len);
    launch();
    e = cudaGetLastError();
    if (previous != device) cudaSetDevice(previous);
    return report(e, what, err, err_len);
}

unsigned int grid_for(long long n) {
    const long long blocks = (n + BLOCK - 1) / BLOCK;
    return (unsigned int)(blocks < (1LL << 30) ? blocks : (1LL << 30));
}

template <typename S>
int forward_typed(const void *x, const void *v, void *spike, void *v_next, void *h_seq,
                  void *v_seq, void *gs2h, void *gv2h, long long steps, long long n,
                  sc_params p, int device, void *stream, char *err, int err_len) {
    if (n <= 0) return 0;
    return on_device(device, [&] {
        forward_kernel<S><<<grid_for(n), BLOCK, 0, (cudaStream_t)stream>>>(
            (const S *)x, (const S *)v, (S *)spike, (S *)v_next, (S *)h_seq, (S *)v_seq,
            (S *)gs2h, (S *)gv2h, steps, n, p);
    }, "spikecore forward kernel", err, err_len);
}

template <typename S>
int backward_typed(const void *gs, const void *gv_next, const void *h_seq, const void *gs2h,
                   const void *gv2h, void *gx, void *gv, long long steps, long long n,
                   sc_params p, int device, void *stream, char *err, int err_len) {
    if (n <= 0) return 0;
    return on_device(device, [&] {
        backward_kernel<S><<<grid_for(n), BLOCK, 0, (cudaStream_t)stream>>>(
            (const S *)gs, (const S *)gv_next, (const S *)h_seq, (const S *)gs2h,
            (const S *)gv2h, (S *)gx, (S *)gv, steps, n, p);
    }, "spikecore backward kernel", err, err_len);
}

int bad_dtype(int dtype, char *err, int err_len) {
    snprintf(err, err_len, "unsupported dtype code %d", dtype);
    return -1;
}

}  // namespace

extern "C" int sc_cuda_forward(int dtype, const void *x, const void *v, void *spike,
                               void *v_next, void *h_seq, void *v_seq, void *grad_s_to_h,
                               void *grad_v_to_h, long long steps, long long neurons,
                               sc_params params, int device, void *stream, char *err,
                               int err_len) {
    switch (dtype) {
    case SC_FLOAT32:
        return forward_typed<float>(x, v, spike, v_next, h_seq, v_seq, grad_s_to_h, grad_v_to_h,
                                    steps, neurons, params, device, stream, err, err_len);
    case SC_FLOAT16:
        return forward_typed<__half>(x, v, spike, v_next, h_seq, v_seq, grad_s_to_h,
                                     grad_v_to_h, steps, neurons, params, device, stream, err,
                                     err_len);
    case SC_BFLOAT16:
        return forward_typed<__nv_bfloat16>(x, v, spike, v_next, h_seq, v_seq, grad_s_to_h,
                                            grad_v_to_h, steps, neurons, params, device, stream,
                                            err, err_len);
    default:
        return bad_dtype(dtype, err, err_len);
    }
}

extern "C" int sc_cuda_backward(int dtype, const void *grad_spike, const void *grad_v_next,
                                const void *h_seq, const void *grad_s_to_h,
                                const void *grad_v_to_h, void *grad_x, void *grad_v,
                                long long steps, long long neurons, sc_params params,
                                int device, void *stream, char *err, int err_len) {
    switch (dtype) {
    case SC_FLOAT32:
        return backward_typed<float>(grad_spike, grad_v_next, h_seq, grad_s_to_h, grad_v_to_h,
                                     grad_x, grad_v, steps, neurons, params, device, stream,
                                     err, err_len);
    case SC_FLOAT16:
        return backward_typed<__half>(grad_spike, grad_v_next, h_seq, grad_s_to_h, grad_v_to_h,
                                      grad_x, grad_v, steps, neurons, params, device, stream,
                                      err, err_len);
    case SC_BFLOAT16:
        return backward_typed<__nv_bfloat16>(grad_spike, grad_v_next, h_seq, grad_s_to_h,
                                             grad_v_to_h, grad_x, grad_v, steps, neurons, params,
                                             device, stream, err, err_len);
    default:
        return bad_dtype(dtype, err, err_len);
    }
}

extern "C" int sc_cuda_device_count(int *count, char *err, int err_len) {
    *count = 0;
    return report(cudaGetDeviceCount(count), "cudaGetDeviceCount", err, err_len);
}
