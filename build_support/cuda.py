"""CUDA toolkit discovery and nvcc integration for setup.py (no PyTorch C++ extension).

* The toolkit is found from ``CUDA_HOME``/``CUDA_PATH``, else from ``nvcc`` on PATH. Because
  that nvcc may be a wrapper script, the root is read from the ``#$ TOP=`` line that
  ``nvcc --dryrun`` prints. The build checks that ``cuda_runtime_api.h`` and
  ``libcudart_static.a`` exist.
* ``SPIKECORE_NO_CUDA=1`` skips the CUDA module; ``SPIKECORE_REQUIRE_CUDA=1`` makes a missing
  toolkit, or a CUDA build that fails, an error; ``SPIKECORE_CUDA_ARCHS="80;90"`` replaces the
  default architectures, of which the build keeps those the toolkit's nvcc knows
  (``nvcc --list-gpu-arch``: a CUDA 12.4 toolkit, say, knows neither 100 nor 120).
* Without ``SPIKECORE_REQUIRE_CUDA`` a CUDA module that fails to compile or link is left out
  with a warning, and the CPU backend is installed all the same.
* ``.cu`` sources are routed to nvcc by wrapping the compiler's ``_compile``; cudart is linked
  statically and the extension is linked as C++, so the module needs no libcudart at run time
  and keeps its CUDA runtime symbols apart from torch's.
"""
import os
import re
import shutil
import subprocess

try:
    from setuptools.errors import CCompilerError, ExecError
except ImportError:   # setuptools before 59 (an offline machine's own, under --no-build-isolation)
    from distutils.errors import CCompilerError, DistutilsExecError as ExecError

# T4/RTX 20, A100, RTX 30, RTX 40, H100/H200, B200, RTX 50; PTX of the newest and the oldest
# (see gencode_flags).
DEFAULT_ARCHS = "75;80;86;89;90;100;120"
#: the CUDA extension module
MODULE = "spikecore._cuda_kernels"
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


def _arch_number(code):
    return int(re.match(r"\d+", code).group())


def gencode_flags(archs):
    """``-gencode`` flags: SASS for each architecture, and PTX of the newest (which the driver
    compiles for later GPUs) and of the oldest (for a GPU between the listed ones whose SASS
    none of them runs, e.g. compute capability 11.0 beside 100 and 120)."""
    codes = [a.strip() for a in archs.replace(",", ";").split(";") if a.strip()]
    if not codes or not all(re.fullmatch(r"\d+[af]?", c) for c in codes):
        raise SystemExit(f"spikecore: SPIKECORE_CUDA_ARCHS must look like '80;90', got {archs!r}")
    flags = []
    for c in codes:
        flags += ["-gencode", f"arch=compute_{c},code=sm_{c}"]
    # PTX of an arch-specific target (90a) runs on that GPU only: use the plain ones
    plain = [c for c in codes if c.isdigit()] or codes
    for c in sorted({max(plain, key=_arch_number), min(plain, key=_arch_number)},
                    key=_arch_number):
        flags += ["-gencode", f"arch=compute_{c},code=compute_{c}"]
    return flags


def known_archs(nvcc):
    """The architectures ``nvcc --list-gpu-arch`` names (``{'75', '80', ...}``), or None when
    this nvcc cannot list them."""
    try:
        out = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True,
                             timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    found = set(re.findall(r"compute_(\d+[af]?)", out.stdout))
    return found if out.returncode == 0 and found else None


def default_archs(nvcc):
    """:data:`DEFAULT_ARCHS` less the architectures this nvcc does not know (one line names
    them), or None when it knows none of them."""
    wanted = DEFAULT_ARCHS.split(";")
    known = known_archs(nvcc)
    if known is None:
        return DEFAULT_ARCHS
    kept = [a for a in wanted if a in known]
    dropped = [a for a in wanted if a not in known]
    if dropped:
        _say(f"{nvcc} cannot compile for sm {';'.join(dropped)}: left out of the default "
             "architectures (a newer CUDA toolkit adds them)")
    return ";".join(kept) or None


#: what a failed compile or link of the CUDA module raises inside build_ext
BUILD_ERRORS = (CCompilerError, ExecError, OSError)


def build_guarded(build_one, ext):
    """``build_one(ext)`` (build_ext.build_extension) for the CUDA module: a failure leaves the
    module out with a warning, unless ``SPIKECORE_REQUIRE_CUDA`` is set. Returns whether it was
    built."""
    try:
        build_one(ext)
    except BUILD_ERRORS as exc:
        if _flag("SPIKECORE_REQUIRE_CUDA"):
            raise
        print(f"WARNING: spikecore: the CUDA backend failed to build ({exc}); installing the "
              "CPU backend only. Set SPIKECORE_CUDA_ARCHS to architectures your toolkit "
              "supports, or SPIKECORE_NO_CUDA=1 to skip it, or SPIKECORE_REQUIRE_CUDA=1 to "
              "make this an error.", flush=True)
        return False
    return True


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
    archs = os.environ.get("SPIKECORE_CUDA_ARCHS") or default_archs(nvcc)
    if archs is None:
        if _flag("SPIKECORE_REQUIRE_CUDA"):
            raise SystemExit(f"spikecore: SPIKECORE_REQUIRE_CUDA is set but {nvcc} knows none "
                             f"of the default architectures {DEFAULT_ARCHS}; set "
                             "SPIKECORE_CUDA_ARCHS")
        _say(f"{nvcc} knows none of the default architectures {DEFAULT_ARCHS}: building the "
             "CPU backend only (set SPIKECORE_CUDA_ARCHS to build the CUDA one).")
        return []
    _TOOLKIT.update(root=root, nvcc=nvcc, archs=archs, gencode=gencode_flags(archs))
    _say(f"building the CUDA backend with {nvcc} (toolkit {root}) for sm {archs}.")
    return [Extension(
        MODULE,
        ["cuda/cuda_kernels.pyx", "cuda/neuron_kernels.cu"],
        include_dirs=[include_dir, "cuda", os.path.join(root, "include")],
        library_dirs=[lib_dir],
        libraries=["cudart_static", "rt", "pthread", "dl"],
        language="c++",
        extra_compile_args=["-O2", "-std=c++17"],
    )]


def prepare_compiler(compiler, extensions):
    """Teach the compiler instance to send ``.cu`` files to nvcc."""
    if not _TOOLKIT or not any(e.name == MODULE for e in extensions):
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


def chosen_archs():
    """The architectures this build compiles the CUDA module for ('' without one)."""
    return _TOOLKIT.get("archs", "")
