# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
# distutils: language = c++
"""Fused CPU kernels for IF/LIF neurons: forward over time and backpropagation through time.

Design
------
Every kernel sees time-major, C-contiguous 2-D buffers ``[T, N]`` (a single step is ``T = 1``).
Neurons are independent and time is a recurrence, so the work is split over *neurons*: the
neuron axis is cut into contiguous blocks, ``prange`` hands the blocks to OpenMP threads with a
static schedule, and inside a block time runs outside and neurons inside. The inner loop thus
streams a contiguous row segment of every buffer (vectorisable, prefetch-friendly), and the
recurrent state of a block (the potential in the forward pass, the carried dL/dV in the
backward pass) lives in the output buffer ``v_out`` / ``grad_v`` itself, which doubles as the
per-neuron state array. No element ever depends on how the blocks are assigned to threads, so
results are bit-identical for any thread count.

The scalar formulas (charge, fire, reset, surrogate derivatives, dV/dH) come from
``include/spikecore_math.h``, the header the CUDA kernels include too.

Buffers are typed memoryviews; arguments marked ``# IN`` are read, ``# OUT`` are written. An
optional output that the caller does not want is passed as a ``[0, N]`` buffer and is then
neither read nor written. The Python layer (``spikecore/backends.py``) validates shapes, dtypes
and contiguity before it calls in here; these functions trust their arguments.
"""

from cython.parallel cimport prange

cdef extern from "spikecore_math.h" namespace "spikecore" nogil:
    float charge(int mode, float x, float v, float v_reset, float reciprocal_tau)
    double charge(int mode, double x, double v, double v_reset, double reciprocal_tau)
    float charge_grad_x(int mode, float reciprocal_tau)
    double charge_grad_x(int mode, double reciprocal_tau)
    float charge_grad_v(int mode, float reciprocal_tau)
    double charge_grad_v(int mode, double reciprocal_tau)
    float fire(float h, float v_threshold)
    double fire(double h, double v_threshold)
    float hard_reset(float h, float s, float v_reset)
    double hard_reset(double h, double s, double v_reset)
    float soft_reset(float h, float s, float v_threshold)
    double soft_reset(double h, double s, double v_threshold)
    float surrogate_grad(int index, float x, float alpha)
    double surrogate_grad(int index, double x, double alpha)
    float reset_grad(int hard, int detach_reset, float h, float s, float sg,
                     float v_threshold, float v_reset)
    double reset_grad(int hard, int detach_reset, double h, double s, double sg,
                      double v_threshold, double v_reset)

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SPIKECORE_OPENMP 1
    #else
    #define SPIKECORE_OPENMP 0
    #endif
    """
    const int SPIKECORE_OPENMP

ctypedef fused real:
    float
    double

# Blocks are at least this many neurons (a 4 KiB page of fp32 and more), so that every row
# segment a thread streams is long enough for the hardware prefetcher.
cdef enum:
    MIN_BLOCK = 4096


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return SPIKECORE_OPENMP == 1


cdef inline Py_ssize_t _block_size(Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t per_thread = (n + n_threads - 1) // n_threads
    if per_thread < MIN_BLOCK:
        per_thread = MIN_BLOCK
    return (per_thread + 15) // 16 * 16


cdef void _forward_rows(const real[:, ::1] x, const real[::1] v0,
                        real[:, ::1] spike, real[::1] v_out,
                        real[:, ::1] h_seq, real[:, ::1] v_seq,
                        real[:, ::1] grad_s_to_h, real[:, ::1] grad_v_to_h,
                        int mode, int hard, int detach_reset, int sg_index,
                        real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                        Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t, i
    cdef Py_ssize_t n_steps = x.shape[0]
    cdef bint save_h = h_seq.shape[0] != 0
    cdef bint save_v = v_seq.shape[0] != 0
    cdef bint with_grad = grad_s_to_h.shape[0] != 0
    # Under soft reset V_r enters the charge as 0.
    cdef real v_rest = v_reset if hard else <real>0
    cdef real h, s, sg
    for i in range(lo, hi):
        v_out[i] = v0[i]
    for t in range(n_steps):
        for i in range(lo, hi):
            h = charge(mode, x[t, i], v_out[i], v_rest, reciprocal_tau)
            s = fire(h, v_threshold)
            spike[t, i] = s
            if save_h:
                h_seq[t, i] = h
            if with_grad:
                sg = surrogate_grad(sg_index, h - v_threshold, alpha)
                grad_s_to_h[t, i] = sg
                grad_v_to_h[t, i] = reset_grad(hard, detach_reset, h, s, sg, v_threshold, v_reset)
            if hard:
                v_out[i] = hard_reset(h, s, v_reset)
            else:
                v_out[i] = soft_reset(h, s, v_threshold)
            if save_v:
                v_seq[t, i] = v_out[i]


def forward(const real[:, ::1] x,           # IN  [T, N] input current
            const real[::1] v,              # IN  [N] potential before the first step
            real[:, ::1] spike,             # OUT [T, N] spikes
            real[::1] v_next,               # OUT [N] potential after the last step
            real[:, ::1] h_seq,             # OUT [T, N] charged potential H, or [0, N]
            real[:, ::1] v_seq,             # OUT [T, N] potential after reset, or [0, N]
            real[:, ::1] grad_s_to_h,       # OUT [T, N] dS/dH, or [0, N]
            real[:, ::1] grad_v_to_h,       # OUT [T, N] dV/dH, or [0, N] (iff grad_s_to_h is)
            int mode, bint hard, bint detach_reset, int sg_index,
            double v_threshold, double v_reset, double reciprocal_tau, double alpha,
            int n_threads):
    """Run ``T`` steps of charge, fire and reset; optionally keep H, V and the local gradients."""
    cdef Py_ssize_t n = x.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t b, lo, hi
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        _forward_rows(x, v, spike, v_next, h_seq, v_seq, grad_s_to_h, grad_v_to_h,
                      mode, hard, detach_reset, sg_index,
                      <real>v_threshold, <real>v_reset, <real>reciprocal_tau, <real>alpha,
                      lo, hi)


cdef void _backward_rows(const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                         const real[:, ::1] h_seq,
                         const real[:, ::1] grad_s_to_h, const real[:, ::1] grad_v_to_h,
                         real[:, ::1] grad_x, real[::1] grad_v,
                         int mode, int hard, int detach_reset, int sg_index,
                         real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                         Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    cdef Py_ssize_t t, i
    cdef Py_ssize_t n_steps = grad_spike.shape[0]
    cdef bint recompute = h_seq.shape[0] != 0
    cdef real dh_dx = charge_grad_x(mode, reciprocal_tau)
    cdef real dh_dv = charge_grad_v(mode, reciprocal_tau)
    cdef real h, s, sg, dv_dh, grad_h
    for i in range(lo, hi):
        grad_v[i] = grad_v_last[i]
    for t in range(n_steps - 1, -1, -1):
        for i in range(lo, hi):
            if recompute:
                h = h_seq[t, i]
                s = fire(h, v_threshold)
                sg = surrogate_grad(sg_index, h - v_threshold, alpha)
                dv_dh = reset_grad(hard, detach_reset, h, s, sg, v_threshold, v_reset)
            else:
                sg = grad_s_to_h[t, i]
                dv_dh = grad_v_to_h[t, i]
            grad_h = grad_spike[t, i] * sg + grad_v[i] * dv_dh
            grad_x[t, i] = grad_h * dh_dx
            grad_v[i] = grad_h * dh_dv


def backward(const real[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t]
             const real[::1] grad_v_next,     # IN  [N] dL/dV[T-1]
             const real[:, ::1] h_seq,        # IN  [T, N] saved H (recompute route), or [0, N]
             const real[:, ::1] grad_s_to_h,  # IN  [T, N] dS/dH (stored route), or [0, N]
             const real[:, ::1] grad_v_to_h,  # IN  [T, N] dV/dH (stored route), or [0, N]
             real[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
             real[::1] grad_v,                # OUT [N] dL/dV[-1]
             int mode, bint hard, bint detach_reset, int sg_index,
             double v_threshold, double v_reset, double reciprocal_tau, double alpha,
             int n_threads):
    """Backpropagate through ``T`` steps, from saved H (recomputing S and the surrogate) or from
    the stored local gradients dS/dH and dV/dH."""
    cdef Py_ssize_t n = grad_spike.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t b, lo, hi
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        _backward_rows(grad_spike, grad_v_next, h_seq, grad_s_to_h, grad_v_to_h, grad_x, grad_v,
                       mode, hard, detach_reset, sg_index,
                       <real>v_threshold, <real>v_reset, <real>reciprocal_tau, <real>alpha,
                       lo, hi)
