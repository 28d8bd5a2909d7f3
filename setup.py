"""Build script for spikecore's compiled backends.

* ``pyx/`` (Cython + OpenMP, the CPU backend) is always built. The compiler is probed for
  OpenMP first; without it the kernels are built serially and a warning is printed.
  ``SPIKECORE_NO_OPENMP=1`` forces the serial build.
* ``cuda/`` (the CUDA backend) is built only where a CUDA toolkit is found; see
  ``build_support/cuda.py``.
* The CPU kernels are compiled for the building machine's instruction set (``-march=native``:
  AVX2/AVX-512 where present; ``-mcpu=native`` on Arm), since vectorisation decides their speed.
  ``SPIKECORE_PORTABLE=1`` builds for the baseline of the architecture instead (a wheel that
  must run on older CPUs); it gives the same results, only slower.

Every kernel is compiled without floating-point contraction and without fast-math so that its
forward arithmetic is bit-identical to PyTorch's (see include/spikecore_math.h).
"""
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_support import cuda as cuda_support  # noqa: E402
from build_support.openmp import probe_native, probe_openmp  # noqa: E402

INCLUDE = os.path.join("include")

# -fno-trapping-math / -fno-math-errno let the float compare and exp vectorise without
# changing any value; -ffp-contract=off keeps a*b+c from becoming an FMA (bit parity).
CPU_FLAGS = ["-O3", "-std=c++17", "-fno-trapping-math", "-fno-math-errno", "-ffp-contract=off"]


class BuildExt(build_ext):
    """build_ext that probes OpenMP and compiles ``.cu`` sources with nvcc."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:   # (no -j given) the CPU and CUDA modules compile side by side
            self.parallel = True

    def build_extensions(self):
        use_openmp = os.environ.get("SPIKECORE_NO_OPENMP", "") not in ("1", "true", "yes")
        if use_openmp and not probe_openmp(self.compiler):
            print("WARNING: spikecore: the C++ compiler does not support OpenMP; "
                  "building the CPU kernels serially (one thread).", flush=True)
            use_openmp = False
        elif not use_openmp:
            print("WARNING: spikecore: SPIKECORE_NO_OPENMP is set; building the CPU kernels "
                  "serially (one thread).", flush=True)
        portable = os.environ.get("SPIKECORE_PORTABLE", "") in ("1", "true", "yes")
        isa = [] if portable else probe_native(self.compiler)
        target = ("the baseline ISA (portable)" if portable else
                  f"this machine ({' '.join(isa)})" if isa else
                  "the baseline ISA (the compiler takes no native flag)")
        print(f"spikecore: CPU kernels built for {target}", flush=True)
        for ext in self.extensions:
            if ext.name == "spikecore._cpu_kernels":
                ext.extra_compile_args = ext.extra_compile_args + isa
                if use_openmp:
                    ext.extra_compile_args = ext.extra_compile_args + ["-fopenmp"]
                    ext.extra_link_args = ext.extra_link_args + ["-fopenmp"]
        stamp, flags = self._rebuild_if_flags_changed()
        cuda_support.prepare_compiler(self.compiler, self.extensions)
        self._left_out = set()
        super().build_extensions()
        # an extension left out must not be copied or installed afterwards
        self.extensions = [e for e in self.extensions if e.name not in self._left_out]
        os.makedirs(self.build_temp, exist_ok=True)
        with open(stamp, "w") as f:   # only once the build succeeded
            f.write(flags)

    def build_extension(self, ext):
        if ext.name != cuda_support.MODULE:
            super().build_extension(ext)
        elif not cuda_support.build_guarded(super().build_extension, ext):
            self._left_out.add(ext.name)

    def run(self):
        super().run()   # (setuptools builds in build/ and copies in place afterwards)
        self._drop_stale_cuda_module()

    def _drop_stale_cuda_module(self):
        """An in-place build (``pip install -e .``) without the CUDA module, skipped or left out,
        must not leave an earlier build's module next to the new CPU one: the package would
        load it."""
        if not self.inplace or any(e.name == cuda_support.MODULE for e in self.extensions):
            return
        path = self.get_ext_fullpath(cuda_support.MODULE)
        if os.path.exists(path):
            os.remove(path)
            print(f"spikecore: removed {path}, the CUDA module of an earlier build", flush=True)

    def _rebuild_if_flags_changed(self):
        """Switching SPIKECORE_PORTABLE, SPIKECORE_NO_OPENMP or SPIKECORE_CUDA_ARCHS changes
        only compiler flags, which setuptools does not track: objects newer than their sources
        would be reused and the old variant installed silently. Compare the flags with those of
        the last successful build and force a rebuild when they differ. Returns the stamp file
        and the flags to write into it after the build."""
        cpu = next(e for e in self.extensions if e.name == "spikecore._cpu_kernels")
        flags = " ".join(cpu.extra_compile_args + cpu.extra_link_args
                         + ["cuda-archs=" + cuda_support.chosen_archs()])
        stamp = os.path.join(self.build_temp, "spikecore-flags.txt")
        old = None
        if os.path.exists(stamp):
            with open(stamp) as f:
                old = f.read()
        if old is not None and old != flags:
            print("spikecore: compiler flags changed since the last build; rebuilding", flush=True)
            self.force = self.compiler.force = True
        return stamp, flags


def extensions():
    from Cython.Build import cythonize

    exts = [
        Extension(
            "spikecore._cpu_kernels",
            ["pyx/cpu_kernels.pyx"],
            include_dirs=[INCLUDE],
            language="c++",
            extra_compile_args=list(CPU_FLAGS),
        )
    ]
    exts += cuda_support.extensions(INCLUDE)
    return cythonize(exts, compiler_directives={"language_level": 3})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
