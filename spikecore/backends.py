"""The backend registry: one place that maps a name or a device to the code that runs a kernel.

A backend implements two operations on time-major, C-contiguous 2-D tensors ``[T, N]`` of a
dtype it supports natively (the caller, :mod:`spikecore.dispatch`, has already validated,
flattened, made contiguous and, where needed, up-cast everything):

``forward(x, v, cfg, save_h, save_v, with_grad) -> (spike, v_next, h_seq, v_seq, gs2h, gv2h)``
    ``T`` steps of charge/fire/reset; the optional outputs are ``None`` unless asked for.
``backward(grad_spike, grad_v_next, cfg, h_seq, grad_s_to_h, grad_v_to_h) -> (grad_x, grad_v)``
    BPTT, either from saved H (``h_seq`` given) or from stored local gradients.

Backends: ``cpu`` (Cython/OpenMP), ``cuda`` (nvcc-built module, registered by
:mod:`spikecore.cuda_backend`) and ``reference`` (plain PyTorch, any device). A call uses the
backend of its tensors' device unless one is named; a backend that is not built is never
swapped for another: asking for it raises an error that says how to build it.
"""
import functools
from typing import Dict, Optional

import numpy as np
import torch

from . import reference

__all__ = ["Backend", "register", "get", "for_device", "available", "names"]

# Below this many neuron-steps (about 0.2 ms of work for one core) a CPU call runs on one
# thread: a parallel region costs microseconds when the cores are free, and far more when other
# processes occupy them (a thread that is not scheduled holds up the region's barrier).
PARALLEL_MIN_ELEMENTS = 1 << 18


class Backend:
    """Base class: a name, the device type it serves, its native dtypes."""

    name = ""
    device_type = ""
    native_dtypes = ()
    #: dtypes the saved H may be kept in besides the compute dtype (``h_dtype=`` of forward)
    h_dtypes = ()

    @staticmethod
    def new_outputs(x, v, save_h=False, save_v=False, with_grad=False, h_dtype=None):
        """Fresh outputs of :meth:`forward`: ``(spike, v_next, h_seq, v_seq, gs2h, gv2h)``, the
        optional ones ``None`` unless asked for."""
        empty = torch.empty_like
        return (empty(x), empty(v), empty(x, dtype=h_dtype) if save_h else None,
                empty(x) if save_v else None, empty(x) if with_grad else None,
                empty(x) if with_grad else None)

    def load_error(self) -> Optional[str]:
        """``None`` when usable, else a message that says why not and how to fix it."""
        return None

    def forward(self, x, v, cfg, save_h=False, save_v=False, with_grad=False, h_dtype=None):
        raise NotImplementedError

    def backward(self, grad_spike, grad_v_next, cfg, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None):
        raise NotImplementedError

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg):
        """BPTT from H for a learnable 1/τ: ``(grad_x, grad_v, dL/d(1/τ))``, the last a 0-d
        tensor summed over neurons and time."""
        raise NotImplementedError


class ReferenceBackend(Backend):
    """Plain PyTorch ops (spikecore.reference) on any device."""

    name = "reference"
    device_type = None
    native_dtypes = (torch.float32, torch.float64)
    h_dtypes = (torch.bfloat16,)

    def forward(self, x, v, cfg, save_h=False, save_v=False, with_grad=False, h_dtype=None):
        spike, v_next, h_seq, v_seq = reference.fptt(x, v, cfg)
        gs2h = gv2h = None
        if with_grad:
            gs2h = reference.surrogate_grad(h_seq, cfg)
            gv2h = reference.reset_grad(h_seq, spike, gs2h, cfg)
        if save_h and h_dtype is not None:
            h_seq = reference.keep_spike_bf16(h_seq, spike, cfg)
        return (spike, v_next, h_seq if save_h else None, v_seq if save_v else None, gs2h, gv2h)

    def backward(self, grad_spike, grad_v_next, cfg, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None):
        if h_seq is not None:
            return reference.bptt_from_h(grad_spike, grad_v_next, h_seq.to(grad_spike.dtype), cfg)
        return reference.bptt(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, cfg)

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg):
        return reference.bptt_from_h_plif(grad_spike, grad_v_next, h_seq, v_init, cfg)


_NUMPY = {torch.float32: np.float32, torch.float64: np.float64}


class CPUBackend(Backend):
    """The Cython/OpenMP kernels of pyx/cpu_kernels.pyx."""

    name = "cpu"
    device_type = "cpu"
    native_dtypes = (torch.float32, torch.float64)

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

    def load_error(self):
        return self._error

    @staticmethod
    def _threads(elements):
        return 1 if elements < PARALLEL_MIN_ELEMENTS else max(1, torch.get_num_threads())

    h_dtypes = (torch.bfloat16,)

    @staticmethod
    def _np(t):
        t = t.detach() if t.requires_grad else t
        if t.dtype == torch.bfloat16:  # kept H: the kernels read and write its bits
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy()

    @staticmethod
    @functools.lru_cache(maxsize=64)
    def _unused(dtype, n):
        """A [0, N] array (it holds nothing) standing for an output that is not wanted."""
        return np.empty((0, n), dtype=_NUMPY[dtype])

    def forward(self, x, v, cfg, save_h=False, save_v=False, with_grad=False, h_dtype=None):
        outs = self.new_outputs(x, v, save_h, save_v, with_grad, h_dtype)
        unused, np_ = self._unused(x.dtype, x.shape[1]), self._np
        self._kernels.forward(
            np_(x), np_(v), outs[0].numpy(), outs[1].numpy(),
            *[unused if t is None else np_(t) for t in outs[2:]],
            *cfg.kernel_args, self._threads(x.numel()))
        return outs

    def backward(self, grad_spike, grad_v_next, cfg, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None):
        grad_x, grad_v = torch.empty_like(grad_spike), torch.empty_like(grad_v_next)
        unused = self._unused(grad_spike.dtype, grad_spike.shape[1])
        np_ = self._np
        self._kernels.backward(
            np_(grad_spike), np_(grad_v_next),
            *(unused if t is None else np_(t) for t in (h_seq, grad_s_to_h, grad_v_to_h)),
            np_(grad_x), np_(grad_v),
            *cfg.kernel_args,
            self._threads(grad_spike.numel()))
        return grad_x, grad_v


    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg):
        grad_x, grad_v = torch.empty_like(grad_spike), torch.empty_like(grad_v_next)
        scratch = torch.empty(grad_spike.shape[1], dtype=torch.float64)
        np_ = self._np
        total = self._kernels.backward_plif(
            np_(grad_spike), np_(grad_v_next), np_(h_seq), np_(v_init), np_(grad_x), np_(grad_v),
            scratch.numpy(), *cfg.kernel_args,
            self._threads(grad_spike.numel()))
        return grad_x, grad_v, torch.tensor(total, dtype=torch.float64)


_REGISTRY: Dict[str, Backend] = {}
_BY_DEVICE: Dict[str, str] = {}


def register(backend: Backend) -> None:
    """Add a backend; the first one registered for a device type becomes its default."""
    _REGISTRY[backend.name] = backend
    if backend.device_type:
        _BY_DEVICE.setdefault(backend.device_type, backend.name)


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
    name = _BY_DEVICE.get(device.type)
    if name is None:
        raise RuntimeError(f"spikecore has no backend for {device.type!r} tensors; "
                           f"backend='reference' runs anywhere")
    return get(name)


def available(name: str) -> bool:
    """True when the backend ``name`` is registered and built."""
    return name in _REGISTRY and _REGISTRY[name].load_error() is None


register(CPUBackend())
register(ReferenceBackend())
