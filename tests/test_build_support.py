"""The CUDA side of the build (build_support/cuda.py) without a toolkit: the -gencode flags, the
default architectures cut to what the toolkit's nvcc knows (a stand-in nvcc script answers
``--list-gpu-arch``), toolkit discovery, and a failed CUDA compile leaving the CPU build
installed."""
import os
import stat
import sys

import pytest
from setuptools.errors import CompileError

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from build_support import cuda  # noqa: E402


def _pairs(flags):
    assert flags[::2] == ["-gencode"] * (len(flags) // 2)
    return flags[1::2]


def test_gencode_sass_for_each_and_ptx_of_the_newest_and_oldest():
    assert _pairs(cuda.gencode_flags("80;90;75")) == [
        "arch=compute_80,code=sm_80", "arch=compute_90,code=sm_90",
        "arch=compute_75,code=sm_75",
        "arch=compute_75,code=compute_75", "arch=compute_90,code=compute_90"]
    assert _pairs(cuda.gencode_flags(" 90 ")) == ["arch=compute_90,code=sm_90",
                                                  "arch=compute_90,code=compute_90"]
    # an arch-specific target runs on its own GPU only, so the PTX comes from a plain one
    assert _pairs(cuda.gencode_flags("90a,100")) == [
        "arch=compute_90a,code=sm_90a", "arch=compute_100,code=sm_100",
        "arch=compute_100,code=compute_100"]


@pytest.mark.parametrize("bad", ["", "sm_90", "90;x", "9.0"])
def test_gencode_rejects_a_malformed_list(bad):
    with pytest.raises(SystemExit, match="SPIKECORE_CUDA_ARCHS must look like"):
        cuda.gencode_flags(bad)


def _fake_nvcc(tmp_path, listing, rc=0):
    nvcc = tmp_path / "nvcc"
    nvcc.write_text("#!/bin/sh\n"
                    f"[ \"$1\" = --list-gpu-arch ] && printf '{listing}' && exit {rc}\n"
                    "exit 1\n")
    nvcc.chmod(nvcc.stat().st_mode | stat.S_IXUSR)
    return str(nvcc)


def test_default_archs_keep_what_nvcc_knows(tmp_path, capsys):
    # a CUDA 12.4-like toolkit: no Blackwell targets
    nvcc = _fake_nvcc(tmp_path, "compute_50\\ncompute_75\\ncompute_80\\ncompute_86\\n"
                                "compute_89\\ncompute_90\\n")
    assert cuda.known_archs(nvcc) == {"50", "75", "80", "86", "89", "90"}
    assert cuda.default_archs(nvcc) == "75;80;86;89;90"
    assert "cannot compile for sm 100;120" in capsys.readouterr().out


def test_default_archs_when_nvcc_knows_all_none_or_cannot_say(tmp_path, capsys):
    every = "".join(f"compute_{a}\\n" for a in cuda.DEFAULT_ARCHS.split(";"))
    assert cuda.default_archs(_fake_nvcc(tmp_path, every)) == cuda.DEFAULT_ARCHS
    assert capsys.readouterr().out == ""
    assert cuda.default_archs(_fake_nvcc(tmp_path, "compute_35\\ncompute_50\\n")) is None
    # an nvcc without --list-gpu-arch: keep the list (the compile then says what is wrong)
    assert cuda.known_archs(_fake_nvcc(tmp_path, "", rc=1)) is None
    assert cuda.default_archs(_fake_nvcc(tmp_path, "", rc=1)) == cuda.DEFAULT_ARCHS
    assert cuda.known_archs(str(tmp_path / "missing-nvcc")) is None


def test_find_toolkit_from_cuda_home(tmp_path, monkeypatch):
    root = tmp_path / "cuda"
    monkeypatch.setenv("CUDA_HOME", str(root))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    assert cuda.find_toolkit() == (None, None, f"CUDA_HOME/CUDA_PATH={root} has no bin/nvcc")
    (root / "bin").mkdir(parents=True)
    nvcc = _fake_nvcc(root / "bin", "")
    assert "libcudart_static.a not found" in cuda.find_toolkit()[2]
    (root / "lib64").mkdir()
    (root / "lib64" / "libcudart_static.a").write_bytes(b"")
    assert cuda.find_toolkit()[2].endswith("cuda_runtime_api.h not found")
    (root / "include").mkdir()
    (root / "include" / "cuda_runtime_api.h").write_text("")
    assert cuda.find_toolkit() == (str(root), nvcc, str(root / "lib64"))


def test_a_failed_cuda_build_leaves_the_cpu_build(monkeypatch, capsys):
    def failing(ext):
        raise CompileError("nvcc fatal: Unsupported gpu architecture 'compute_120'")

    monkeypatch.delenv("SPIKECORE_REQUIRE_CUDA", raising=False)
    assert cuda.build_guarded(failing, "ext") is False
    out = capsys.readouterr().out
    assert "the CUDA backend failed to build (nvcc fatal: Unsupported gpu" in out
    assert "installing the CPU backend only" in out
    built = []
    assert cuda.build_guarded(built.append, "ext") is True and built == ["ext"]
    monkeypatch.setenv("SPIKECORE_REQUIRE_CUDA", "1")
    with pytest.raises(CompileError, match="Unsupported gpu architecture"):
        cuda.build_guarded(failing, "ext")


class _Compiler:
    """Accepts the flags in ``known`` only, as a compiler for another architecture would."""

    def __init__(self, known):
        self.known, self.tried = set(known), []

    def compile(self, sources, output_dir, extra_postargs):
        self.tried.append([f for f in extra_postargs if f != "-Werror"])
        if not set(self.tried[-1]) <= self.known:
            raise CompileError(f"unrecognized command-line option {extra_postargs[0]!r}")
        return [os.path.join(output_dir, "probe.o")]

    def link_executable(self, objs, name, output_dir, extra_postargs, target_lang):
        pass


@pytest.mark.parametrize("known, chosen", [
    ({"-march=native", "-mprefer-vector-width=512"}, ["-march=native",
                                                      "-mprefer-vector-width=512"]),   # x86
    ({"-march=native"}, ["-march=native"]),        # a compiler without the x86 width option
    ({"-mcpu=native"}, ["-mcpu=native"]),          # Arm and POWER
    (set(), []),                                   # none: the baseline instruction set
])
def test_native_flags_are_the_first_set_the_compiler_takes(known, chosen):
    from build_support.openmp import NATIVE_FLAGS, probe_native
    compiler = _Compiler(known)
    assert probe_native(compiler) == chosen
    assert compiler.tried == list(NATIVE_FLAGS[:len(compiler.tried)])
