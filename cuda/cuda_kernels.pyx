# cython: language_level=3, embedsignature=True
# distutils: language = c++
"""Thin Cython wrapper over the C API of cuda/spikecore_cuda.h.

Design
------
Python hands over raw device pointers (``tensor.data_ptr()``), the device index and the
current CUDA stream of that device as integers, so this module links against nothing of
PyTorch and one build serves every torch version. Each call releases the GIL around the
launch and turns a non-zero return code into a RuntimeError that carries CUDA's message.
Validation of shapes, dtypes and devices happens before, in spikecore/dispatch.py.
"""
from libc.stdint cimport uintptr_t

cdef extern from "spikecore_cuda.h" nogil:
    ctypedef struct sc_params:
        int charge_mode
        int hard_reset
        int detach_reset
        int surrogate
        float v_threshold
        float v_reset
        float reciprocal_tau
        float alpha
    int sc_cuda_forward(int dtype, const void *x, const void *v, void *spike, void *v_next,
                        void *h_seq, void *v_seq, void *grad_s_to_h, void *grad_v_to_h,
                        long long steps, long long neurons, sc_params params,
                        int device, void *stream, char *err, int err_len)
    int sc_cuda_backward(int dtype, const void *grad_spike, const void *grad_v_next,
                         const void *h_seq, const void *grad_s_to_h, const void *grad_v_to_h,
                         void *grad_x, void *grad_v, long long steps, long long neurons,
                         sc_params params, int device, void *stream, char *err, int err_len)
    int sc_cuda_backward_plif(int dtype, const void *grad_spike, const void *grad_v_next,
                              const void *h_seq, const void *v, void *grad_x, void *grad_v,
                              float *grad_tau, long long steps, long long neurons,
                              sc_params params, int device, void *stream, char *err, int err_len)
    int sc_cuda_device_count(int *count, char *err, int err_len)

cdef enum:
    ERR_LEN = 512


cdef sc_params _params(int mode, bint hard, bint detach_reset, int sg_index, double v_threshold,
                       double v_reset, double reciprocal_tau, double alpha):
    cdef sc_params p
    p.charge_mode = mode
    p.hard_reset = hard
    p.detach_reset = detach_reset
    p.surrogate = sg_index
    p.v_threshold = <float>v_threshold
    p.v_reset = <float>v_reset
    p.reciprocal_tau = <float>reciprocal_tau
    p.alpha = <float>alpha
    return p


cdef _check(int rc, char *err):
    if rc != 0:
        raise RuntimeError("CUDA error in spikecore: " + err.decode("utf-8", "replace"))


def device_count():
    """(count, message): the number of CUDA devices and, when zero, why."""
    cdef int count = 0
    cdef char err[ERR_LEN]
    err[0] = 0
    rc = sc_cuda_device_count(&count, err, ERR_LEN)
    return count, (err.decode("utf-8", "replace") if rc != 0 else "")


def forward(int dtype, uintptr_t x, uintptr_t v, uintptr_t spike, uintptr_t v_next,
            uintptr_t h_seq, uintptr_t v_seq, uintptr_t grad_s_to_h, uintptr_t grad_v_to_h,
            long long steps, long long neurons, int mode, bint hard, bint detach_reset,
            int sg_index, double v_threshold, double v_reset, double reciprocal_tau,
            double alpha, int device, uintptr_t stream):
    """Launch the forward kernel; pointer 0 means an output that is not wanted, or for ``v``
    that every neuron starts at rest."""
    cdef sc_params p = _params(mode, hard, detach_reset, sg_index, v_threshold, v_reset,
                               reciprocal_tau, alpha)
    cdef char err[ERR_LEN]
    cdef int rc
    err[0] = 0
    with nogil:
        rc = sc_cuda_forward(dtype, <const void *>x, <const void *>v, <void *>spike,
                             <void *>v_next, <void *>h_seq, <void *>v_seq, <void *>grad_s_to_h,
                             <void *>grad_v_to_h, steps, neurons, p, device, <void *>stream,
                             err, ERR_LEN)
    _check(rc, err)


def backward(int dtype, uintptr_t grad_spike, uintptr_t grad_v_next, uintptr_t h_seq,
             uintptr_t grad_s_to_h, uintptr_t grad_v_to_h, uintptr_t grad_x, uintptr_t grad_v,
             long long steps, long long neurons, int mode, bint hard, bint detach_reset,
             int sg_index, double v_threshold, double v_reset, double reciprocal_tau,
             double alpha, int device, uintptr_t stream):
    """Launch the BPTT kernel (from h_seq when non-zero, else from the stored gradients);
    grad_v_next 0 means zero."""
    cdef sc_params p = _params(mode, hard, detach_reset, sg_index, v_threshold, v_reset,
                               reciprocal_tau, alpha)
    cdef char err[ERR_LEN]
    cdef int rc
    err[0] = 0
    with nogil:
        rc = sc_cuda_backward(dtype, <const void *>grad_spike, <const void *>grad_v_next,
                              <const void *>h_seq, <const void *>grad_s_to_h,
                              <const void *>grad_v_to_h, <void *>grad_x, <void *>grad_v,
                              steps, neurons, p, device, <void *>stream, err, ERR_LEN)
    _check(rc, err)


def backward_plif(int dtype, uintptr_t grad_spike, uintptr_t grad_v_next, uintptr_t h_seq,
                  uintptr_t v, uintptr_t grad_x, uintptr_t grad_v, uintptr_t grad_tau,
                  long long steps, long long neurons, int mode, bint hard, bint detach_reset,
                  int sg_index, double v_threshold, double v_reset, double reciprocal_tau,
                  double alpha, int device, uintptr_t stream):
    """Launch the ParametricLIF BPTT kernel; grad_tau is a float32 [N] buffer; v 0 means at
    rest, grad_v_next 0 means zero."""
    cdef sc_params p = _params(mode, hard, detach_reset, sg_index, v_threshold, v_reset,
                               reciprocal_tau, alpha)
    cdef char err[ERR_LEN]
    cdef int rc
    err[0] = 0
    with nogil:
        rc = sc_cuda_backward_plif(dtype, <const void *>grad_spike, <const void *>grad_v_next,
                                   <const void *>h_seq, <const void *>v, <void *>grad_x,
                                   <void *>grad_v, <float *>grad_tau, steps, neurons, p, device,
                                   <void *>stream, err, ERR_LEN)
    _check(rc, err)
