"""The CUDA kernels of cuda/neuron_kernels.cu, run on the host: the CUDA backend without a GPU.

The kernels need nothing of the GPU but its thread indices (see the design comment of
tests/native/cuda_host/cuda_runtime.h), so g++ builds the unchanged kernel file against stand-in
CUDA headers, after one rewrite: each ``kernel<<<grid, block, 0, stream>>>(args)`` launch becomes
a call that runs every thread in turn. :class:`EmulatedKernels` loads that library with ctypes
and offers the functions of the Cython wrapper ``spikecore._cuda_kernels`` (cuda/cuda_kernels.pyx)
with the same arguments, so :class:`EmulatedCUDABackend`, the real :class:`CUDABackend` with this
module and CPU tensors, runs the CUDA backend end to end: autograd, nodes and plans included.
"""
import ctypes
import os
import re
import shutil
import subprocess

from spikecore.cuda_backend import CUDABackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "cuda", "neuron_kernels.cu")
SHIM = os.path.join(ROOT, "tests", "native", "cuda_host")
#: a launch: the kernel (a name, maybe with template arguments), the launch shape, the arguments
_LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)

#: the emulated machine: two devices; the kernels must run on the one of the tensors
DEVICES, CALLER_DEVICE, TENSOR_DEVICE = 2, 0, 1
STREAM = 0x5C0DE   # a stream handle, passed through untouched

ERR_LEN = 512


def compiler():
    """The host C++ compiler, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def build(out_dir):
    """Compile the kernel file for the host into ``out_dir``; the path of the shared library."""
    with open(KERNELS) as f:
        source = f.read()
    rewritten, launches = _LAUNCH.subn(r"sc_host_launch(\1, \2)(", source)
    if launches == 0 or launches != source.count("<<<"):
        raise RuntimeError(f"{KERNELS}: found {source.count('<<<')} launches, rewrote "
                           f"{launches}")
    src = os.path.join(out_dir, "neuron_kernels_host.cpp")
    lib = os.path.join(out_dir, "libneuron_kernels_host.so")
    with open(src, "w") as f:
        f.write(f'#line 1 "{KERNELS}"\n' + rewritten)
    # as the real build: no contraction and no fast-math, so float32 results are bit for bit
    # those of the GPU (and of the CPU kernels)
    subprocess.run([compiler(), "-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off",
                    "-I", SHIM, "-I", os.path.join(ROOT, "cuda"),
                    "-I", os.path.join(ROOT, "include"), src, "-o", lib],
                   check=True, capture_output=True, text=True)
    return lib


class _Params(ctypes.Structure):
    """``sc_params`` of cuda/spikecore_cuda.h."""
    _fields_ = [("charge_mode", ctypes.c_int), ("hard_reset", ctypes.c_int),
                ("detach_reset", ctypes.c_int), ("surrogate", ctypes.c_int),
                ("v_threshold", ctypes.c_float), ("v_reset", ctypes.c_float),
                ("reciprocal_tau", ctypes.c_float), ("alpha", ctypes.c_float)]


_P, _LL, _INT = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
_TAIL = [_LL, _LL, _Params, _INT, _P, ctypes.c_char_p, _INT]   # steps, n, params, device, ...
_SIGNATURES = {
    "sc_cuda_forward": [_INT] + [_P] * 8 + _TAIL,
    "sc_cuda_backward": [_INT] + [_P] * 7 + _TAIL,
    "sc_cuda_backward_plif": [_INT] + [_P] * 7 + _TAIL,
    "sc_cuda_device_count": [ctypes.POINTER(_INT), ctypes.c_char_p, _INT],
    "sc_host_reset": [_INT, _INT],
    "sc_host_fail_next_launch": [_INT],
    "sc_host_fail_device_calls": [_INT],
    "sc_host_current_device": [],
    "sc_host_last_launch": [ctypes.POINTER(_INT), ctypes.POINTER(_P),
                            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint)],
}


class EmulatedKernels:
    """``spikecore._cuda_kernels`` over the host build: the same functions and arguments
    (pointers as ints), a non-zero return code raised as RuntimeError with CUDA's message."""

    def __init__(self, lib_path):
        self.lib = ctypes.CDLL(lib_path)
        for name, args in _SIGNATURES.items():
            getattr(self.lib, name).argtypes = args
        self.lib.sc_host_last_launch.restype = _LL
        self.reset()

    # --- the emulated runtime ---
    def reset(self, devices=DEVICES, current=CALLER_DEVICE):
        self.lib.sc_host_reset(devices, current)

    def fail_next_launch(self, code):
        self.lib.sc_host_fail_next_launch(code)

    def fail_device_calls(self, code):
        self.lib.sc_host_fail_device_calls(code)

    def current_device(self):
        return self.lib.sc_host_current_device()

    def last_launch(self):
        """(launch count, device, stream, grid, block) of the latest launch."""
        device, stream = _INT(), _P()
        grid, block = ctypes.c_uint(), ctypes.c_uint()
        count = self.lib.sc_host_last_launch(ctypes.byref(device), ctypes.byref(stream),
                                             ctypes.byref(grid), ctypes.byref(block))
        return count, device.value, stream.value or 0, grid.value, block.value

    # --- the functions of spikecore._cuda_kernels ---
    def device_count(self):
        count, err = _INT(0), ctypes.create_string_buffer(ERR_LEN)
        rc = self.lib.sc_cuda_device_count(ctypes.byref(count), err, ERR_LEN)
        return count.value, (err.value.decode() if rc else "")

    def _call(self, name, dtype, pointers, steps, neurons, mode, hard, detach_reset, sg_index,
              v_threshold, v_reset, reciprocal_tau, alpha, device, stream):
        params = _Params(mode, hard, detach_reset, sg_index, v_threshold, v_reset,
                         reciprocal_tau, alpha)
        err = ctypes.create_string_buffer(ERR_LEN)
        rc = getattr(self.lib, name)(dtype, *pointers, steps, neurons, params, device, stream,
                                     err, ERR_LEN)
        if rc:
            raise RuntimeError("CUDA error in spikecore: " + err.value.decode())

    def forward(self, dtype, x, v, spike, v_next, h_seq, v_seq, gs2h, gv2h, *rest):
        self._call("sc_cuda_forward", dtype, (x, v, spike, v_next, h_seq, v_seq, gs2h, gv2h),
                   *rest)

    def backward(self, dtype, gs, gv_next, h_seq, gs2h, gv2h, gx, gv, *rest):
        self._call("sc_cuda_backward", dtype, (gs, gv_next, h_seq, gs2h, gv2h, gx, gv), *rest)

    def backward_plif(self, dtype, gs, gv_next, h_seq, v, gx, gv, grad_tau, *rest):
        self._call("sc_cuda_backward_plif", dtype, (gs, gv_next, h_seq, v, gx, gv, grad_tau),
                   *rest)


class EmulatedCUDABackend(CUDABackend):
    """The CUDA backend on CPU tensors, its kernels run by :class:`EmulatedKernels`: launched
    on emulated device ``TENSOR_DEVICE`` and stream ``STREAM``, as the real backend launches on
    the tensors' device and its current stream."""

    name = "cuda-host-emulation"
    device_type = None   # any device: the tensors live in host memory

    def __init__(self, kernels):   # the module is given: no import, no device probe
        self._kernels, self._build_error, self._device_error = kernels, None, ""

    @staticmethod
    def _launch_args(t):
        return TENSOR_DEVICE, STREAM
