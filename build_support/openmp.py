"""Compile-and-link probe for OpenMP support in the active C++ compiler."""
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


def probe_openmp(compiler):
    """True when ``compiler`` can compile and link a tiny OpenMP program with ``-fopenmp``."""
    tmp = tempfile.mkdtemp(prefix="spikecore-omp-")
    try:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(_PROBE)
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=["-fopenmp"])
        compiler.link_executable(objs, "probe", output_dir=tmp, extra_postargs=["-fopenmp"],
                                 target_lang="c++")
        return True
    except (CompileError, LinkError, OSError):
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
