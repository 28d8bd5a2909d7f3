"""The launch shapes of benchmarks/cuda_variants.py compute what the default shape computes.

Each variant of cuda/neuron_kernels.cu (other SPIKECORE_CUDA_UNROLL / SPIKECORE_CUDA_GROUP_BYTES
values) is built for the host emulation (tests/cuda_emulation.py) and driven through the ctypes
layer of the benchmark script, the one a GPU session times. Every output must equal the
default build's bit for bit, over both kernel paths (grouped and one neuron a thread), aligned
and misaligned buffers, step counts that are and are not multiples of the unroll, both
backward routes and the ParametricLIF backward; and the launch must show the variant's group
size, so a macro that does not take effect fails too.
"""
import ctypes
import math
import os
import subprocess
import sys

import pytest
import torch

import cuda_emulation
from spikecore.config import NeuronConfig

sys.path.insert(0, os.path.join(cuda_emulation.ROOT, "benchmarks"))
import cuda_variants  # noqa: E402

#: the named variants, and two written as specs: an unroll that divides no step count here
VARIANTS = [v for v in cuda_variants.VARIANTS if v != "default"] + ["u3g4b1", "u3g16b1p"]
CONFIGS = {
    "LIF hard ATan": NeuronConfig.build("LIF", 1.0, 0.0, 0.5, False, 2.0, "ATan", False),
    "IF soft Sigmoid detach_reset": NeuronConfig.build("IF", 0.8, None, None, False, 4.0,
                                                       "Sigmoid", True),
    "LIF detach_input hard PiecewiseExp": NeuronConfig.build("LIF", 0.6, -0.1, 1 / 3, True, 3.0,
                                                             "PiecewiseExp", False),
}


@pytest.fixture(scope="module", params=VARIANTS)
def variant(request, tmp_path_factory):
    """(name, backend): the variant built for the host, with a fresh emulated runtime."""
    if cuda_emulation.compiler() is None:
        pytest.skip("the host emulation of the CUDA kernels needs a C++ compiler (g++)")
    name = request.param
    lib = cuda_emulation.build_library(str(tmp_path_factory.mktemp(name)),
                                       cuda_variants.defines(name), name.replace("-", "_"))
    kernels = cuda_variants.LibraryKernels(lib)
    kernels.lib.sc_host_reset.argtypes = [ctypes.c_int, ctypes.c_int]
    kernels.lib.sc_host_reset(cuda_emulation.DEVICES, cuda_emulation.CALLER_DEVICE)
    return name, cuda_emulation.EmulatedCUDABackend(kernels)


def _group_bytes(name):
    return cuda_variants.macros(name).get("SPIKECORE_CUDA_GROUP_BYTES", 16)


def _buffer(steps, n, dtype, misaligned, gen, scale=1.5, shift=0.0):
    """A contiguous [steps, n] tensor, starting one element past an aligned address when
    ``misaligned``."""
    flat = torch.empty(steps * n + 1, dtype=torch.float32)
    flat.uniform_(shift, shift + scale, generator=gen)
    flat = flat.to(dtype)
    return (flat[1:] if misaligned else flat[:-1]).view(steps, n)


def _run_everything(backend, cfg, x, v, g, gv, steps):
    """Every kernel the variants change, as one flat list of output tensors."""
    out = list(backend.forward(x, v, cfg, steps, save_h=True, save_v=True, with_grad=True))
    lean = backend.forward(x, None, cfg, steps, save_h=True,   # the training forward, at rest
                           state_shape=v.shape)
    h_seq, gs2h, gv2h = out[2], out[4], out[5]
    out += [t for t in lean if t is not None]
    out += backend.backward(g, gv, cfg, steps, h_seq=h_seq)
    out += backend.backward(g, None, cfg, steps, grad_s_to_h=gs2h, grad_v_to_h=gv2h,
                            state_shape=v.shape)
    if cfg.neuron == "LIF":
        out += backend.backward_plif(g, gv, h_seq, v, cfg, steps)
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("steps,n", [(1, 64), (6, 64), (9, 48), (5, 30), (3, 7)])
@pytest.mark.parametrize("misaligned", [False, True])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_variant_equals_the_default_bit_for_bit(variant, cuda_host, dtype, steps, n,
                                                misaligned, cfg_name):
    name, backend = variant
    default = cuda_emulation.EmulatedCUDABackend(cuda_host)
    cfg = CONFIGS[cfg_name]
    gen = torch.Generator().manual_seed(steps * 1000 + n)
    x = _buffer(steps, n, dtype, misaligned, gen, scale=1.6, shift=-0.2)
    v = _buffer(1, n, dtype, misaligned, gen, scale=1.0).view(n)
    g = _buffer(steps, n, dtype, misaligned, gen, scale=2.0, shift=-1.0)
    gv = _buffer(1, n, dtype, misaligned, gen, scale=2.0, shift=-1.0).view(n)
    expected = _run_everything(default, cfg, x, v, g, gv, steps)
    got = _run_everything(backend, cfg, x, v, g, gv, steps)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f"{name}: output {i} differs from the default build's"
    # the spikes are those of the plain PyTorch reference too (not only equal to each other)
    from spikecore import reference
    spikes = reference.fptt(x.float(), v.float(), cfg)[0]
    assert torch.equal(got[0].float(), spikes)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_variant_launch_has_its_group_size(variant, dtype):
    """The grid of the training forward on the grouped path: one thread per group of
    GROUP_BYTES, 256 threads a block."""
    name, backend = variant
    n = 8192
    x = torch.rand(2, n).to(dtype)
    backend.forward(x, None, CONFIGS["LIF hard ATan"], 2, save_h=True, state_shape=(n,))
    last = ctypes.c_uint()
    device, stream, block = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_uint()
    backend._kernels.lib.sc_host_last_launch(ctypes.byref(device), ctypes.byref(stream),
                                             ctypes.byref(last), ctypes.byref(block))
    group = _group_bytes(name) // x.element_size()
    assert last.value == math.ceil(n / group / block.value)


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_stays_inside_its_buffers(name, tmp_path):
    """tests/native/check_cuda_bounds.cpp (AddressSanitizer and UBSan, buffers of exactly their
    size, aligned and misaligned) on the variant's build: a wider group or a longer unroll must
    not read past a buffer or make a misaligned grouped access."""
    cuda_emulation.require_sanitizers(str(tmp_path))
    exe = cuda_emulation.build_bounds_checker(str(tmp_path), cuda_variants.defines(name))
    run = subprocess.run([exe], capture_output=True, text=True,
                         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("checked ")


def test_variant_specs():
    assert cuda_variants.defines("u6g8b3") == [
        "-DSPIKECORE_CUDA_UNROLL=6", "-DSPIKECORE_CUDA_GROUP_BYTES=8",
        "-DSPIKECORE_CUDA_MIN_BLOCKS=3", "-DSPIKECORE_CUDA_PREFETCH=0",
        "-DSPIKECORE_CUDA_FAST_DIV=0"]
    assert cuda_variants.defines("u2g4b1pf")[-2:] == ["-DSPIKECORE_CUDA_PREFETCH=1",
                                                      "-DSPIKECORE_CUDA_FAST_DIV=1"]
    assert cuda_variants.exact("u2g4b1p") and cuda_variants.exact("group8")
    assert not cuda_variants.exact("u2g4b1pf") and not cuda_variants.exact("fastdiv")
    assert cuda_variants.defines("default") == []
    with pytest.raises(ValueError, match="unknown variant 'fast'"):
        cuda_variants.macros("fast")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_check_is_exact_except_for_approximate_gradients(dtype):
    """Forward outputs always bit for bit; gradients too, unless the variant divides
    approximately: then within a few units in the last place, not more."""
    gen = torch.Generator().manual_seed(5)
    expected = [torch.randn(4, 64, generator=gen).to(dtype) for _ in range(5)]
    ulp = torch.finfo(dtype).eps

    def nudged(index, rel):
        out = [t.clone() for t in expected]
        out[index] = (out[index].float() * (1 + rel)).to(dtype)
        return out

    cuda_variants.check("group8", [t.clone() for t in expected], expected)
    cuda_variants.check("fastdiv", nudged(3, 2 * ulp), expected)   # grad_x, 2 ulp
    with pytest.raises(AssertionError, match="variant group8: grad_x differs"):
        cuda_variants.check("group8", nudged(3, 2 * ulp), expected)
    with pytest.raises(AssertionError, match="variant fastdiv: h_seq differs"):
        cuda_variants.check("fastdiv", nudged(2, 2 * ulp), expected)
    with pytest.raises(AssertionError, match="variant fastdiv: grad_v"):
        cuda_variants.check("fastdiv", nudged(4, 0.01), expected)


class _OneSpikeFlipped(cuda_emulation.EmulatedCUDABackend):
    """A variant whose forward gets one spike wrong."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out[0].view(-1)[3] = 1 - out[0].view(-1)[3]
        return out


def test_measure_checks_every_variant_then_times_it(variant, cuda_host):
    """benchmarks/cuda_variants.py's measurement on the emulation (a CPU clock instead of CUDA
    events): every variant timed, and a variant with a wrong output refused before timing."""
    import time
    name, backend = variant
    calls = []

    def timer(fn):
        calls.append(1)
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    backends = {"default": cuda_emulation.EmulatedCUDABackend(cuda_host), name: backend}
    medians = cuda_variants.measure(backends, 5, torch.float16, 256, 2, device="cpu",
                                    timer=timer)
    assert set(medians) == {"default", name} and all(t > 0 for t in medians.values())
    assert len(calls) == 2 * (2 + 3)   # round-robin: repeat + 3 warm-up rounds per variant
    backends[name] = _OneSpikeFlipped(backend._kernels)
    with pytest.raises(AssertionError, match=f"variant {name}: spike differs"):
        cuda_variants.measure(backends, 5, torch.float16, 256, 1, device="cpu", timer=timer)
    text = cuda_variants.table({"default": {("forward", "f16"): "80"}, name: {}},
                               {("default", "T=5"): (1.0, 1.5), (name, "T=5"): (0.5, 0.75)},
                               ["T=5"], 2)
    assert "fastest: T=5: " + name in text and "80/?" in text


def test_main_on_the_emulation(cuda_host, monkeypatch, capsys, tmp_path):
    """The script's whole run (build every variant, check, time, print the table), with host
    builds in place of nvcc's, CPU tensors and a CPU clock: what a GPU session will run."""
    import functools
    import time

    import bench_gpu

    def host_build(variant, out_dir, archs):
        assert archs == "90"
        lib = cuda_emulation.build_library(out_dir, cuda_variants.defines(variant),
                                           variant.replace("-", "_"))
        kernels = ctypes.CDLL(lib)
        kernels.sc_host_reset(cuda_emulation.DEVICES, cuda_emulation.CALLER_DEVICE)
        return lib, {("forward", "f32"): "56"}

    def cpu_timer(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    monkeypatch.setattr(cuda_variants, "build", host_build)
    monkeypatch.setattr(cuda_variants, "LibraryBackend", cuda_emulation.EmulatedCUDABackend)
    monkeypatch.setattr(cuda_variants, "measure", functools.partial(
        cuda_variants.measure, device="cpu", timer=cpu_timer))
    monkeypatch.setattr(bench_gpu, "N", 256)
    monkeypatch.setattr(bench_gpu, "copy_bandwidth", lambda: 1e10)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda: (9, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda: "emulated")
    monkeypatch.setattr(sys, "argv", ["cuda_variants.py", "--repeat", "1",
                                      "--variants", "group8,u3g4b1"])
    cuda_variants.main()
    out = capsys.readouterr().out
    table = out[out.index("kernel variants"):].splitlines()
    assert [line.split()[0] for line in table[2:5]] == ["default", "group8", "u3g4b1"]
    assert table[2].split()[1] == "56/?" and table[-1].startswith("fastest: T=32 float32: ")
    assert len(table[2].split("(")) == 1 + len(bench_gpu.CASES)   # a cell per case
