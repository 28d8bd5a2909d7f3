/*
 * spikecore_cuda.h -- the plain C contract between the CUDA kernels and Python.
 *
 * Python (through the Cython wrapper cuda/cuda_kernels.pyx) passes raw device pointers taken
 * from torch tensors (data_ptr()), the tensors' device index and the current CUDA stream of
 * that device. All buffers are C-contiguous, time-major [T, N] (or [N] for the state), of the
 * dtype named by `dtype`. Optional outputs are NULL when not wanted.
 *
 * Every function returns 0 on success, or a CUDA error code with a message copied into
 * `err` (at most `err_len` bytes, NUL-terminated), or -1 with a message for arguments it
 * refuses: an unknown dtype, charge mode or surrogate, or a required pointer that is NULL
 * (with neurons > 0; the [T, N] buffers may be NULL when steps is 0). Nothing here throws or
 * aborts.
 */
#ifndef SPIKECORE_CUDA_H
#define SPIKECORE_CUDA_H

#ifdef __cplusplus
extern "C" {
#endif

/* Storage dtypes; arithmetic is float32 inside the kernels for all of them. */
enum sc_dtype { SC_FLOAT32 = 0, SC_FLOAT16 = 1, SC_BFLOAT16 = 2 };

/* Scalar parameters of a neuron layer (see include/spikecore_math.h). */
typedef struct sc_params {
    int charge_mode;      /* spikecore::ChargeMode */
    int hard_reset;       /* 1: V = S*V_r + (1-S)*H; 0: V = H - S*theta */
    int detach_reset;
    int surrogate;        /* spikecore::SurrogateIndex */
    float v_threshold;
    float v_reset;        /* V_r; pass 0 under soft reset */
    float reciprocal_tau;
    float alpha;
} sc_params;

/* T steps of charge/fire/reset. x, spike, v_next required; v NULL: every neuron starts at rest
 * (V_reset, 0 under soft reset, rounded to the dtype); h_seq, v_seq, grad_s_to_h and
 * grad_v_to_h optional (NULL). grad_s_to_h and grad_v_to_h are given together or not at all. */
int sc_cuda_forward(int dtype, const void *x, const void *v, void *spike, void *v_next,
                    void *h_seq, void *v_seq, void *grad_s_to_h, void *grad_v_to_h,
                    long long steps, long long neurons, sc_params params,
                    int device, void *stream, char *err, int err_len);

/* BPTT through T steps: from h_seq (recompute route) when it is not NULL, else from
 * grad_s_to_h and grad_v_to_h (stored route). grad_v_next NULL: zero. Writes grad_x [T, N] and
 * grad_v [N]. */
int sc_cuda_backward(int dtype, const void *grad_spike, const void *grad_v_next,
                     const void *h_seq, const void *grad_s_to_h, const void *grad_v_to_h,
                     void *grad_x, void *grad_v, long long steps, long long neurons,
                     sc_params params, int device, void *stream, char *err, int err_len);

/* BPTT from h_seq for a learnable 1/tau (ParametricLIF): like sc_cuda_backward, and also writes
 * grad_tau[i] = sum over t of dL/dH[t] * dH[t]/d(1/tau) for each neuron i (float32 [N]).
 * v is V[-1], the potential before the first step (NULL: at rest); grad_v_next NULL: zero. */
int sc_cuda_backward_plif(int dtype, const void *grad_spike, const void *grad_v_next,
                          const void *h_seq, const void *v, void *grad_x, void *grad_v,
                          float *grad_tau, long long steps, long long neurons, sc_params params,
                          int device, void *stream, char *err, int err_len);

/* Number of CUDA devices visible to the runtime (0 with an error message when none). */
int sc_cuda_device_count(int *count, char *err, int err_len);

#ifdef __cplusplus
}
#endif

#endif /* SPIKECORE_CUDA_H */
