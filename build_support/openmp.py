"""Compile-and-link probes of the active C++ compiler: OpenMP, and the instruction-set flags of
a native build (x86's ``-march=native`` is ``-mcpu=native`` on Arm and POWER, and
``-mprefer-vector-width`` exists on x86 only)."""
import os
import shutil
import tempfile

from distutils.errors import CompileError, LinkError  # setuptools vendors distutils

_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return n > 0 ? 0 : 1;
}
"""


def _builds(compiler, source, flags):
    """True when ``compiler`` compiles and links ``source`` with ``flags``."""
    tmp = tempfile.mkdtemp(prefix="spikecore-probe-")
    try:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(source)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=flags,
                                 target_lang="c++")
        return True
    except (CompileError, LinkError, OSError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def probe_openmp(compiler):
    """True when ``compiler`` can compile and link a tiny OpenMP program with ``-fopenmp``."""
    return _builds(compiler, _PROBE, ["-fopenmp"])


#: the flags of a native build, by preference: the first set the compiler accepts is used
NATIVE_FLAGS = (["-march=native", "-mprefer-vector-width=512"],   # x86: AVX-512 at full width
                ["-march=native"],
                ["-mcpu=native"])                                 # Arm, POWER


def probe_native(compiler):
    """The first of :data:`NATIVE_FLAGS` that ``compiler`` accepts, or [] (baseline ISA)."""
    for flags in NATIVE_FLAGS:
        if _builds(compiler, "int main(void) { return 0; }\n", flags + ["-Werror"]):
            return flags
    return []
