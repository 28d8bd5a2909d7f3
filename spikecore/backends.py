"""The backend registry: one place that maps a name or a device to the code that runs a kernel.

A backend implements three operations on C-contiguous tensors of a dtype it supports natively
(the caller, :mod:`spikecore.dispatch`, has already validated, made contiguous and, where
needed, up-cast everything). A sequence arrives in the caller's own shape with ``steps`` given:
``T·N`` elements, read as time-major ``[T, N]`` (a single step may be ``[*]``, with ``T = 1``);
the state ``v`` has ``N`` elements. Outputs are shaped like the input they correspond to.
The state inputs may be ``None``, with ``state_shape`` then giving the shape of the state: ``v``
and the learnable-1/τ backward's ``v_init`` (every neuron starts at rest, ``cfg.v_rest``: a fresh
node) and ``grad_v_next`` (zero: the last potential does not reach the loss). The CPU and CUDA
kernels take that as a null input; the reference backend fills a tensor.

``forward(x, v, cfg, steps, save_h, save_v, with_grad, h_dtype, state_shape)``
    ``T`` steps of charge/fire/reset: ``(spike, v_next, h_seq, v_seq, gs2h, gv2h)``, the
    optional outputs ``None`` unless asked for.
``backward(grad_spike, grad_v_next, cfg, steps, h_seq, grad_s_to_h, grad_v_to_h, state_shape)``
    BPTT, either from saved H (``h_seq`` given) or from stored local gradients:
    ``(grad_x, grad_v)``.
``backward_plif(grad_spike, grad_v_next, h_seq, v_init, cfg, steps, state_shape)``
    BPTT from H for a learnable 1/τ, which also needs the initial potential ``v_init``:
    ``(grad_x, grad_v, dL/d(1/τ))``.

Backends: ``cpu`` (Cython/OpenMP, registered by :mod:`spikecore.cpu_backend`), ``cuda``
(nvcc-built module, registered by ``spikecore.cuda_backend``) and ``reference`` (plain
PyTorch, any device). A call uses the backend of its tensors' device unless one is named; a
backend that is not built is never swapped for another: asking for it raises an error that
says how to build it.
"""
import functools
from typing import Dict, Optional

import torch

from . import reference

__all__ = ["Backend", "Plan", "CastPlan", "register", "get", "for_device", "available", "names",
           "holds_exactly"]

#: True for the wrapped tensors of a torch.func transform (vmap, grad, ...), whose memory native
#: kernels cannot read (see Backend.reads_memory)
transform_wrapped = getattr(getattr(torch._C, "_functorch", None), "is_functorch_wrapped_tensor",
                            lambda t: False)


@functools.lru_cache(maxsize=64)
def holds_exactly(dtype: torch.dtype, value: float) -> bool:
    """True when a tensor of ``dtype`` stores the Python float ``value`` without rounding."""
    return float(torch.tensor(value, dtype=dtype)) == value


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
    backward, with the same bits. ``train_forward_plif`` and ``train_backward_plif`` do the
    same for a learnable 1/τ (saving V[-1] either way).
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

    def train_forward_plif(self, x, v, reciprocal_tau):
        """:meth:`train_forward` with this call's learnable 1/τ: ``saved`` is ``(H, v)`` here
        (the backward also needs V[-1]; ``v`` may be ``None``)."""
        spike, v_next, h_seq = self.forward(x, v, reciprocal_tau=reciprocal_tau)
        return spike, v_next, (h_seq, v)

    def train_backward_plif(self, grad_spike, grad_v_next, saved, reciprocal_tau):
        """:meth:`Backend.backward_plif` from what :meth:`train_forward_plif` saved:
        ``(grad_x, grad_v, dL/d(1/τ))``."""
        return self.backward_plif(grad_spike, grad_v_next, saved[0], saved[1], reciprocal_tau)


class CastPlan(Plan):
    """The :class:`Plan` of float16/bfloat16 calls on a backend that computes them in float32
    (the reference backend; the CPU's ``cpu_backend._HalfPlan`` is one where its 16-bit kernels
    do not reach): the float32 plan ``inner`` runs them on inputs cast up, and this one casts
    the results back to the caller's dtype, as :func:`spikecore.dispatch.forward` does. What a
    training call saves stays in float32 (H, or the input cast up). Made only where a fresh
    state is the same in both dtypes (the caller's dtype holds V_r exactly, see
    ``dispatch._rest_upcast``)."""

    __slots__ = ("_inner",)

    def __init__(self, inner, cfg, x, v_given, steps, state_shape, h_dtype):
        super().__init__(inner.backend, cfg, x, v_given, steps, state_shape, h_dtype)
        self._inner = inner

    @property
    def recompute(self):
        return self._inner.recompute

    def _down(self, *tensors):
        return tuple(t.to(self.dtype) for t in tensors)

    def forward(self, x, v, save_h=True, reciprocal_tau=None):
        spike, v_next, h_seq = self._inner.forward(x.float(), _float(v), save_h=save_h,
                                                   reciprocal_tau=reciprocal_tau)
        return (*self._down(spike, v_next), h_seq)

    def backward(self, grad_spike, grad_v_next, h_seq):
        return self._down(*self._inner.backward(grad_spike.float(), _float(grad_v_next), h_seq))

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, reciprocal_tau):
        grad_x, grad_v, grad_k = self._inner.backward_plif(
            grad_spike.float(), _float(grad_v_next), h_seq, _float(v_init), reciprocal_tau)
        return (*self._down(grad_x, grad_v), grad_k)

    def train_forward(self, x, v):
        spike, v_next, saved = self._inner.train_forward(x.float(), _float(v))
        return (*self._down(spike, v_next), saved)

    def train_backward(self, grad_spike, grad_v_next, saved):
        return self._down(*self._inner.train_backward(grad_spike.float(), _float(grad_v_next),
                                                      saved))

    def train_forward_plif(self, x, v, reciprocal_tau):
        spike, v_next, saved = self._inner.train_forward_plif(x.float(), _float(v),
                                                              reciprocal_tau)
        return (*self._down(spike, v_next), saved)

    def train_backward_plif(self, grad_spike, grad_v_next, saved, reciprocal_tau):
        grad_x, grad_v, grad_k = self._inner.train_backward_plif(
            grad_spike.float(), _float(grad_v_next), saved, reciprocal_tau)
        return (*self._down(grad_x, grad_v), grad_k)


def _contiguous(t):
    return None if t is None else t.contiguous()


def _float(t):
    return None if t is None else t.float()


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
        """Fresh outputs of :meth:`Backend.forward`: ``(spike, v_next, h_seq, v_seq, gs2h,
        gv2h)``, the optional ones ``None`` unless asked for."""
        empty = torch.empty_like
        return (empty(x), empty(v) if v is not None else x.new_empty(state_shape),
                empty(x, dtype=h_dtype) if save_h else None,
                empty(x) if save_v else None, empty(x) if with_grad else None,
                empty(x) if with_grad else None)

    @staticmethod
    def new_gradients(grad_spike, grad_v_next, state_shape):
        """Fresh outputs of :meth:`Backend.backward`: ``(grad_x, grad_v)``, ``grad_v`` of the
        state shape (``grad_v_next`` may be ``None``)."""
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

    def cast_plan(self, inner, cfg, x, v_given, steps, state_shape, h_dtype=None) -> Plan:
        """The plan of calls like one on ``x``, whose dtype is not native: the float32 plan
        ``inner`` wrapped in casts (:class:`CastPlan`), unless the backend has a better way."""
        return CastPlan(inner, cfg, x, v_given, steps, state_shape, h_dtype)

    def forward(self, x, v, cfg, steps, save_h=False, save_v=False, with_grad=False,
                h_dtype=None, state_shape=None):
        """``steps`` steps of the neuron on ``x`` (contiguous, a native dtype) from ``v``
        (``None``: at rest); returns :meth:`new_outputs`' six tensors, written."""
        raise NotImplementedError

    def backward(self, grad_spike, grad_v_next, cfg, steps, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None, state_shape=None):
        """BPTT from H (``h_seq``) or from the teaching pair (``grad_s_to_h``,
        ``grad_v_to_h``); ``grad_v_next`` ``None`` reads as zero. Returns ``(grad_x,
        grad_v)``."""
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


def lookup(name: str) -> Backend:
    """The backend called ``name``, usable or not; raises if no backend has that name."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"backend must be one of {names()}, got {name!r}")
    return _REGISTRY[name]


def get(name: str) -> Backend:
    """The backend called ``name``; raises if it is unknown or not built."""
    backend = lookup(name)
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


register(ReferenceBackend())
