"""Smoke tests of the CPU benchmark scripts: each runs with tiny sizes, exits 0 and prints its
table and its correctness checks. Nothing here asserts speed."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")

import spikecore._cpu_kernels  # noqa: E402,F401  (a broken build must fail here, not skip)


def _run(*args, env=None, timeout=120):
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    p = subprocess.run(list(args), capture_output=True, text=True, cwd=ROOT, env=full_env,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout, p.stderr


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark script as a module; torch's thread count and OMP_NUM_THREADS (which
    the scripts set) are restored afterwards."""
    import importlib

    import torch
    monkeypatch.syspath_prepend(BENCH)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    threads = torch.get_num_threads()
    yield importlib.import_module
    torch.set_num_threads(threads)


TINY = ["--steps", "3", "--neurons", "512", "--repeat", "2", "--threads", "1", "--no-compile",
        "--no-peers", "--overhead-calls", "5"]


def _check_neuron_output(out, prealloc):
    assert "median ms" in out and "x floor" in out and "speed-up" in out
    assert "copy bandwidth" in out
    assert "plain PyTorch loop: spikes equal" in out
    assert "SPIKES DIFFER" not in out
    assert "us per call" in out
    if prealloc:
        assert "spikecore kernels (prealloc)" in out and "spikecore e2e: spikes equal" in out


def test_bench_neuron_script():
    """The script as a program: exit status 0 and its table."""
    out, _ = _run(sys.executable, os.path.join(BENCH, "bench_neuron.py"), *TINY, "--prealloc")
    _check_neuron_output(out, True)


@pytest.mark.parametrize("extra", [
    ["--pass", "inference", "--neuron", "if"],
    ["--mode", "single", "--prealloc", "--threads", "2"],
    ["--mode", "single", "--pass", "inference", "--dtype", "float64"],
])
def test_bench_neuron_options(bench, capsys, extra):
    assert bench("bench_neuron").main(TINY + extra) == 0
    _check_neuron_output(capsys.readouterr().out, "--prealloc" in extra)


@pytest.mark.parametrize("extra", [[], ["--per-step-input"], ["--optimizer", "torch-fused"]])
def test_bench_train(bench, capsys, extra):
    assert bench("bench_train").main(["--epochs", "1", "--warmup", "0", "--max-batches", "2",
                                      "--hidden", "16", "--threads", "1", "--no-peers",
                                      "--bare"] + extra) == 0
    out = capsys.readouterr().out
    assert "epoch ms" in out and "speed-up" in out and "paired" in out
    assert ("input copied per step" in out) == ("--per-step-input" in extra)
    assert f"Adam ({extra[1] if '--optimizer' in extra else 'spikecore'})" in out
    own = next(ln for ln in out.splitlines() if ln.startswith("spikecore nodes  "))
    assert own.split()[-3:-1] == ["1.00", "1.00"]   # against itself, both ways of the ratio
    for name in ("plain PyTorch loop", "diagnostic: kernels in a bare Function"):
        # same spikes and bit-equal weight gradients before training, same weights after
        assert f"{name}: spikes of every layer equal vs spikecore; max |weight grad diff| " \
               "0.0e+00" in out
        assert f"{name}: max |weight diff| vs spikecore after training 0.0e+00" in out


def test_bench_train_plif(bench, capsys):
    assert bench("bench_train").main(["--epochs", "1", "--warmup", "0", "--max-batches", "2",
                                      "--hidden", "16", "--threads", "1", "--no-peers",
                                      "--neuron", "plif", "--bare"]) == 0
    out = capsys.readouterr().out
    assert "PLIF nodes" in out and "bare Function: skipped (LIF only)" in out
    # the plain loop learns the same w through autograd: same spikes, gradients to rounding
    line = next(ln for ln in out.splitlines()
                if ln.startswith("  plain PyTorch loop: spikes of every layer equal"))
    assert float(line.split("(rel ")[1].rstrip(")")) < 1e-5


@pytest.mark.parametrize("extra", [[], ["--per-step-input"]])
def test_step_breakdown(bench, capsys, extra):
    assert bench("step_breakdown").main(["--rounds", "1", "--batches", "2", "--hidden",
                                         "16"] + extra) == 0
    out = capsys.readouterr().out
    for name in ("identity", "Function without kernel", "bare kernel Function",
                 "spikecore nodes", "plain PyTorch loop"):
        assert name in out
    assert "3x over the plain loop allows" in out


def test_step_breakdown_profile(bench, capsys):
    """The profile's levels nest (each includes the ones below it) and every timer is removed
    afterwards."""
    from spikecore import autograd, backends, cpu_backend, nodes
    before = (dict(nodes.BaseNode.__dict__), dict(autograd.PlannedNeuronFunction.__dict__),
              dict(cpu_backend._CPUPlan.__dict__), backends.get("cpu")._entry)
    assert bench("step_breakdown").main(["--rounds", "1", "--batches", "3", "--hidden", "16",
                                         "--profile"]) == 0
    after = (dict(nodes.BaseNode.__dict__), dict(autograd.PlannedNeuronFunction.__dict__),
             dict(cpu_backend._CPUPlan.__dict__), backends.get("cpu")._entry)
    assert after == before
    lines = capsys.readouterr().out.split("inside spikecore's neuron layers")[1].splitlines()
    us = {ln.strip().rsplit(None, 1)[0]: float(ln.rsplit(None, 1)[1]) for ln in lines[3:10]}
    forward = [us["node call (nn.Module, state)"], us["autograd Function apply"],
               us["plan forward (outputs, buffers, kernel)"], us["forward kernel"]]
    backward = [us["Function backward"], us["plan backward (outputs, buffers, kernel)"],
                us["backward kernel"]]
    for chain in (forward, backward):
        assert chain[-1] > 0 and chain == sorted(chain, reverse=True)


def test_half_calls(bench, capsys):
    assert bench("half_calls").main(["--repeat", "1", "--number", "3", "--warmup", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[3:]
    assert [r.split("|")[1].strip() for r in rows] == ["float32", "bfloat16", "float16"]
    assert all(float(v) > 0 for r in rows for v in r.split("|")[2:4])


def test_stream_threshold(bench, capsys):
    """Both tables print, and the kernels' threshold is restored afterwards."""
    from spikecore import _cpu_kernels
    before = _cpu_kernels.stream_min_bytes()
    assert bench("stream_threshold").main(["--mib", "0.1", "2", "--repeat", "1", "--threads",
                                           "1", "--mlp", "16"]) == 0
    assert _cpu_kernels.stream_min_bytes() == before
    out = capsys.readouterr().out
    assert "no stream ms" in out and "streams by default" in out
    assert "training steps, MLP 784-H-H-H-10" in out


@pytest.mark.skipif(shutil.which("sh") is None or shutil.which("env") is None,
                    reason="needs a POSIX shell")
def test_run_with_allocator():
    script = os.path.join(BENCH, "run_with_allocator.sh")
    out, err = _run("sh", script, "env")
    assert "run_with_allocator:" in err
    if "jemalloc (" in err:
        assert "jemalloc" in out and "MALLOC_CONF=" in out
        assert "THP_MEM_ALLOC_ENABLE=1" in out.splitlines()   # huge pages only with jemalloc
    out, err = _run("sh", script, "env", env={"SPIKECORE_NO_JEMALLOC": "1", "LD_PRELOAD": "",
                                               "THP_MEM_ALLOC_ENABLE": ""})
    assert "default allocator" in err and "jemalloc" not in out
    assert "THP_MEM_ALLOC_ENABLE=1" not in out.splitlines()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_bench_gpu_candidates_on_the_cuda_emulation(bench, cuda_host, dtype):
    """benchmarks/bench_gpu.py's candidates and its spike check, built and run once on the host
    emulation of the CUDA kernels (tests/cuda_emulation.py), so a GPU session does not meet a
    broken script; the timing itself needs CUDA events."""
    import torch
    bench_gpu = bench("bench_gpu")
    dtype = getattr(torch, dtype)
    before = cuda_host.last_launch()[0]
    candidates, check, item = bench_gpu.make_case(4, dtype, n=4096, device="cpu",
                                                  backend="cuda-host-emulation")
    assert list(candidates) == ["spikecore", "kernels only", "pytorch loop"]
    assert item == torch.tensor([], dtype=dtype).element_size()
    for run in candidates.values():
        run()
    check()
    assert cuda_host.last_launch()[0] == before + 5   # node: 2, kernels only: 2, check: 1


def test_bench_gpu_main_on_the_cuda_emulation(bench, cuda_host, monkeypatch, capsys):
    """bench_gpu.py's whole report, with the emulated kernels, CPU tensors and a CPU clock in
    place of the device and CUDA events: every case and candidate (the back-to-back rows
    included) reaches the table."""
    import functools
    import time

    import torch
    bench_gpu = bench("bench_gpu")
    def cpu_time(fn, repeat, warmup=3):
        samples = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        return samples

    monkeypatch.setattr(bench_gpu, "N", 512)
    monkeypatch.setattr(bench_gpu, "time_cuda", cpu_time)
    monkeypatch.setattr(bench_gpu, "copy_bandwidth", lambda: 1e10)
    monkeypatch.setattr(bench_gpu, "make_case", functools.partial(
        bench_gpu.make_case, n=512, device="cpu", backend="cuda-host-emulation"))
    monkeypatch.setattr(bench_gpu.spikecore, "cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "emulated")
    monkeypatch.setattr(sys, "argv", ["bench_gpu.py", "--repeat", "2", "--no-compile"])
    before = cuda_host.last_launch()[0]
    bench_gpu.main()
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("T=")]
    assert len(rows) == 4 * 5   # 4 cases x (spikecore, kernels, loop, 2 back-to-back rows)
    assert sum("10 in a row" in r for r in rows) == 8
    # per case: 2 samples of 3 single candidates, 2 of 10 calls of the node and of the kernels,
    # 2 launches each; the spike check launches once
    assert cuda_host.last_launch()[0] - before == 4 * (2 * 2 + 2 * 2 + 2 * 10 * 2 * 2 + 1)


def test_profile_node_on_the_cuda_emulation(bench, cuda_host, capsys):
    """benchmarks/profile_node.py's report for one case on the host emulation (CPU tensors, no
    device times): the node, its kernels and PyTorch's one-op floor each get a host time, and the
    profiler's table names the node's autograd Function; the kernels launch as often as the
    calls made. The script's CPU mode runs end to end."""
    import torch
    profile_node = bench("profile_node")
    before = cuda_host.last_launch()[0]
    profile_node.report(4, torch.float16, 3, n=1024, device="cpu",
                        backend="cuda-host-emulation")
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if " host " in line]
    assert [r.split(" host ")[0].strip() for r in rows] == [
        "spikecore", "kernels only", "autograd, x * 1", "idle Function"]
    assert all(float(r.split()[-2]) > 0 and "device" not in r for r in rows)   # CPU: no events
    assert "PlannedNeuronFunction" in out
    # the check: 1; 3 timed calls of the node and of the kernels, 2 launches each; the
    # profiled node call and its warm-up, 2 each
    assert cuda_host.last_launch()[0] - before == 1 + 3 * 2 + 3 * 2 + 2 * 2
    out, _ = _run(sys.executable, os.path.join(BENCH, "profile_node.py"), "--device", "cpu",
                  "--neurons", "64", "--repeat", "20")
    assert out.count(" host ") == 4 and "float16" not in out and "PlannedNeuronFunction" in out
