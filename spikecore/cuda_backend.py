"""The CUDA backend: kernels of cuda/neuron_kernels.cu, called with raw device pointers.

Registered with :mod:`spikecore.backends` as ``'cuda'``, the default for CUDA tensors. It
launches on the tensors' own device and on that device's current stream, so it composes with
``torch.cuda.stream(...)`` and multi-GPU code. float32, float16 and bfloat16 are native
(float32 arithmetic inside); float64 is rejected with a TypeError.

An absent initial potential or incoming dL/dV[T-1] is passed as a null pointer, which the
kernels read as the resting potential or zero, as the CPU kernels read an empty buffer: no
tensor is filled for a fresh state. The one exception is a 16-bit state at rest at a potential
that its dtype cannot hold exactly: it is still filled, so that it holds exactly what
``torch.full`` stores (see :meth:`CUDABackend._rest`).
"""
import importlib.util

import torch

from . import backends

__all__ = ["CUDABackend", "cuda_available", "cuda_unavailable_reason"]

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
#: the current stream of a device as an int, without building a torch.cuda.Stream (the getter
#: PyTorch's own compiled code uses; absent from CPU-only builds of PyTorch)
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):   # ValueError: a None placeholder in sys.modules
        return False


class CUDABackend(backends.Backend):
    name = "cuda"
    device_type = "cuda"
    native_dtypes = tuple(_DTYPE_CODES)
    reads_memory = True

    def __init__(self, kernels=None):
        """``kernels``: a module with the functions of ``spikecore._cuda_kernels`` to use
        instead of it (another build of the same kernel file, e.g. for benchmarks and tests);
        the caller then vouches for the device, which is not probed."""
        if kernels is not None:
            self._kernels, self._build_error, self._device_error = kernels, None, ""
            return
        try:
            from . import _cuda_kernels
        except ImportError as exc:
            self._kernels = None
            # a module that is there but does not load is another problem than none at all
            found = _module_exists(f"{__package__}._cuda_kernels")
            self._build_error = (
                f"the CUDA backend of spikecore does not load ({exc})" if found else
                "the CUDA backend of spikecore was not built (the build found no CUDA toolkit, "
                "or was told to skip it)") + (
                "; install a CUDA toolkit (nvcc) and reinstall spikecore from its source with "
                "SPIKECORE_REQUIRE_CUDA=1 set (e.g. `SPIKECORE_REQUIRE_CUDA=1 pip install .`)")
        else:
            self._kernels, self._build_error = _cuda_kernels, None
        self._device_error = None

    def load_error(self):
        if self._build_error is not None:
            return self._build_error
        if self._device_error is None:
            count, message = self._kernels.device_count()
            if count == 0:
                self._device_error = ("the CUDA backend is built but "
                                      f"{message or 'no CUDA device was found'}")
            elif not torch.cuda.is_available():
                self._device_error = ("the CUDA backend is built but this PyTorch has no CUDA "
                                      "support (install a CUDA build of torch)")
            else:
                self._device_error = ""
        return self._device_error or None

    @staticmethod
    def _launch_args(t):
        """The device index and current stream (a ``cudaStream_t`` as an int) for ``t``."""
        index = t.device.index
        if _raw_stream is not None:
            return index, _raw_stream(index)
        return index, torch.cuda.current_stream(t.device).cuda_stream

    @staticmethod
    def _ptr(t):
        return 0 if t is None else t.data_ptr()

    def _rest(self, v, cfg, state_shape, like):
        """``v``, or for an absent state ``None`` (a null pointer: the kernels start at rest),
        unless the kernels' resting value could differ from what ``torch.full`` would store:
        they round the float32 V_reset to the storage dtype, ``torch.full`` rounds the Python
        float once. That can differ only for a 16-bit dtype that cannot hold the value."""
        if (v is None and like.dtype != torch.float32
                and not backends.holds_exactly(like.dtype, cfg.v_rest)):
            return self.filled(v, state_shape, cfg.v_rest, like)
        return v

    def forward(self, x, v, cfg, steps, save_h=False, save_v=False, with_grad=False,
                h_dtype=None, state_shape=None):
        v = self._rest(v, cfg, state_shape, x)
        spike, v_next, h_seq, v_seq, gs2h, gv2h = self.new_outputs(
            x, v, save_h, save_v, with_grad, state_shape=state_shape)
        p = self._ptr
        self._kernels.forward(
            _DTYPE_CODES[x.dtype], p(x), p(v), p(spike), p(v_next), p(h_seq), p(v_seq), p(gs2h),
            p(gv2h), steps, v_next.numel(), *cfg.kernel_args,
            *self._launch_args(x))
        return spike, v_next, h_seq, v_seq, gs2h, gv2h

    def backward(self, grad_spike, grad_v_next, cfg, steps, h_seq=None, grad_s_to_h=None,
                 grad_v_to_h=None, state_shape=None):
        grad_x, grad_v = self.new_gradients(grad_spike, grad_v_next, state_shape)
        p = self._ptr   # an absent grad_v_next: a null pointer, read as zero
        self._kernels.backward(
            _DTYPE_CODES[grad_spike.dtype], p(grad_spike), p(grad_v_next), p(h_seq),
            p(grad_s_to_h), p(grad_v_to_h), p(grad_x), p(grad_v), steps, grad_v.numel(),
            *cfg.kernel_args,
            *self._launch_args(grad_spike))
        return grad_x, grad_v

    def backward_plif(self, grad_spike, grad_v_next, h_seq, v_init, cfg, steps,
                      state_shape=None):
        v_init = self._rest(v_init, cfg, state_shape, grad_spike)
        grad_x, grad_v = self.new_gradients(grad_spike, grad_v_next, state_shape)
        n = grad_v.numel()
        per_neuron = torch.empty(n, dtype=torch.float32,
                                 device=grad_spike.device)
        p = self._ptr
        self._kernels.backward_plif(
            _DTYPE_CODES[grad_spike.dtype], p(grad_spike), p(grad_v_next), p(h_seq), p(v_init),
            p(grad_x), p(grad_v), p(per_neuron), steps, n, *cfg.kernel_args,
            *self._launch_args(grad_spike))
        return grad_x, grad_v, per_neuron.sum(dtype=torch.float64)


_BACKEND = CUDABackend()
backends.register(_BACKEND)


def cuda_available() -> bool:
    """True when the CUDA backend is built and a CUDA device is usable."""
    return _BACKEND.load_error() is None


def cuda_unavailable_reason() -> str:
    """Why :func:`cuda_available` is False ('' when it is True)."""
    return _BACKEND.load_error() or ""
