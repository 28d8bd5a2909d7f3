"""The backend registry: one place that maps a name or a device to the code that runs a kernel.

A backend implements two operations on C-contiguous tensors of a dtype it supports natively
(the caller, :mod:`spikecore.dispatch`, has already validated, made contiguous and, where
needed, up-cast everything). A sequence arrives in the caller's own shape with ``steps`` given:
``T·N`` elements, read as time-major ``[T, N]`` (a single step may be ``[*]``, with ``T = 1``);
the state ``v`` has ``N`` elements. Outputs are shaped like the input they correspond to.
The state inputs may be ``None``, with ``state_shape`` then giving the shape of the state: ``v``
and the learnable-1/τ backward's ``v_init`` (every neuron starts at rest, ``cfg.v_rest``: a fresh
node) and ``grad_v_next`` (zero: the last potential does not reach the loss). The CPU kernels
take that as it is; other backends fill a tensor.

``forward(x, v, cfg, steps, save_h, save_v, with_grad, h_dtype, state_shape)``
    ``T`` steps of charge/fire/reset: ``(spike, v_next, h_seq, v_seq, gs2h, gv2h)``, the
    optional outputs ``None`` unless asked for.
``backward(grad_spike, grad_v_next, cfg, steps, h_seq, grad_s_to_h, grad_v_to_h, state_shape)``
    BPTT, either from saved H (``h_seq`` given) or from stored local gradients:
    ``(grad_x, grad_v)``.

Backends: ``cpu`` (Cython/OpenMP), ``cuda`` (nvcc-built module, registered by
:mod:`spikecore.cuda_backend`) and ``reference`` (plain PyTorch, any device). A call uses the
backend of its tensors' device unless one is named; a backend that is not built is never
swapped for another: asking for it raises an error that says how to build it.
"""
import functools
import math
from typing import Dict, Optional

import torch

from . import reference

__all__ = ["Backend", "Plan", "register", "get", "for_device", "available", "names"]

# Below this many neuron-steps (about 0.2 ms of work for one core) a CPU call runs on one
# thread: a parallel region costs microseconds when the cores are free, and far more when other
# processes occupy them (a thread that is not scheduled holds up the region's barrier).
PARALLEL_MIN_ELEMENTS = 1 << 18

#: True for the wrapped tensors of a torch.func transform (vmap, grad, ...), whose memory native
#: kernels cannot read (see Backend.reads_memory)
transform_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor",
                            lambda t: False)


class Plan:
    """One validated kind of call, run again and again without its checks: a backend, a config,
    inputs of one shape, dtype (native to the backend) and device, and the state either given
    (a tensor of the state shape) or fresh (``None``, at rest). :func:`spikecore.dispatch.plan`
    checks the first call and makes one; :meth:`accepts` is the cheap test for each later call.
    Nodes keep their plan, which removes the checks from every training step.

    ``forward(x, v, save_h, reciprocal_tau)`` is :meth:`Backend.forward` with only H saved
    (``save_h=False``: the inference forward) and returns ``(spike, v_next, h_seq)``;
    ``backward(grad_spike, grad_v_next, h_seq)`` is BPTT from that H and returns ``(grad_x,
    grad_v)``; ``backward_plif(grad_spike, grad_v_next, h_seq, v_init, reciprocal_tau)`` is
    :meth:`Backend.backward_plif`. A float ``reciprocal_tau`` (already checked) replaces the
    config's 1/τ for that call: the value of a learnable time constant. Tensors may have any
    strides (they are made contiguous); ``grad_v_next`` and ``v_init`` may be ``None``.

    A training call goes through ``train_forward(x, v) -> (spike, v_next, saved)`` and
    ``train_backward(grad_spike, grad_v_next, saved)``: ``saved`` is what autograd keeps, one
    ``[T, N]`` tensor. It is H here; the CPU plan of a small layer (``recompute``) saves the
    input instead, with the ``[N]`` initial state when one was given, and recomputes H in the
    backward, with the same bits.
    """

    __slots__ = ("backend", "cfg", "shape", "dtype", "device", "v_given", "steps",
                 "state_shape", "h_dtype")
    #: whether a training call saves its input and the backward recomputes H
    recompute = False

    def __init__(self, backend, cfg, x, v_given, steps, state_shape, h_dtype):
        self.backend, self.cfg, self.v_given, self.h_dtype = backend, cfg, v_given, h_dtype
        self.shape, self.dtype, self.device = x.shape, x.dtype, x.device
        self.steps, self.state_shape = steps, state_shape

    def accepts(self, x, v) -> bool:
        """True when ``x`` and the state ``v`` (a tensor, or ``None`` for at rest) are of the
        kind this plan was checked for."""
        if v is None:
            if self.v_given:
                return False
        elif not (self.v_given and v.dtype is self.dtype and v.shape == self.state_shape
                  and v.device == self.device and v.layout is torch.strided):
            return False
        return (x.dtype is self.dtype and x.shape == self.shape and x.device == self.device
                and x.layout is torch.strided and not transform_wrapped(x))

    def _cfg(self, reciprocal_tau):
        return self.cfg if reciprocal_tau is None else self.cfg.with_reciprocal_tau(reciprocal_tau)

    def forward(self, x, v, save_h=True, reciprocal_tau=None):
        spike, v_next, h_seq = self.backend.forward(
            x.contiguous(), _contiguous(v), self._cfg(reciprocal_tau), self.steps,
            save_h=save_h, h_dtype=self.h_dtype if save_h else None,
            state_shape=self.state_shape)[:3]
        return spike, v_next, h_seq

    def backward(self, grad_spike, grad_v_next, h_seq):
        return self.backend.backward(grad_spike.contiguous(), _contiguous(grad_v_next), self.cfg,
                                     self.steps, h_seq=h_seq, state_shape=self.state_shape)

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, reciprocal_tau):
        return self.backend.backward_plif(
            grad_spike.contiguous(), _contiguous(grad_v_next), h_seq, _contiguous(v_init),
            self._cfg(reciprocal_tau), self.steps, state_shape=self.state_shape)

    def train_forward(self, x, v):
        """The forward of a training call: ``(spike, v_next, saved)``, ``saved`` the tensors
        :meth:`train_backward` needs (here H alone)."""
        spike, v_next, h_seq = self.forward(x, v)
        return spike, v_next, (h_seq,)

    def train_backward(self, grad_spike, grad_v_next, saved):
        """BPTT from what :meth:`train_forward` saved: ``(grad_x, grad_v)``."""
        return self.backward(grad_spike, grad_v_next, saved[0])


def _contiguous(t):
    return None if t is None else t.contiguous()


class Backend:
    """Base class: a name, the device type it serves, its native dtypes."""

    name = ""
    device_type = ""
    native_dtypes = ()
    #: dtypes the saved H may be kept in besides the compute dtype (``h_dtype=`` of forward)
    h_dtypes = ()
    #: whether the kernels read the tensors' memory through raw pointers (then the wrapped
    #: tensors of a torch.func transform are refused; PyTorch operations take them)
    reads_memory = False

    @staticmethod
    def new_outputs(x, v, save_h=False, save_v=False, with_grad=False, h_dtype=None,
                    state_shape=None):
        """Fresh outputs of :meth:`forward`: ``(spike, v_next, h_seq, v_seq, gs2h, gv2h)``, the
        optional ones ``None`` unless asked for."""
        empty = torch.empty_like
        return (empty(x), empty(v) if v is not None else x.new_empty(state_shape),
                empty(x, dtype=h_dtype) if save_h else None,
                empty(x) if save_v else None, empty(x) if with_grad else None,
                empty(x) if with_grad else None)

    @staticmethod
    def new_gradients(grad_spike, grad_v_next, state_shape):
        """Fresh outputs of :meth:`backward`: ``(grad_x, grad_v)``, ``grad_v`` of the state shape
        (``grad_v_next`` may be ``None``)."""
        return torch.empty_like(grad_spike), (grad_spike.new_empty(state_shape)
                                              if grad_v_next is None
                                              else torch.empty_like(grad_v_next))

    @staticmethod
    def filled(t, state_shape, value, like):
        """``t``, or, where it is ``None``, a tensor of ``state_shape`` filled with ``value`` in
        the dtype and on the device of ``like``: for backends that need every state input."""
        if t is not None:
            return t
        return torch.full(state_shape, value, dtype=like.dtype, device=like.device)

    def load_error(self) -> Optional[str]:
        """``None`` when usable, else a message that says why not and how to fix it."""
        return None

    def plan(self, cfg, x, v_given, steps, state_shape, h_dtype=None) -> Plan:
        """A :class:`Plan` for calls like one on ``x`` (already checked, native dtype)."""
        return Plan(self, cfg, x, v_given, steps, state_shape, h_dtype)

    def forward(self, x, v, cfg, steps, save_h=False, save_v=False, with_grad=False,
                h_dtype=None, state_shape=None):
        raise NotImplementedError

    def backward(self, grad_spike, grad_v_next, cfg, steps, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None, state_shape=None):
        raise NotImplementedError

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg, steps,
                      state_shape=None):
        """BPTT from H for a learnable 1/τ: ``(grad_x, grad_v, dL/d(1/τ))``, the last a 0-d
        tensor summed over neurons and time. ``v_init`` (V[-1]) may be ``None``: at rest."""
        raise NotImplementedError


class ReferenceBackend(Backend):
    """Plain PyTorch ops (spikecore.reference) on any device."""

    name = "reference"
    device_type = None
    native_dtypes = (torch.float32, torch.float64)
    h_dtypes = (torch.bfloat16,)

    @staticmethod
    def _seq(t, steps, v):
        """``t`` as ``[T, *v.shape]``: what the reference loops over."""
        return t.reshape((steps,) + tuple(v.shape))

    def forward(self, x, v, cfg, steps, save_h=False, save_v=False, with_grad=False,
                h_dtype=None, state_shape=None):
        v = self.filled(v, state_shape, cfg.v_rest, x)
        spike, v_next, h_seq, v_seq = reference.fptt(self._seq(x, steps, v), v, cfg)
        gs2h = gv2h = None
        if with_grad:
            gs2h = reference.surrogate_grad(h_seq, cfg)
            gv2h = reference.reset_grad(h_seq, spike, gs2h, cfg)
        if save_h and h_dtype is not None:
            h_seq = reference.keep_spike_bf16(h_seq, spike, cfg)
        outs = (h_seq if save_h else None, v_seq if save_v else None, gs2h, gv2h)
        return (spike.view_as(x), v_next, *(None if t is None else t.view_as(x) for t in outs))

    def backward(self, grad_spike, grad_v_next, cfg, steps, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None, state_shape=None):
        grad_v_next = self.filled(grad_v_next, state_shape, 0.0, grad_spike)
        seq = functools.partial(self._seq, steps=steps, v=grad_v_next)
        if h_seq is not None:
            grad_x, grad_v = reference.bptt_from_h(seq(grad_spike), grad_v_next,
                                                   seq(h_seq.to(grad_spike.dtype)), cfg)
        else:
            grad_x, grad_v = reference.bptt(seq(grad_spike), grad_v_next, seq(grad_s_to_h),
                                            seq(grad_v_to_h), cfg)
        return grad_x.view_as(grad_spike), grad_v

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg, steps,
                      state_shape=None):
        grad_v_next = self.filled(grad_v_next, state_shape, 0.0, grad_spike)
        v_init = self.filled(v_init, state_shape, cfg.v_rest, grad_spike)
        seq = functools.partial(self._seq, steps=steps, v=grad_v_next)
        grad_x, grad_v, grad_rtau = reference.bptt_from_h_plif(
            seq(grad_spike), grad_v_next, seq(h_seq), v_init, cfg)
        return grad_x.view_as(grad_spike), grad_v, grad_rtau


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
            self._kinds = {torch.float32: _cpu_kernels.FLOAT32,
                           torch.float64: _cpu_kernels.FLOAT64,
                           torch.bfloat16: _cpu_kernels.BF16_BITS}   # kept H: its bits
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

    __slots__ = ("_train", "_infer", "_backward", "_backward_plif", "_from_input", "_kind", "_n",
                 "_absent_seq", "_absent_state", "_args", "recompute")

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
        #: a training call saves its input and the backward recomputes H (bit-identical), for
        #: [T, N] tensors below the streaming threshold: the forward then writes no H, which
        #: keeps a small layer's step in cache; larger ones save H (the row-streaming kernels
        #: are faster there than the chunk-wise recomputation)
        self.recompute = (h_dtype is None and
                          x.numel() * x.element_size() < backend._kernels.stream_min_bytes())

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
        return self._args[:6] + (reciprocal_tau,) + self._args[7:]

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
        grad_spike = grad_spike.contiguous()
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(self.state_shape)
        bg, bgx, carry, v0, bgv = self._buffers(
            (grad_spike, grad_x), (_contiguous(grad_v_next), _contiguous(v_init), grad_v))
        sums = torch.empty(self._n, dtype=torch.float64)   # per-neuron sums (scratch)
        total = self._backward_plif(bg, carry, self.backend._view(h_seq, (self.steps, self._n)),
                                    v0, bgx, bgv, self.backend._view(sums, (self._n,)),
                                    *self._scalars(reciprocal_tau),
                                    CPUBackend._threads(grad_x.numel()))
        return grad_x, grad_v, torch.scalar_tensor(total, dtype=torch.float64)


_REGISTRY: Dict[str, Backend] = {}
_BY_DEVICE: Dict[str, str] = {}
# device -> its default backend, once found usable; keyed by the device object itself, whose
# hash costs far less than reading its .type (about 0.1 against 0.25 us per call)
_READY: Dict[torch.device, Backend] = {}


def register(backend: Backend) -> None:
    """Add a backend; the first one registered for a device type becomes its default."""
    _REGISTRY[backend.name] = backend
    if backend.device_type:
        _BY_DEVICE.setdefault(backend.device_type, backend.name)
        _READY.clear()


def names():
    """Names of every registered backend (built or not)."""
    return tuple(_REGISTRY)


def get(name: str) -> Backend:
    """The backend called ``name``; raises if it is unknown or not built."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    backend = _REGISTRY[name]
    error = backend.load_error()
    if error is not None:
        raise RuntimeError(error)
    return backend


def for_device(device: torch.device) -> Backend:
    """The default backend for tensors on ``device``."""
    ready = _READY.get(device)
    if ready is not None:   # the per-call path: usable once, usable for good
        return ready
    name = _BY_DEVICE.get(device.type)
    if name is None:
        raise RuntimeError(f"spikecore has no backend for {device.type!r} tensors; "
                           f"backend='reference' runs anywhere")
    backend = _READY[device] = get(name)   # get() raises if it is not usable
    return backend


def available(name: str) -> bool:
    """True when the backend ``name`` is registered and built."""
    return name in _REGISTRY and _REGISTRY[name].load_error() is None


register(CPUBackend())
register(ReferenceBackend())
