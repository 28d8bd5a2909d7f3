"""CUDA toolkit discovery and nvcc integration for setup.py (no PyTorch C++ extension).

* The toolkit is found from ``CUDA_HOME``/``CUDA_PATH``, else from ``nvcc`` on PATH. Because
  that nvcc may be a wrapper script, the root is read from the ``#$ TOP=`` line that
  ``nvcc --dryrun`` prints. The build checks that ``cuda_runtime_api.h`` and
  ``libcudart_static.a`` exist.
* ``SPIKECORE_NO_CUDA=1`` skips the CUDA module; ``SPIKECORE_REQUIRE_CUDA=1`` makes a missing
  toolkit an error; ``SPIKECORE_CUDA_ARCHS="80;90"`` replaces the default architectures.
* ``.cu`` sources are routed to nvcc by wrapping the compiler's ``_compile``; cudart is linked
  statically and the extension is linked as C++, so the module needs no libcudart at run time
  and keeps its CUDA runtime symbols apart from torch's.
"""
import os
import re
import shutil
import subprocess

# A100, RTX 30, RTX 40, H100/H200, B200, RTX 50; PTX of the newest for later GPUs.
DEFAULT_ARCHS = "80;86;89;90;100;120"
# nvcc flags: no FMA contraction (bit parity with PyTorch's float32 arithmetic in the forward
# pass), no fast-math. --prec-div=false only touches divisions, which occur in the surrogate
# derivatives (gradients, compared within a tolerance), never in charge, fire or reset.
NVCC_FLAGS = ["-O3", "-std=c++17", "--fmad=false", "--prec-div=false", "-Xcompiler", "-fPIC",
              "--threads", "0"]


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _say(msg):
    print(f"spikecore: {msg}", flush=True)


def _toolkit_from_nvcc(nvcc):
    try:
        out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"^#\$ TOP=(.+)$", out.stdout + out.stderr, re.MULTILINE)
    return os.path.realpath(match.group(1).strip()) if match else None


def find_toolkit():
    """(root, nvcc, lib_dir) of a usable CUDA toolkit, or (None, None, reason)."""
    root = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    nvcc = None
    if root:
        nvcc = os.path.join(root, "bin", "nvcc")
        if not os.path.exists(nvcc):
            return None, None, f"CUDA_HOME/CUDA_PATH={root} has no bin/nvcc"
    else:
        nvcc = shutil.which("nvcc")
        if nvcc is None:
            return None, None, "nvcc was not found on PATH and CUDA_HOME is not set"
        root = _toolkit_from_nvcc(nvcc)
        if root is None:
            return None, None, f"could not read the toolkit root from `{nvcc} --dryrun`"
    header = os.path.join(root, "include", "cuda_runtime_api.h")
    for lib_dir in (os.path.join(root, "lib64"), os.path.join(root, "lib"),
                    os.path.join(root, "targets", "x86_64-linux", "lib")):
        if os.path.exists(os.path.join(lib_dir, "libcudart_static.a")):
            break
    else:
        return None, None, f"libcudart_static.a not found under {root}"
    if not os.path.exists(header):
        return None, None, f"{header} not found"
    return root, nvcc, lib_dir


def gencode_flags(archs):
    """``-gencode`` flags: SASS for each architecture, PTX of the newest."""
    codes = [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]
    if not codes or not all(re.fullmatch(r"\d+[af]?", c) for c in codes):
        raise SystemExit(f"spikecore: SPIKECORE_CUDA_ARCHS must look like '80;90', got {archs!r}")
    flags = []
    for c in codes:
        flags += ["-gencode", f"arch=compute_{c},code=sm_{c}"]
    newest = max(codes, key=lambda c: int(re.match(r"\d+", c).group()))
    flags += ["-gencode", f"arch=compute_{newest},code=compute_{newest}"]
    return flags


_TOOLKIT = {}


def extensions(include_dir):
    """The CUDA Extension, or [] (with one line saying why) when it is not to be built."""
    from setuptools import Extension

    if _flag("SPIKECORE_NO_CUDA"):
        _say("SPIKECORE_NO_CUDA is set: building the CPU backend only.")
        return []
    root, nvcc, lib_dir = find_toolkit()
    if root is None:
        if _flag("SPIKECORE_REQUIRE_CUDA"):
            raise SystemExit(f"spikecore: SPIKECORE_REQUIRE_CUDA is set but {lib_dir}")
        _say(f"no CUDA toolkit ({lib_dir}): building the CPU backend only.")
        return []
    archs = os.environ.get("SPIKECORE_CUDA_ARCHS", DEFAULT_ARCHS)
    _TOOLKIT.update(root=root, nvcc=nvcc, gencode=gencode_flags(archs))
    _say(f"building the CUDA backend with {nvcc} (toolkit {root}) for sm {archs}.")
    return [Extension(
        "spikecore._cuda_kernels",
        ["cuda/cuda_kernels.pyx", "cuda/neuron_kernels.cu"],
        include_dirs=[include_dir, "cuda", os.path.join(root, "include")],
        library_dirs=[lib_dir],
        libraries=["cudart_static", "rt", "pthread", "dl"],
        language="c++",
        extra_compile_args=["-O2", "-std=c++17"],
    )]


def prepare_compiler(compiler, extensions):
    """Teach the compiler instance to send ``.cu`` files to nvcc."""
    if not _TOOLKIT or not any(e.name == "spikecore._cuda_kernels" for e in extensions):
        return
    if ".cu" not in compiler.src_extensions:
        compiler.src_extensions = compiler.src_extensions + [".cu"]
    default_compile = compiler._compile

    def _compile(obj, src, ext, cc_args, extra_postargs, pp_opts):
        if not src.endswith(".cu"):
            return default_compile(obj, src, ext, cc_args, extra_postargs, pp_opts)
        includes = [a for a in pp_opts if a.startswith(("-I", "-D", "-U"))]
        cmd = [_TOOLKIT["nvcc"], "-c", src, "-o", obj] + includes + NVCC_FLAGS + \
            _TOOLKIT["gencode"]
        compiler.spawn(cmd)

    compiler._compile = _compile
