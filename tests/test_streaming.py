"""Streaming (non-temporal) stores change how the kernels' outputs reach memory, never what they
hold: every result is bit-identical with streaming forced on, forced off, at any alignment, and
matches the reference."""
import numpy as np
import pytest
import torch

from spikecore import _cpu_kernels, dispatch, reference
from helpers import all_configs, cfg_id, cfg_seed, grad_tol, make_inputs

CONFIGS = list(all_configs())
# 3 full chunks and a ragged one, so both the streamed middle and the partial edges are exercised
N = 3 * 256 + 245


@pytest.fixture
def streaming():
    """Run a test body under a given stream threshold; the default comes back afterwards."""
    old = _cpu_kernels.stream_min_bytes()
    yield lambda threshold: _cpu_kernels.stream_min_bytes(threshold)
    _cpu_kernels.stream_min_bytes(old)


def _train_step(cfg, x, v, g, h_dtype):
    res = dispatch.forward(x, v, cfg, backend="cpu", save_h=True, h_dtype=h_dtype)
    gx, gv = dispatch.backward(g, torch.ones_like(v), cfg, h_seq=res.h_seq, backend="cpu")
    inference = dispatch.forward(x, v, cfg, backend="cpu")
    return (res.spike, res.v_next, res.h_seq, gx, gv, inference.spike, inference.v_next)


@pytest.mark.parametrize("steps", [1, 5], ids=["single", "multi"])
@pytest.mark.parametrize("h_dtype", [None, torch.bfloat16], ids=["h-float32", "h-bfloat16"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_streamed_equals_cached(streaming, cfg, h_dtype, steps):
    x, v = make_inputs(cfg, steps, (N,), torch.float32, seed=cfg_seed(cfg))
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    streaming(1 << 62)
    cached = _train_step(cfg, x, v, g, h_dtype)
    streaming(0)
    streamed = _train_step(cfg, x, v, g, h_dtype)
    for a, b in zip(cached, streamed):
        assert torch.equal(a, b)
    ref_spike, ref_v = reference.fptt(x, v, cfg)[:2]
    assert torch.equal(streamed[0], ref_spike) and torch.equal(streamed[1], ref_v)
    assert torch.equal(streamed[5], ref_spike) and torch.equal(streamed[6], ref_v)  # inference
    # the BPTT over several chunks of neurons, from the H the kernel kept (bfloat16: the
    # reference reads the same rounded values)
    ref_gx, ref_gv = reference.bptt_from_h(g, torch.ones_like(v), streamed[2].float(), cfg)
    torch.testing.assert_close(streamed[3], ref_gx, **grad_tol(torch.float32))
    torch.testing.assert_close(streamed[4], ref_gv, **grad_tol(torch.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_misaligned_outputs(streaming, dtype, offset):
    """Outputs whose rows start anywhere (not on a cache line) are written correctly."""
    steps, n = 4, 1000 + offset
    rng = np.random.default_rng(offset)
    x = (rng.random((steps, n)) * 1.6 - 0.2).astype(dtype)
    v = np.zeros(n, dtype)
    g = rng.standard_normal((steps, n)).astype(dtype)
    empty = np.empty((0, n), dtype)

    def run():
        flat = np.zeros(4 * steps * n + 2 * n + 8, dtype)   # one buffer, outputs at odd offsets
        cut = [offset + k * (steps * n + 1) for k in range(4)]
        s, h, gx = (flat[c:c + steps * n].reshape(steps, n) for c in cut[:3])
        vn, gv = flat[cut[3]:cut[3] + n], flat[cut[3] + n + 1:cut[3] + 2 * n + 1]
        _cpu_kernels.forward(x, v, s, vn, h, empty, empty, empty, 1, True, False, 0,
                             1.0, 0.0, 0.5, 2.0, 1)
        _cpu_kernels.backward(g, v, h, empty, empty, gx, gv, 1, True, False, 0,
                              1.0, 0.0, 0.5, 2.0, 1)
        return [a.copy() for a in (s, vn, h, gx, gv)]

    streaming(1 << 62)
    cached = run()
    streaming(0)
    for a, b in zip(cached, run()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("n, offset", [(0, 0), (1, 0), (63, 1), (5 << 20, 3)])
def test_copy_bytes(n, offset, stream):
    src = np.random.default_rng(n).integers(0, 256, n + offset, dtype=np.uint8)[offset:]
    dst = np.zeros(n + 7, np.uint8)[7:]
    _cpu_kernels.copy_bytes(src, dst, stream, 2)
    np.testing.assert_array_equal(src, dst)


def test_copy_bytes_checks_sizes():
    with pytest.raises(ValueError, match="dst must have 4 bytes"):
        _cpu_kernels.copy_bytes(np.zeros(4, np.uint8), np.zeros(5, np.uint8), True, 1)


def test_stream_threshold_is_checked(streaming):
    with pytest.raises(ValueError, match="stream_min_bytes must be >= 0"):
        _cpu_kernels.stream_min_bytes(-1)


PLIF_CONFIGS = [c for c in CONFIGS if c.neuron == "LIF" and c.surrogate in (0, 4)]


@pytest.mark.parametrize("cfg", PLIF_CONFIGS, ids=cfg_id)
def test_plif_backward_streamed_equals_cached(streaming, cfg):
    """The learnable-τ backward (its own kernel) too: same bits either way, and the reference's
    values (float64, so the comparison is tight)."""
    x, v = make_inputs(cfg, 5, (N,), torch.float64, seed=cfg_seed(cfg))
    res = dispatch.forward(x, v, cfg, backend="cpu", save_h=True)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    gv = torch.randn(v.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    outs = []
    for threshold in (1 << 62, 0):
        streaming(threshold)
        outs.append(dispatch.backward_plif(g, gv, cfg, h_seq=res.h_seq, v_init=v,
                                           backend="cpu"))
    for a, b in zip(*outs):
        assert torch.equal(a, b)
    ref = reference.bptt_from_h_plif(g, gv, res.h_seq, v, cfg)
    for a, b in zip(outs[1], ref):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=1e-10, atol=1e-12)


def test_vector_isa_is_reported():
    """Benchmark logs name the build they measured (a portable and a native build differ)."""
    assert _cpu_kernels.vector_isa() in ("AVX-512", "AVX2", "AVX", "SSE2", "NEON", "none")
