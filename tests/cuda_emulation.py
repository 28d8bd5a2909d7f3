"""The CUDA kernels of cuda/neuron_kernels.cu, run on the host: the CUDA backend without a GPU.

The kernels need nothing of the GPU but its thread indices (see the design comment of
tests/native/cuda_host/cuda_runtime.h), so g++ builds the unchanged kernel file against stand-in
CUDA headers, after one rewrite: each ``kernel<<<grid, block, 0, stream>>>(args)`` launch becomes
a call that runs every thread in turn. The Cython wrapper the package ships
(cuda/cuda_kernels.pyx) is compiled against that library as it is, so :class:`EmulatedKernels`
offers exactly the functions of ``spikecore._cuda_kernels``, plus ctypes controls of the
emulated runtime. :class:`EmulatedCUDABackend`, the real :class:`CUDABackend` with this module
and CPU tensors, then runs the CUDA backend end to end: autograd, nodes and plans included.
"""
import ctypes
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from spikecore.cuda_backend import CUDABackend

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_DIR = os.path.join(ROOT, "cuda")
KERNELS = os.path.join(CUDA_DIR, "neuron_kernels.cu")
MODULE = "_cuda_kernels_host"   # the wrapper built against the host library
NATIVE = os.path.join(ROOT, "tests", "native")
SHIM = os.path.join(NATIVE, "cuda_host")
HOST_SOURCE = "neuron_kernels_host.cpp"   # the kernel file, its launches rewritten
#: a launch: the kernel (a name, maybe with template arguments), the launch shape, the arguments
_LAUNCH = re.compile(r"([\w:]+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)

#: the emulated machine: two devices; the kernels must run on the one of the tensors
DEVICES, CALLER_DEVICE, TENSOR_DEVICE = 2, 0, 1
STREAM = 0x5C0DE   # a stream handle, passed through untouched


def compiler():
    """The host C++ compiler, or None."""
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def _run(command):
    """Run a build step; its error output becomes the exception's message if it fails."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)}\nfailed with:\n{done.stderr}{done.stdout}")


def _compile(args):
    _run([compiler(), "-fPIC", "-shared"] + args)


def rewrite(out_dir, filename=HOST_SOURCE):
    """Write the kernel file with its launches rewritten for the host into ``out_dir`` (as
    ``filename``); the path of the result, a C++ file."""
    with open(KERNELS) as f:
        source = f.read()
    rewritten, launches = _LAUNCH.subn(r"sc_host_launch(\1, \2)(", source)
    if launches == 0 or launches != source.count("<<<"):
        raise RuntimeError(f"{KERNELS}: found {source.count('<<<')} launches, rewrote "
                           f"{launches}")
    src = os.path.join(out_dir, filename)
    with open(src, "w") as f:
        f.write(f'#line 1 "{KERNELS}"\n' + rewritten)
    return src


#: flags of every host build of the kernels: no contraction and no fast-math, as the real build,
#: so that float32 results are bit for bit those of the GPU (and of the CPU kernels)
HOST_FLAGS = ["-std=c++17", "-O1", "-ffp-contract=off", "-I", SHIM, "-I", CUDA_DIR,
              "-I", os.path.join(ROOT, "include")]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def require_sanitizers(out_dir):
    """Skip the calling test unless the compiler builds and runs a program with
    AddressSanitizer and UBSan."""
    src, exe = os.path.join(out_dir, "probe.cpp"), os.path.join(out_dir, "probe")
    with open(src, "w") as f:
        f.write("int main() { return 0; }\n")
    try:
        if compiler() is None:
            raise RuntimeError("no C++ compiler")
        _run([compiler()] + SANITIZE + [src, "-o", exe])
        _run([exe])
    except RuntimeError:
        pytest.skip("needs a C++ compiler with AddressSanitizer and UBSan (g++ with libasan)")


def build_bounds_checker(out_dir, defines=()):
    """tests/native/check_cuda_bounds.cpp around the rewritten kernels (with extra ``-D``
    flags), built with AddressSanitizer and UBSan into ``out_dir``; the path of the program."""
    rewrite(out_dir)
    exe = os.path.join(out_dir, "check_cuda_bounds")
    _run([compiler()] + HOST_FLAGS + SANITIZE + list(defines) +
         ["-I", out_dir, f'-DKERNELS="{HOST_SOURCE}"',
          os.path.join(NATIVE, "check_cuda_bounds.cpp"), "-o", exe])
    return exe


def build_library(out_dir, defines=(), name="neuron_kernels_host"):
    """Compile the kernel file for the host, with extra ``-D`` flags, into ``out_dir``; the path
    of the shared library (``lib<name>.so``). Libraries of other names may be built into the
    same folder at the same time: each has its own source file."""
    src = rewrite(out_dir, f"{name}.cpp")
    lib = os.path.join(out_dir, f"lib{name}.so")
    _compile(HOST_FLAGS + list(defines) + [src, "-o", lib])
    return lib


def build(out_dir):
    """Compile the kernel file for the host into ``out_dir``, and the Cython wrapper against it;
    ``(library, module)``: the paths of the kernels' shared library and of the wrapper."""
    lib = build_library(out_dir)
    pyx = os.path.join(out_dir, MODULE + ".pyx")
    shutil.copy(os.path.join(CUDA_DIR, "cuda_kernels.pyx"), pyx)
    _run([sys.executable, "-m", "cython", "-3", "--cplus", pyx, "-I", CUDA_DIR])
    module = os.path.join(out_dir, MODULE + sysconfig.get_config_var("EXT_SUFFIX"))
    _compile(["-O1", "-I", sysconfig.get_paths()["include"], "-I", CUDA_DIR,
              pyx[:-4] + ".cpp", "-L", out_dir, "-lneuron_kernels_host",
              f"-Wl,-rpath,{out_dir}", "-o", module])
    return lib, module


_P, _LL, _INT = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
_SIGNATURES = {   # the controls of the emulated runtime (cuda_runtime.h here)
    "sc_host_reset": [_INT, _INT],
    "sc_host_fail_next_launch": [_INT],
    "sc_host_fail_device_calls": [_INT],
    "sc_host_fail_device_calls_after_launch": [_INT],
    "sc_host_current_device": [],
    "sc_host_last_launch": [ctypes.POINTER(_INT), ctypes.POINTER(_P),
                            ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(ctypes.c_uint)],
}


class EmulatedKernels:
    """``spikecore._cuda_kernels`` built for the host (``forward``, ``backward``,
    ``backward_plif``, ``device_count``: the shipped wrapper itself), and the controls of the
    emulated runtime, which share its library."""

    def __init__(self, lib_path, module_path):
        spec = importlib.util.spec_from_file_location(MODULE, module_path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.forward, self.backward = module.forward, module.backward
        self.backward_plif, self.device_count = module.backward_plif, module.device_count
        self.lib = ctypes.CDLL(lib_path)
        for name, args in _SIGNATURES.items():
            getattr(self.lib, name).argtypes = args
        self.lib.sc_host_last_launch.restype = _LL
        self.reset()

    def reset(self, devices=DEVICES, current=CALLER_DEVICE):
        """A fresh runtime: ``devices`` devices, ``current`` current, no error, no launch."""
        self.lib.sc_host_reset(devices, current)

    def fail_next_launch(self, code):
        """The next launch does not run and reports the CUDA error ``code``."""
        self.lib.sc_host_fail_next_launch(code)

    def fail_device_calls(self, code):
        """Every device query (count, get, set) fails with ``code`` until :meth:`reset`."""
        self.lib.sc_host_fail_device_calls(code)

    def fail_device_calls_after_launch(self, code):
        """From the next launch on (which runs), every device query fails with ``code``."""
        self.lib.sc_host_fail_device_calls_after_launch(code)

    def current_device(self):
        return self.lib.sc_host_current_device()

    def last_launch(self):
        """(launch count, device, stream, grid, block) of the latest launch."""
        device, stream = _INT(), _P()
        grid, block = ctypes.c_uint(), ctypes.c_uint()
        count = self.lib.sc_host_last_launch(ctypes.byref(device), ctypes.byref(stream),
                                             ctypes.byref(grid), ctypes.byref(block))
        return count, device.value, stream.value or 0, grid.value, block.value


class EmulatedCUDABackend(CUDABackend):
    """The CUDA backend on CPU tensors, its kernels run by :class:`EmulatedKernels`: launched
    on emulated device ``TENSOR_DEVICE`` and stream ``STREAM``, as the real backend launches on
    the tensors' device and its current stream."""

    name = "cuda-host-emulation"
    device_type = None   # any device: the tensors live in host memory

    @staticmethod
    def _launch_args(t):
        return TENSOR_DEVICE, STREAM
