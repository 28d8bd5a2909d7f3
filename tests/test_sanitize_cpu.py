"""The CPU kernels' tests, run again on a build with AddressSanitizer and UBSan
(tests/native/sanitize_cpu.sh, also `make sanitize`): an out-of-bounds read or write, a
misaligned access or other undefined behaviour in pyx/ fails this test with the sanitizer's
report. About three minutes on two cores."""
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

import cuda_emulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "native", "sanitize_cpu.sh")


def test_cpu_kernels_under_sanitizers(tmp_path):
    cuda_emulation.require_sanitizers(str(tmp_path))
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("the script copies the files of a git checkout")
    if importlib.util.find_spec("Cython") is None or importlib.util.find_spec("setuptools") is None:
        pytest.skip("building the kernels needs Cython and setuptools (pip install -e '.[test]')")
    run = subprocess.run(["bash", SCRIPT], capture_output=True, text=True, timeout=1800,
                         env=dict(os.environ, PYTHON=sys.executable))
    report = (run.stdout + run.stderr)[-6000:]
    assert run.returncode == 0, report
    assert re.search(r"\b\d+ passed", run.stdout) and " failed" not in run.stdout, report
    assert "ERROR: AddressSanitizer" not in report and "runtime error" not in report, report
