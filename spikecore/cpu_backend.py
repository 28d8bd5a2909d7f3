"""The CPU backend: the Cython/OpenMP kernels of pyx/cpu_kernels.pyx, called on views of the
tensors' memory.

Registered with :mod:`spikecore.backends` as ``'cpu'``, the default for CPU tensors. float32
and float64 are native; :mod:`spikecore.dispatch` runs float16 and bfloat16 inputs in float32,
by casts on the general route and through the kernels' 16-bit entry points on a plan
(``_HalfPlan``).
An absent state (a fresh node) or incoming dL/dV[T-1] reaches the kernels as an empty view,
which they read as at rest or zero, so no tensor is filled for it. Calls below
:data:`PARALLEL_MIN_ELEMENTS` neuron-steps run on one thread.

``_CPUPlan`` is the per-node fast path: the kernels' specialisations, absent-input views
and scalar arguments are picked once, so that a training step only allocates its outputs and
runs the kernel.
"""
import functools
import math

import torch

from . import backends
from .backends import Backend, CastPlan, Plan, _contiguous

__all__ = ["CPUBackend", "PARALLEL_MIN_ELEMENTS"]

#: Below this many neuron-steps (about 0.2 ms of work for one core) a call runs on one thread:
#: a parallel region costs microseconds when the cores are free, and far more when other
#: processes occupy them (a thread that is not scheduled holds up the region's barrier).
PARALLEL_MIN_ELEMENTS = 1 << 18
#: a training call of a node saves its input instead of H, and its backward recomputes H, when
#: one [T, N] tensor of the call is smaller than this many bytes (see ``_CPUPlan.recompute``)
RECOMPUTE_MAX_BYTES = 2 << 20

# the Cython names of the fused types' members, for picking a kernel's specialisation
_CYTHON_TYPES = {torch.float32: "float", torch.float64: "double", torch.bfloat16: "BF16Bits"}


class CPUBackend(Backend):
    """The Cython/OpenMP kernels of pyx/cpu_kernels.pyx."""

    name = "cpu"
    device_type = "cpu"
    native_dtypes = (torch.float32, torch.float64)
    h_dtypes = (torch.bfloat16,)
    reads_memory = True

    def __init__(self):
        try:
            from . import _cpu_kernels
        except ImportError as exc:  # not compiled
            self._kernels, self._error = None, (
                f"the CPU backend of spikecore is not built ({exc}); build it with "
                "`pip install -e .` (or `python setup.py build_ext --inplace`) from the source "
                "tree, or use backend='reference'")
        else:
            self._kernels, self._error = _cpu_kernels, None
            self._buffer = _cpu_kernels.TensorBuffer
            # 16-bit tensors (a kept H, _HalfPlan's tensors) are viewed as their bit patterns
            self._kinds = {torch.float32: _cpu_kernels.FLOAT32,
                           torch.float64: _cpu_kernels.FLOAT64,
                           torch.bfloat16: _cpu_kernels.BF16_BITS,
                           torch.float16: _cpu_kernels.BF16_BITS}
            self._entries = {}

    def load_error(self):
        return self._error

    @staticmethod
    def _threads(elements):
        return 1 if elements < PARALLEL_MIN_ELEMENTS else max(1, torch.get_num_threads())

    def _view(self, t, shape):
        """The kernels' view of the C-contiguous ``t`` (which it keeps alive): ``shape`` is
        ``(T, N)`` for a sequence or ``(N,)`` for a state."""
        rows, cols = shape if len(shape) == 2 else (-1, shape[0])
        return self._buffer(t.data_ptr(), rows, cols, self._kinds[t.dtype], t)

    def _entry(self, name, dtype, h_dtype=None):
        """The kernel ``name`` specialised for buffers of ``dtype`` and, for the kernels that
        take one, a saved H of ``h_dtype``.

        Picking the specialisation once here skips the per-call dispatch of Cython's fused
        function, which reads the format of every buffer argument (about 0.5 us a call)."""
        key = (name, dtype, h_dtype)
        entry = self._entries.get(key)
        if entry is None:
            types = (_CYTHON_TYPES[dtype] if h_dtype is None
                     else (_CYTHON_TYPES[dtype], _CYTHON_TYPES[h_dtype]))
            entry = self._entries[key] = getattr(self._kernels, name)[types]
        return entry

    @functools.lru_cache(maxsize=64)
    def _absent(self, dtype, n):
        """Empty views (``[0, N]`` for a sequence, ``[0]`` for a state) standing for an output
        that is not wanted, or a state input that is not given (see the kernels)."""
        kind = self._kinds[dtype]
        return self._buffer(0, 0, n, kind), self._buffer(0, -1, 0, kind)

    def forward(self, x, v, cfg, steps, save_h=False, save_v=False, with_grad=False,
                h_dtype=None, state_shape=None):
        outs = self.new_outputs(x, v, save_h, save_v, with_grad, h_dtype, state_shape)
        spike, v_next, h_seq, v_seq, gs2h, gv2h = outs
        n = v_next.numel()
        seq, row = (steps, n), (n,)
        (no_seq, no_state), view = self._absent(x.dtype, n), self._view
        kernel = self._entry("forward", x.dtype, x.dtype if h_seq is None else h_seq.dtype)
        kernel(
            view(x, seq), no_state if v is None else view(v, row), view(spike, seq),
            view(v_next, row), no_seq if h_seq is None else view(h_seq, seq),
            no_seq if v_seq is None else view(v_seq, seq),
            no_seq if gs2h is None else view(gs2h, seq),
            no_seq if gv2h is None else view(gv2h, seq), *cfg.kernel_args, self._threads(steps * n))
        return outs

    def plan(self, cfg, x, v_given, steps, state_shape, h_dtype=None):
        return _CPUPlan(self, cfg, x, v_given, steps, state_shape, h_dtype)

    def cast_plan(self, inner, cfg, x, v_given, steps, state_shape, h_dtype=None):
        if h_dtype is None and x.dtype in _HALF_CODES:
            return _HalfPlan(inner, cfg, x, v_given, steps, state_shape, h_dtype)
        return super().cast_plan(inner, cfg, x, v_given, steps, state_shape, h_dtype)

    def _gradient_outputs(self, grad_spike, grad_v_next, state_shape):
        """Fresh ``(grad_x, grad_v)`` and the kernels' ``grad_v_next`` (given or absent)."""
        grad_x, grad_v = self.new_gradients(grad_spike, grad_v_next, state_shape)
        if grad_v_next is None:
            return grad_x, grad_v, self._absent(grad_spike.dtype, grad_v.numel())[1]
        return grad_x, grad_v, self._view(grad_v_next, (grad_v.numel(),))

    def backward(self, grad_spike, grad_v_next, cfg, steps, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None, state_shape=None):
        grad_x, grad_v, carry = self._gradient_outputs(grad_spike, grad_v_next, state_shape)
        n = grad_v.numel()
        seq, row = (steps, n), (n,)
        no_seq, view = self._absent(grad_spike.dtype, n)[0], self._view
        kernel = self._entry("backward", grad_spike.dtype,
                             grad_spike.dtype if h_seq is None else h_seq.dtype)
        kernel(
            view(grad_spike, seq), carry, no_seq if h_seq is None else view(h_seq, seq),
            no_seq if grad_s_to_h is None else view(grad_s_to_h, seq),
            no_seq if grad_v_to_h is None else view(grad_v_to_h, seq),
            view(grad_x, seq), view(grad_v, row), *cfg.kernel_args, self._threads(steps * n))
        return grad_x, grad_v

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg, steps,
                      state_shape=None):
        # the plan's backward_plif, with this call's choices made on the spot
        if state_shape is None:
            state_shape = tuple(grad_v_next.shape)
        return self.plan(cfg, grad_spike, False, steps, state_shape).backward_plif(
            grad_spike, grad_v_next, h_seq, v_init, None)


class _CPUPlan(Plan):
    """The CPU backend's plan: the kernels' specialisations, views and scalar arguments are
    picked once, so a call allocates its outputs and runs the kernel.

    Its methods do what :class:`CPUBackend`'s do for the calls a node makes (the training and
    inference forward, BPTT from H or from the input, the learnable-τ backward), with those
    choices already made; the backend's methods serve every option of the API (``v_seq``, the
    teaching path's local gradients) and pick per call."""

    __slots__ = ("_train", "_infer", "_backward", "_backward_plif", "_from_input",
                 "_plif_from_input", "_kind", "_n", "_absent_seq", "_absent_state", "_args",
                 "recompute")

    def __init__(self, backend, cfg, x, v_given, steps, state_shape, h_dtype):
        super().__init__(backend, cfg, x, v_given, steps, state_shape, h_dtype)
        dtype = x.dtype
        self._train = backend._entry("forward", dtype, h_dtype or dtype)
        self._infer = backend._entry("forward", dtype, dtype)
        self._backward = backend._entry("backward", dtype, h_dtype or dtype)
        self._backward_plif = backend._entry("backward_plif", dtype)   # (H in the compute dtype)
        self._kind, self._n = backend._kinds[dtype], math.prod(state_shape)
        self._absent_seq, self._absent_state = backend._absent(dtype, self._n)
        self._args = cfg.kernel_args
        self._from_input = backend._entry("backward_from_input", dtype)
        self._plif_from_input = backend._entry("backward_plif_from_input", dtype)
        #: a training call saves its input and the backward recomputes H (bit-identical), for
        #: [T, N] tensors below RECOMPUTE_MAX_BYTES: the forward then writes no H, which keeps a
        #: small layer's step in cache; larger ones save H (the row-streaming kernels are
        #: faster there than the chunk-wise recomputation). The same size as the kernels'
        #: default streaming threshold, but a separate setting.
        self.recompute = (h_dtype is None and
                          x.numel() * x.element_size() < RECOMPUTE_MAX_BYTES)

    def _buffers(self, seq, state):
        """``[T, N]`` views of the tensors in ``seq`` and ``[N]`` views of those in ``state``
        (``None``: the absent state input)."""
        buffer, steps, n, kind = self.backend._buffer, self.steps, self._n, self._kind
        out = []   # (plain loops: a comprehension is a function call of its own)
        for t in seq:
            out.append(buffer(t.data_ptr(), steps, n, kind, t))
        for t in state:
            out.append(self._absent_state if t is None else buffer(t.data_ptr(), -1, n, kind, t))
        return out

    def _scalars(self, reciprocal_tau):
        """The kernels' scalar arguments, with 1/τ replaced when given."""
        if reciprocal_tau is None:
            return self._args
        return self.cfg.kernel_args_with_k(reciprocal_tau)

    # (the per-call methods below are written out rather than shared: each helper call costs
    # a node a few tenths of a microsecond per step)
    def forward(self, x, v, save_h=True, reciprocal_tau=None):
        args = self._args if reciprocal_tau is None else self._scalars(reciprocal_tau)
        return self._forward(x.contiguous(), None if v is None else v.contiguous(), save_h, args)

    def _forward(self, x, v, save_h, args):
        """:meth:`forward` on contiguous ``x`` and ``v`` with the kernels' scalar ``args``."""
        spike = torch.empty_like(x)
        v_next = x.new_empty(self.state_shape) if v is None else torch.empty_like(v)
        h_seq = torch.empty_like(x, dtype=self.h_dtype) if save_h else None
        bx, bs, v0, bv = self._buffers((x, spike), (v, v_next))
        no_seq = self._absent_seq
        bh = no_seq if h_seq is None else self.backend._view(h_seq, (self.steps, self._n))
        (self._train if save_h else self._infer)(bx, v0, bs, bv, bh, no_seq, no_seq, no_seq, *args,
                                                 CPUBackend._threads(x.numel()))
        return spike, v_next, h_seq

    def backward(self, grad_spike, grad_v_next, h_seq):
        grad_spike = grad_spike.contiguous()
        if grad_v_next is not None:
            grad_v_next = grad_v_next.contiguous()
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(self.state_shape)
        bg, bgx, carry, bgv = self._buffers((grad_spike, grad_x), (grad_v_next, grad_v))
        no_seq = self._absent_seq
        self._backward(bg, carry, self.backend._view(h_seq, (self.steps, self._n)), no_seq,
                       no_seq, bgx, bgv, *self._args, CPUBackend._threads(grad_x.numel()))
        return grad_x, grad_v

    def train_forward(self, x, v):
        x = x.contiguous()
        if v is not None:
            v = v.contiguous()
        spike, v_next, h_seq = self._forward(x, v, not self.recompute, self._args)
        if h_seq is not None:
            return spike, v_next, (h_seq,)
        return spike, v_next, ((x,) if v is None else (x, v))

    def train_backward(self, grad_spike, grad_v_next, saved):
        if not self.recompute:
            return self.backward(grad_spike, grad_v_next, saved[0])
        x, v = saved[0], (saved[1] if len(saved) > 1 else None)
        grad_spike = grad_spike.contiguous()
        if grad_v_next is not None:
            grad_v_next = grad_v_next.contiguous()
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(self.state_shape)
        bg, bx, bgx, carry, v0, bgv = self._buffers((grad_spike, x, grad_x),
                                                    (grad_v_next, v, grad_v))
        self._from_input(bg, carry, bx, v0, bgx, bgv, *self._args,
                         CPUBackend._threads(grad_x.numel()))
        return grad_x, grad_v

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, reciprocal_tau):
        return self._run_plif(self._backward_plif, grad_spike, grad_v_next, h_seq, v_init,
                              reciprocal_tau)

    def train_forward_plif(self, x, v, reciprocal_tau):
        x = x.contiguous()
        if v is not None:
            v = v.contiguous()
        spike, v_next, h_seq = self._forward(x, v, not self.recompute,
                                             self._scalars(reciprocal_tau))
        return spike, v_next, (x if h_seq is None else h_seq, v)

    def train_backward_plif(self, grad_spike, grad_v_next, saved, reciprocal_tau):
        kernel = self._plif_from_input if self.recompute else self._backward_plif
        return self._run_plif(kernel, grad_spike, grad_v_next, saved[0], saved[1],
                              reciprocal_tau)

    def _run_plif(self, kernel, grad_spike, grad_v_next, seq, v_init, reciprocal_tau):
        """The learnable-1/τ backward ``kernel``, from the saved H or (backward_plif_from_input)
        the forward's input ``seq``: ``(grad_x, grad_v, dL/d(1/τ))``."""
        grad_spike = grad_spike.contiguous()
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(self.state_shape)
        bg, bseq, bgx, carry, v0, bgv = self._buffers(
            (grad_spike, seq, grad_x), (_contiguous(grad_v_next), _contiguous(v_init), grad_v))
        sums = torch.empty(self._n, dtype=torch.float64)   # per-neuron sums (scratch)
        total = kernel(bg, carry, bseq, v0, bgx, bgv, self.backend._view(sums, (self._n,)),
                       *self._scalars(reciprocal_tau), CPUBackend._threads(grad_x.numel()))
        return grad_x, grad_v, torch.scalar_tensor(total, dtype=torch.float64)


#: the 16-bit dtypes the kernels read and write as bit patterns: dtype -> is it float16
_HALF_CODES = {torch.float16: True, torch.bfloat16: False}


class _HalfPlan(CastPlan):
    """The CPU plan of float16/bfloat16 calls: the kernels convert blocks of neurons to float32
    in cache (``forward_half``, ``backward_half``), so no float32 copy of a whole tensor is
    made; H is saved in float32. The bits are those of :class:`CastPlan`, which it still is for
    what these kernels do not cover: the learnable-1/τ backward, and the training calls of a
    small layer, which save the input (``recompute``; in cache the casts cost little)."""

    __slots__ = ("_forward_half", "_backward_half", "_code", "_seq", "_row", "_no_seq",
                 "_no_state")

    def __init__(self, inner, cfg, x, v_given, steps, state_shape, h_dtype):
        super().__init__(inner, cfg, x, v_given, steps, state_shape, h_dtype)
        kernels = inner.backend._kernels
        self._forward_half, self._backward_half = kernels.forward_half, kernels.backward_half
        n = math.prod(state_shape)
        self._code, self._seq, self._row = _HALF_CODES[x.dtype], (steps, n), (n,)
        self._no_seq = inner.backend._absent(torch.float32, n)[0]   # no H kept (float32)
        self._no_state = inner.backend._absent(x.dtype, n)[1]       # no state, no carry

    def forward(self, x, v, save_h=True, reciprocal_tau=None):
        if reciprocal_tau is not None:
            return super().forward(x, v, save_h, reciprocal_tau)
        x, view, seq, row = x.contiguous(), self.backend._view, self._seq, self._row
        spike, v_next = torch.empty_like(x), x.new_empty(self.state_shape)
        h_seq = torch.empty(x.shape, dtype=torch.float32) if save_h else None
        self._forward_half(
            view(x, seq), self._no_state if v is None else view(v.contiguous(), row),
            view(spike, seq), view(v_next, row),
            self._no_seq if h_seq is None else view(h_seq, seq), self._code,
            *self.cfg.kernel_args, CPUBackend._threads(x.numel()))
        return spike, v_next, h_seq

    def backward(self, grad_spike, grad_v_next, h_seq):
        if h_seq.dtype != torch.float32:
            return super().backward(grad_spike, grad_v_next, h_seq)
        grad_spike, view = grad_spike.contiguous(), self.backend._view
        seq, row = self._seq, self._row
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(self.state_shape)
        self._backward_half(
            view(grad_spike, seq),
            self._no_state if grad_v_next is None else view(grad_v_next.contiguous(), row),
            view(h_seq, seq), view(grad_x, seq), view(grad_v, row), self._code,
            *self.cfg.kernel_args, CPUBackend._threads(grad_x.numel()))
        return grad_x, grad_v

    def train_forward(self, x, v):
        if self.recompute:
            return super().train_forward(x, v)
        spike, v_next, h_seq = self.forward(x, v)
        return spike, v_next, (h_seq,)

    def train_backward(self, grad_spike, grad_v_next, saved):
        if self.recompute:
            return super().train_backward(grad_spike, grad_v_next, saved)
        return self.backward(grad_spike, grad_v_next, saved[0])


backends.register(CPUBackend())
