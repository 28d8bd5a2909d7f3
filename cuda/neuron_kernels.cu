/*
 * neuron_kernels.cu -- CUDA kernels for IF/LIF neurons: forward over time and BPTT.
 *
 * Design
 * ------
 * One CUDA thread owns a group of VEC neighbouring neurons (GROUP_BYTES, 16 by default: 4
 * float32 or 8 16-bit values; a grid-stride loop covers any N) and runs their whole time
 * recurrence in registers: the potentials in the forward pass, the carried dL/dV in the
 * backward pass. At step t the threads of a warp touch consecutive groups of row t of every
 * [T, N] buffer (512 bytes with 16-byte groups), so every access is coalesced. Time is walked
 * in chunks of UNROLL steps whose loads are issued before any arithmetic, which keeps enough
 * bytes in flight to run at memory bandwidth (with SPIKECORE_CUDA_PREFETCH, one chunk ahead:
 * the next chunk's loads are in flight while this one computes). Where N or a pointer does not
 * allow grouped accesses, VEC = 1. The launch shape's constants are macros (see below), so
 * benchmarks/cuda_variants.py can time other shapes; the package builds with the defaults.
 *
 * Storage may be float32, float16 or bfloat16; arithmetic is float32 throughout and uses the
 * scalar formulas of include/spikecore_math.h, the header the CPU kernels include too. Build
 * with --fmad=false so that the forward pass is bit-identical to PyTorch's float32 arithmetic.
 *
 * The training route saves H[t] in the storage dtype. For 16-bit storage a rounded H could
 * land on the other side of the threshold than the H that decided the spike;
 * keep_spike_side() then moves it by one unit in the last place, so the backward pass always
 * recomputes the same S; a finite H that overflows the 16-bit range is stored as its largest
 * finite value.
 *
 * Two inputs may be NULL, as on the CPU: the initial potential v0 (every neuron starts at
 * rest: V_reset under hard reset, 0 under soft reset, rounded to the storage dtype as a tensor
 * filled with it would be) and the incoming grad_v_next (zero). That spares the caller a
 * fill kernel per call for a fresh state.
 *
 * Kernels run on the caller's stream and device; every launch is checked and errors are
 * returned as codes + messages through the C API of cuda/spikecore_cuda.h.
 */
#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <stdint.h>
#include <stdio.h>

#include <initializer_list>

#include "spikecore_cuda.h"
#include "spikecore_math.h"

namespace {

/* Launch shape, each constant overridable at compile time (-DSPIKECORE_CUDA_UNROLL=8 ...). */
#ifndef SPIKECORE_CUDA_UNROLL
#define SPIKECORE_CUDA_UNROLL 4        /* steps whose loads are issued together */
#endif
#ifndef SPIKECORE_CUDA_GROUP_BYTES
#define SPIKECORE_CUDA_GROUP_BYTES 16  /* bytes of neighbouring neurons a thread owns: 4, 8, 16 */
#endif
#ifndef SPIKECORE_CUDA_MIN_BLOCKS
#define SPIKECORE_CUDA_MIN_BLOCKS 2    /* 2 caps registers at 128: 512 resident threads per SM */
#endif
#ifndef SPIKECORE_CUDA_PREFETCH
#define SPIKECORE_CUDA_PREFETCH 0      /* 1: load a chunk while the one before computes */
#endif
/* (and SPIKECORE_CUDA_FAST_DIV, read by include/spikecore_math.h: 1 lets the surrogate
 * derivatives divide with __fdividef) */
constexpr int UNROLL = SPIKECORE_CUDA_UNROLL;
constexpr int GROUP_BYTES = SPIKECORE_CUDA_GROUP_BYTES;
constexpr int BLOCK = 256;
constexpr int MIN_BLOCKS_PER_SM = SPIKECORE_CUDA_MIN_BLOCKS;
constexpr bool PREFETCH = SPIKECORE_CUDA_PREFETCH != 0;
static_assert(UNROLL >= 1 && UNROLL <= 16, "SPIKECORE_CUDA_UNROLL: 1 to 16");
static_assert(GROUP_BYTES == 4 || GROUP_BYTES == 8 || GROUP_BYTES == 16,
              "SPIKECORE_CUDA_GROUP_BYTES: 4, 8 or 16");
static_assert(MIN_BLOCKS_PER_SM >= 1 && MIN_BLOCKS_PER_SM <= 8,
              "SPIKECORE_CUDA_MIN_BLOCKS: 1 to 8");

/* Neurons a thread owns on the grouped path. */
template <typename S>
constexpr int group_size() { return GROUP_BYTES / (int)sizeof(S); }

using spikecore::charge;
using spikecore::charge_grad_tau;
using spikecore::charge_grad_v;
using spikecore::charge_grad_x;
using spikecore::fire;
using spikecore::hard_reset;
using spikecore::reset_grad;
using spikecore::soft_reset;

/* The surrogate derivative. The BPTT kernel on the vectorised path from H is instantiated per
 * surrogate (SG = 0..6: the switch folds away and the formula is inlined); elsewhere (SG =
 * SG_ANY) the switch stays in one out-of-line function, because inlined into every unrolled
 * step it multiplies the code size and the build time several-fold. SG_STORED marks the BPTT
 * kernel of the stored route (the teaching path's dS/dH and dV/dH), which needs none. */
constexpr int SG_ANY = -1;
constexpr int SG_STORED = -2;

__device__ __noinline__ float surrogate_grad_call(int index, float x, float alpha) {
    return spikecore::surrogate_grad(index, x, alpha);
}

template <int SG>
__device__ __forceinline__ float surrogate_grad(int index, float x, float alpha) {
    if constexpr (SG < 0)
        return surrogate_grad_call(index, x, alpha);
    else
        return spikecore::surrogate_grad(SG, x, alpha);
}

/* --- storage <-> float ------------------------------------------------------------------- */
template <typename S> __device__ __forceinline__ float load(const S *p);
template <> __device__ __forceinline__ float load(const float *p) { return __ldg(p); }
template <> __device__ __forceinline__ float load(const __half *p) {
    return __half2float(__ldg(p));
}
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

__device__ __forceinline__ __half nudge(__half q, bool up) {
    return __ushort_as_half(spikecore::next16(__half_as_ushort(q), up));
}
__device__ __forceinline__ __nv_bfloat16 nudge(__nv_bfloat16 q, bool up) {
    return __ushort_as_bfloat16(spikecore::next16(__bfloat16_as_ushort(q), up));
}
__device__ __forceinline__ float nudge(float q, bool) { return q; }

/* A finite h that rounded to infinity as the largest finite value (spikecore::finite16). */
__device__ __forceinline__ __half finite(__half q, float h) {
    return __ushort_as_half(spikecore::finite16(__half_as_ushort(q), 0x7c00u, h));
}
__device__ __forceinline__ __nv_bfloat16 finite(__nv_bfloat16 q, float h) {
    return __ushort_as_bfloat16(spikecore::finite16(__bfloat16_as_ushort(q), 0x7f80u, h));
}
__device__ __forceinline__ float finite(float q, float) { return q; }

/* The resting potential as an absent v0 stands for it: rounded to the storage dtype. */
template <typename S>
__device__ __forceinline__ float rest_potential(const sc_params &p) {
    return to_float(from_float<S>(p.hard_reset ? p.v_reset : 0.0f));
}

/* Whether H rounded to storage precision, q, lies on the other side of the threshold than the
 * float H that decided the spike s (never for float32). */
template <typename S>
__device__ __forceinline__ bool crossed(S q, float s, float v_threshold) {
    if constexpr (sizeof(S) == sizeof(float)) return false;   /* q is the float H itself */
    return (to_float(q) >= v_threshold) != (s != 0.0f);
}

/* A group of VEC neighbouring neurons' values, moved as one access (GROUP_BYTES wide). */
template <typename S, int VEC>
struct alignas(sizeof(S) * VEC) Pack {
    S e[VEC];
};

template <typename S, int VEC>
__device__ __forceinline__ Pack<S, VEC> load_pack(const S *p) {
    return *reinterpret_cast<const Pack<S, VEC> *>(p);
}
template <typename S, int VEC>
__device__ __forceinline__ void store_pack(S *p, const Pack<S, VEC> &v) {
    *reinterpret_cast<Pack<S, VEC> *>(p) = v;
}

/* Moves each rounded H of a group that crossed the threshold back by one unit in the last
 * place, to the side of the H that decided its spike. Rare (H within half a 16-bit ulp of the
 * threshold), so the forward tests a whole group once and branches here: one branch per
 * group and step rather than one per neuron, which also keeps nvcc's optimiser fast on
 * 8-byte groups. */
template <typename S, int VEC>
__device__ __forceinline__ void keep_spike_side(Pack<S, VEC> &h, const Pack<S, VEC> &spike,
                                                float v_threshold) {
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
        const float s = to_float(spike.e[k]);
        const S moved = nudge(h.e[k], s != 0.0f);   /* a select, not a branch per neuron */
        h.e[k] = crossed(h.e[k], s, v_threshold) ? moved : h.e[k];
    }
}

/* The VEC state values from row + i as float32, or `absent` for each when row is NULL. */
template <typename S, int VEC>
__device__ __forceinline__ void load_state(const S *row, long long i, float absent,
                                           float (&out)[VEC]) {
    if (row) {
        const Pack<S, VEC> q = load_pack<S, VEC>(row + i);
#pragma unroll
        for (int k = 0; k < VEC; ++k) out[k] = to_float(q.e[k]);
    } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) out[k] = absent;
    }
}

/* --- kernels ------------------------------------------------------------------------------
 * Thread j owns neurons [j*VEC, j*VEC + VEC). VEC = group_size<S>() when N and every pointer
 * allow GROUP_BYTES-wide accesses, else 1. The forward kernel writes the teaching outputs
 * (v_seq, grad_s_to_h, grad_v_to_h) only when TEACH is set: the training and inference
 * forwards, which never ask for them, then carry no registers for them (more warps per SM). */
template <typename S, int VEC, bool TEACH>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
forward_kernel(const S *__restrict__ x, const S *__restrict__ v0, S *__restrict__ spike,
               S *__restrict__ v_next, S *__restrict__ h_seq, S *__restrict__ v_seq,
               S *__restrict__ grad_s_to_h, S *__restrict__ grad_v_to_h,
               long long steps, long long n, sc_params p) {
    using P = Pack<S, VEC>;
    const float v_rest = p.hard_reset ? p.v_reset : 0.0f;
    const long long groups = n / VEC;
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < groups;
         j += (long long)gridDim.x * blockDim.x) {
        const long long i = j * VEC;
        float v[VEC];
        load_state<S, VEC>(v0, i, rest_potential<S>(p), v);
        struct Chunk { P x[UNROLL]; };
        auto load_chunk = [&](Chunk &c, long long t0) {   /* steps t0 to t0+UNROLL-1 */
#pragma unroll
            for (int u = 0; u < UNROLL; ++u)
                if (t0 + u < steps) c.x[u] = load_pack<S, VEC>(x + (t0 + u) * n + i);
        };
        Chunk ahead;
        if constexpr (PREFETCH) load_chunk(ahead, 0);
        for (long long t0 = 0; t0 < steps; t0 += UNROLL) {
            Chunk c;
            if constexpr (PREFETCH) {
                c = ahead;
                load_chunk(ahead, t0 + UNROLL);
            } else {
                load_chunk(c, t0);
            }
            const P *xs = c.x;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                if (t0 + u >= steps) break;
                const long long at = (t0 + u) * n + i;
                P sp, hp, gsp, gvp, vsp;
                bool moved = false;   /* some rounded H crossed the threshold */
#pragma unroll
                for (int k = 0; k < VEC; ++k) {
                    const float h = charge(p.charge_mode, to_float(xs[u].e[k]), v[k], v_rest,
                                           p.reciprocal_tau);
                    const float s = fire(h, p.v_threshold);
                    sp.e[k] = from_float<S>(s);
                    if (h_seq) {   /* H in storage precision, finite where h is */
                        hp.e[k] = finite(from_float<S>(h), h);
                        moved |= crossed(hp.e[k], s, p.v_threshold);
                    }
                    if (TEACH && grad_s_to_h) {
                        const float sg = surrogate_grad<SG_ANY>(p.surrogate, h - p.v_threshold,
                                                            p.alpha);
                        gsp.e[k] = from_float<S>(sg);
                        gvp.e[k] = from_float<S>(reset_grad(p.hard_reset, p.detach_reset, h, s,
                                                            sg, p.v_threshold, p.v_reset));
                    }
                    v[k] = p.hard_reset ? hard_reset(h, s, p.v_reset)
                                        : soft_reset(h, s, p.v_threshold);
                    vsp.e[k] = from_float<S>(v[k]);
                }
                store_pack(spike + at, sp);
                if (h_seq) {
                    if (moved) keep_spike_side(hp, sp, p.v_threshold);
                    store_pack(h_seq + at, hp);
                }
                if (TEACH && grad_s_to_h) {
                    store_pack(grad_s_to_h + at, gsp);
                    store_pack(grad_v_to_h + at, gvp);
                }
                if (TEACH && v_seq) store_pack(v_seq + at, vsp);
            }
        }
        P out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) out.e[k] = from_float<S>(v[k]);
        store_pack(v_next + i, out);
    }
}

template <typename S, int VEC, int SG>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
backward_kernel(const S *__restrict__ grad_spike, const S *__restrict__ grad_v_next,
                const S *__restrict__ h_seq, const S *__restrict__ grad_s_to_h,
                const S *__restrict__ grad_v_to_h, S *__restrict__ grad_x,
                S *__restrict__ grad_v, long long steps, long long n, sc_params p) {
    using P = Pack<S, VEC>;
    const float dh_dx = charge_grad_x(p.charge_mode, p.reciprocal_tau);
    const float dh_dv = charge_grad_v(p.charge_mode, p.reciprocal_tau);
    /* The route is fixed at compile time, so each kernel holds the loads and registers of one
     * route only (with both, the bfloat16 kernel of 8 neurons a thread spilled registers). */
    constexpr bool recompute = SG != SG_STORED;
    const long long groups = n / VEC;
    for (long long j = blockIdx.x * (long long)blockDim.x + threadIdx.x; j < groups;
         j += (long long)gridDim.x * blockDim.x) {
        const long long i = j * VEC;
        float carry[VEC];
        load_state<S, VEC>(grad_v_next, i, 0.0f, carry);
        struct Chunk { P gs[UNROLL], a[UNROLL], b[UNROLL]; };
        auto load_chunk = [&](Chunk &c, long long t1) {   /* steps t1-1 down to t1-UNROLL */
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const long long t = t1 - 1 - u;
                if (t < 0) break;
                const long long at = t * n + i;
                c.gs[u] = load_pack<S, VEC>(grad_spike + at);
                if constexpr (recompute) {
                    c.a[u] = load_pack<S, VEC>(h_seq + at);
                } else {
                    c.a[u] = load_pack<S, VEC>(grad_s_to_h + at);
                    c.b[u] = load_pack<S, VEC>(grad_v_to_h + at);
                }
            }
        };
        Chunk ahead;
        if constexpr (PREFETCH) load_chunk(ahead, steps);
        for (long long t1 = steps; t1 > 0; t1 -= UNROLL) {
            Chunk c;
            if constexpr (PREFETCH) {
                c = ahead;
                load_chunk(ahead, t1 - UNROLL);
            } else {
                load_chunk(c, t1);
            }
            const P *gs = c.gs, *a = c.a, *b = c.b;
#pragma unroll
            for (int u = 0; u < UNROLL; ++u) {
                const long long t = t1 - 1 - u;
                if (t < 0) break;
                P gx;
#pragma unroll
                for (int k = 0; k < VEC; ++k) {
                    float sg, dv_dh;
                    if constexpr (recompute) {
                        const float h = to_float(a[u].e[k]);
                        const float s = fire(h, p.v_threshold);
                        sg = surrogate_grad<SG>(p.surrogate, h - p.v_threshold, p.alpha);
                        dv_dh = reset_grad(p.hard_reset, p.detach_reset, h, s, sg,
                                           p.v_threshold, p.v_reset);
                    } else {
                        sg = to_float(a[u].e[k]);
                        dv_dh = to_float(b[u].e[k]);
                    }
                    const float grad_h = to_float(gs[u].e[k]) * sg + carry[k] * dv_dh;
                    gx.e[k] = from_float<S>(grad_h * dh_dx);
                    carry[k] = grad_h * dh_dv;
                }
                store_pack(grad_x + t * n + i, gx);
            }
        }
        P out;
#pragma unroll
        for (int k = 0; k < VEC; ++k) out.e[k] = from_float<S>(carry[k]);
        store_pack(grad_v + i, out);
    }
}

/* BPTT for a learnable 1/tau (ParametricLIF): as backward_kernel, and each thread also sums
 * dL/dH[t] * dH[t]/d(1/tau) over time for its neuron into grad_tau[i] (float32). The sum over
 * neurons is left to the caller (torch.sum), so no atomics are needed and the result does not
 * depend on the launch configuration. V[t-1] is rebuilt from H[t-1] as the forward computed
 * it, with each H[t] loaded once and carried to step t-1; V[-1] is v0 (NULL: at rest). One
 * neuron per thread: this path is not on the hot list. */
template <typename S>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
backward_plif_kernel(const S *__restrict__ grad_spike, const S *__restrict__ grad_v_next,
                     const S *__restrict__ h_seq, const S *__restrict__ v0,
                     S *__restrict__ grad_x, S *__restrict__ grad_v,
                     float *__restrict__ grad_tau, long long steps, long long n, sc_params p) {
    const float dh_dx = charge_grad_x(p.charge_mode, p.reciprocal_tau);
    const float dh_dv = charge_grad_v(p.charge_mode, p.reciprocal_tau);
    const float v_rest = p.hard_reset ? p.v_reset : 0.0f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float carry = grad_v_next ? load(grad_v_next + i) : 0.0f, acc = 0.0f;
        float h = steps > 0 ? load(h_seq + (steps - 1) * n + i) : 0.0f;
        for (long long t = steps - 1; t >= 0; --t) {
            const float s = fire(h, p.v_threshold);
            const float sg = surrogate_grad<SG_ANY>(p.surrogate, h - p.v_threshold, p.alpha);
            const float grad_h = load(grad_spike + t * n + i) * sg +
                carry * reset_grad(p.hard_reset, p.detach_reset, h, s, sg, p.v_threshold,
                                   p.v_reset);
            float h_prev = 0.0f, v_prev;   /* H[t-1]: V[t-1] now, step t-1's H next */
            if (t > 0) {
                h_prev = load(h_seq + (t - 1) * n + i);
                const float sp = fire(h_prev, p.v_threshold);
                v_prev = p.hard_reset ? hard_reset(h_prev, sp, p.v_reset)
                                      : soft_reset(h_prev, sp, p.v_threshold);
            } else {
                v_prev = v0 ? load(v0 + i) : rest_potential<S>(p);
            }
            acc += grad_h * charge_grad_tau(p.charge_mode, h, v_prev, v_rest, p.reciprocal_tau);
            grad_x[t * n + i] = from_float<S>(grad_h * dh_dx);
            carry = grad_h * dh_dv;
            h = h_prev;
        }
        grad_v[i] = from_float<S>(carry);
        grad_tau[i] = acc;
    }
}

/* --- host side: device guard, launch, error reporting ------------------------------------ */
/* Errors of a kernel that faulted: the context keeps them, and every later call returns them,
 * whoever launched the kernel. */
bool sticky(cudaError_t e) {
    switch (e) {
    case cudaErrorIllegalAddress: case cudaErrorAssert: case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction: case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace: case cudaErrorInvalidPc: case cudaErrorLaunchFailure:
        return true;
    default:
        return false;
    }
}

int report(cudaError_t e, const char *what, char *err, int err_len) {
    if (e == cudaSuccess) return 0;
    if (err && err_len > 0) {
        const char *text = cudaGetErrorString(e);
        if (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice)
            snprintf(err, err_len, "no CUDA device is usable (%s: %s%s)", what, text,
                     e == cudaErrorInsufficientDriver
                         ? "; CUDA also says this where no NVIDIA driver is installed" : "");
        else if (e == cudaErrorNoKernelImageForDevice)
            snprintf(err, err_len, "%s: %s (spikecore was not compiled for this GPU; rebuild it "
                     "with SPIKECORE_CUDA_ARCHS set to the GPU's compute capability, e.g. "
                     "SPIKECORE_CUDA_ARCHS=75 for compute capability 7.5)", what, text);
        else if (sticky(e))
            snprintf(err, err_len, "%s: %s (a kernel that faulted earlier, spikecore's or "
                     "another library's, makes every later CUDA call report this; run with "
                     "CUDA_LAUNCH_BLOCKING=1 to find it)", what, text);
        else
            snprintf(err, err_len, "%s: %s", what, text);
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
    if (previous != device) {
        const cudaError_t restored = cudaSetDevice(previous);
        if (e == cudaSuccess && restored != cudaSuccess)
            return report(restored, "cudaSetDevice (restoring the caller's device)", err,
                          err_len);
    }
    return report(e, what, err, err_len);
}

/* What the Python layer guarantees, checked again for direct callers of the C API: a bad
 * value would pick a wrong formula, or a kernel would dereference NULL. */
int bad_arguments(const sc_params &p, const char *missing, char *err, int err_len) {
    if (p.charge_mode < spikecore::CHARGE_IF || p.charge_mode > spikecore::CHARGE_LIF_DETACH_INPUT)
        snprintf(err, err_len, "charge_mode must be 0, 1 or 2, got %d", p.charge_mode);
    else if (p.surrogate < 0 || p.surrogate >= spikecore::SG_COUNT)
        snprintf(err, err_len, "surrogate must be 0 to %d, got %d", spikecore::SG_COUNT - 1,
                 p.surrogate);
    else if (missing)
        snprintf(err, err_len, "%s", missing);
    else
        return 0;
    return -1;
}

unsigned int grid_for(long long threads) {
    const long long blocks = (threads + BLOCK - 1) / BLOCK;
    return (unsigned int)(blocks < (1LL << 30) ? blocks : (1LL << 30));
}

/* Grouped accesses need N to be a multiple of the group and every pointer to be aligned to it. */
template <typename S>
bool can_vectorize(long long n, std::initializer_list<const void *> ptrs) {
    constexpr int vec = group_size<S>();
    if (n % vec) return false;
    for (const void *q : ptrs)
        if (reinterpret_cast<uintptr_t>(q) % GROUP_BYTES) return false;
    return true;
}

template <typename S>
int forward_typed(const void *x, const void *v, void *spike, void *v_next, void *h_seq,
                  void *v_seq, void *gs2h, void *gv2h, long long steps, long long n,
                  sc_params p, int device, void *stream, char *err, int err_len) {
    if (n <= 0) return 0;
    const bool seq = steps > 0;   /* (the [T, N] buffers of no step may be NULL) */
    if (int rc = bad_arguments(p, (seq && (!x || !spike)) || !v_next
                                      ? "x, spike and v_next are required"
                                  : !gs2h != !gv2h ? "grad_s_to_h and grad_v_to_h go together"
                                                   : nullptr, err, err_len))
        return rc;
    constexpr int vec = group_size<S>();
    const bool wide = can_vectorize<S>(n, {x, v, spike, v_next, h_seq, v_seq, gs2h, gv2h});
    return on_device(device, [&] {
        const bool teach = v_seq || gs2h;
        auto kernel = wide ? (teach ? forward_kernel<S, vec, true> : forward_kernel<S, vec, false>)
                           : (teach ? forward_kernel<S, 1, true> : forward_kernel<S, 1, false>);
        kernel<<<grid_for(wide ? n / vec : n), BLOCK, 0, (cudaStream_t)stream>>>(
            (const S *)x, (const S *)v, (S *)spike, (S *)v_next, (S *)h_seq, (S *)v_seq,
            (S *)gs2h, (S *)gv2h, steps, n, p);
    }, "spikecore forward kernel", err, err_len);
}

template <typename S>
int backward_typed(const void *gs, const void *gv_next, const void *h_seq, const void *gs2h,
                   const void *gv2h, void *gx, void *gv, long long steps, long long n,
                   sc_params p, int device, void *stream, char *err, int err_len) {
    if (n <= 0) return 0;
    const bool seq = steps > 0;
    if (int rc = bad_arguments(p, (seq && (!gs || !gx)) || !gv
                                      ? "grad_spike, grad_x and grad_v are required"
                                  : seq && !h_seq && (!gs2h || !gv2h)
                                      ? "h_seq, or grad_s_to_h and grad_v_to_h, are required"
                                      : nullptr, err, err_len))
        return rc;
    constexpr int vec = group_size<S>();
    const bool wide = can_vectorize<S>(n, {gs, gv_next, h_seq, gs2h, gv2h, gx, gv});
    using Kernel = decltype(&backward_kernel<S, 1, SG_ANY>);
    static const Kernel per_surrogate[spikecore::SG_COUNT] = {
        backward_kernel<S, vec, 0>, backward_kernel<S, vec, 1>, backward_kernel<S, vec, 2>,
        backward_kernel<S, vec, 3>, backward_kernel<S, vec, 4>, backward_kernel<S, vec, 5>,
        backward_kernel<S, vec, 6>};
    return on_device(device, [&] {
        Kernel kernel = !h_seq ? (wide ? backward_kernel<S, vec, SG_STORED>
                                       : backward_kernel<S, 1, SG_STORED>)
                        : wide ? per_surrogate[p.surrogate]   /* (checked: 0 <= surrogate < 7) */
                               : backward_kernel<S, 1, SG_ANY>;
        kernel<<<grid_for(wide ? n / vec : n), BLOCK, 0, (cudaStream_t)stream>>>(
            (const S *)gs, (const S *)gv_next, (const S *)h_seq, (const S *)gs2h,
            (const S *)gv2h, (S *)gx, (S *)gv, steps, n, p);
    }, "spikecore backward kernel", err, err_len);
}

template <typename S>
int backward_plif_typed(const void *gs, const void *gv_next, const void *h_seq, const void *v0,
                        void *gx, void *gv, float *grad_tau, long long steps, long long n,
                        sc_params p, int device, void *stream, char *err, int err_len) {
    if (n <= 0) return 0;
    if (int rc = bad_arguments(p, (steps > 0 && (!gs || !h_seq || !gx)) || !gv || !grad_tau
                                      ? "grad_spike, h_seq, grad_x, grad_v and grad_tau are "
                                        "required"
                                      : nullptr, err, err_len))
        return rc;
    return on_device(device, [&] {
        backward_plif_kernel<S><<<grid_for(n), BLOCK, 0, (cudaStream_t)stream>>>(
            (const S *)gs, (const S *)gv_next, (const S *)h_seq, (const S *)v0, (S *)gx,
            (S *)gv, grad_tau, steps, n, p);
    }, "spikecore ParametricLIF backward kernel", err, err_len);
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

extern "C" int sc_cuda_backward_plif(int dtype, const void *grad_spike, const void *grad_v_next,
                                     const void *h_seq, const void *v, void *grad_x,
                                     void *grad_v, float *grad_tau, long long steps,
                                     long long neurons, sc_params params, int device,
                                     void *stream, char *err, int err_len) {
    switch (dtype) {
    case SC_FLOAT32:
        return backward_plif_typed<float>(grad_spike, grad_v_next, h_seq, v, grad_x, grad_v,
                                          grad_tau, steps, neurons, params, device, stream, err,
                                          err_len);
    case SC_FLOAT16:
        return backward_plif_typed<__half>(grad_spike, grad_v_next, h_seq, v, grad_x, grad_v,
                                           grad_tau, steps, neurons, params, device, stream, err,
                                           err_len);
    case SC_BFLOAT16:
        return backward_plif_typed<__nv_bfloat16>(grad_spike, grad_v_next, h_seq, v, grad_x,
                                                  grad_v, grad_tau, steps, neurons, params,
                                                  device, stream, err, err_len);
    default:
        return bad_dtype(dtype, err, err_len);
    }
}
