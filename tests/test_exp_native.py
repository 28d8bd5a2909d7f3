"""The kernels' own float exp, checked in C against exp() in double (tests/native/check_exp.cpp).
The Python-level accuracy test is in test_surrogate.py; this one sweeps the float32 inputs."""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="needs a C++ compiler (the one that builds spikecore)")
def test_sc_expf_within_one_ulp(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    exe = tmp_path / "check_exp"
    subprocess.run([cxx, "-O2", "-ffp-contract=off", "-I", os.path.join(ROOT, "include"),
                    os.path.join(ROOT, "tests", "native", "check_exp.cpp"), "-o", str(exe)],
                   check=True, capture_output=True, text=True)
    run = subprocess.run([str(exe), "4099"], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "worst error 0 ulp" in run.stdout or "worst error 1 ulp" in run.stdout
