"""What autograd keeps per layer: one [T, N] tensor of H, in float32 or (optionally) bfloat16."""
import pytest
import torch

import spikecore
from spikecore import dispatch, reference
from helpers import make_cfg, make_inputs


def _saved(out):
    return out.grad_fn.saved_tensors


@pytest.mark.parametrize("node_cls, kw", [(spikecore.MultiStepLIFNode, dict(tau=2.0)),
                                          (spikecore.MultiStepIFNode, {})])
def test_one_h_tensor_per_layer(node_cls, kw):
    node = node_cls(**kw)
    x = torch.rand(8, 4, 100, requires_grad=True)
    saved = _saved(node(x))
    assert len(saved) == 1 and saved[0].shape == (8, 4, 100) and saved[0].dtype == torch.float32
    assert saved[0].numel() * saved[0].element_size() == 4 * 8 * 400   # 4 bytes per neuron-step
    node.reset()
    node.saved_h_dtype = torch.bfloat16
    saved16 = _saved(node(x))
    assert saved16[0].dtype == torch.bfloat16
    assert saved16[0].numel() * saved16[0].element_size() == 2 * 8 * 400  # half of it


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("v_reset, sg", [(0.0, 0), (None, 1), (-0.2, 2), (0.0, 4)])
def test_bf16_h_keeps_spikes_and_approximates_gradients(backend, v_reset, sg):
    cfg = make_cfg("LIF", False, v_reset, sg)
    # 8 x 4000 elements: below PyTorch's 32768-element grain, so the reference's torch ops run
    # on one thread. At 8 x 4096, in about 1 of 10 test processes, the half of torch.exp that
    # PyTorch's second thread computed came out up to 1.5e-4 off (relative, vs float64) on the
    # first call and right on the next, which made two reference calls differ.
    x, v = make_inputs(cfg, 8, (4000,), torch.float32, seed=sg)
    g = torch.randn(8, 4000, generator=torch.Generator().manual_seed(sg))
    r32 = dispatch.forward(x, v, cfg, save_h=True, backend=backend)
    r16 = dispatch.forward(x, v, cfg, save_h=True, h_dtype=torch.bfloat16, backend=backend)
    assert torch.equal(r16.spike, r32.spike) and torch.equal(r16.v_next, r32.v_next)
    # the stored H recomputes the same spikes, and lies within one bfloat16 step of H
    assert torch.equal(reference.fire(r16.h_seq.float(), cfg), r32.spike)
    assert ((r16.h_seq.float() - r32.h_seq).abs() <= r32.h_seq.abs() * 2 ** -7 + 1e-30).all()
    gx32, gv32 = dispatch.backward(g, v, cfg, h_seq=r32.h_seq, backend=backend)
    gx16, gv16 = dispatch.backward(g, v, cfg, h_seq=r16.h_seq, backend=backend)
    # given the stored H, the backward is exactly the float32 one on those values (bit for bit:
    # reading bfloat16 only widens; the float32 backward itself is checked against the
    # reference in test_backend_vs_reference.py)
    gx_wide, gv_wide = dispatch.backward(g, v, cfg, h_seq=r16.h_seq.float(), backend=backend)
    assert torch.equal(gx16, gx_wide) and torch.equal(gv16, gv_wide)
    # against float32 H: the surrogate's slope times the rounding of H, small overall
    assert ((gx16 - gx32).norm() / gx32.norm()).item() < 2e-2


def test_cpu_bf16_h_matches_the_reference_bit_for_bit():
    cfg = make_cfg("LIF", False, 0.0)
    x, v = make_inputs(cfg, 6, (3000,), torch.float32)
    a = dispatch.forward(x, v, cfg, save_h=True, h_dtype=torch.bfloat16, backend="cpu").h_seq
    b = dispatch.forward(x, v, cfg, save_h=True, h_dtype=torch.bfloat16,
                         backend="reference").h_seq
    assert torch.equal(a, b)


def _bf16_h_vs_reference(kernels, x, cfg, stream):
    """``(cpu, reference, want)``: the CPU forward from rest keeping H in bfloat16 (its outputs
    streamed or not), the reference forward, and the reference's H rounded by the rule."""
    v = torch.zeros(x.shape[1:])
    old = kernels.stream_min_bytes(0 if stream else 1 << 40)
    try:
        got = dispatch.forward(x, v, cfg, save_h=True, h_dtype=torch.bfloat16, backend="cpu")
    finally:
        kernels.stream_min_bytes(old)
    ref = dispatch.forward(x, v, cfg, save_h=True, backend="reference")
    return got, ref, reference.keep_spike_bf16(ref.h_seq, ref.spike, cfg)


@pytest.mark.parametrize("stream", [False, True])
def test_cpu_bf16_h_rounds_every_kind_of_value_as_the_reference(stream):
    """Subnormals, zeros, NaN, infinities, the largest floats and values a few ulps either side
    of the threshold, scattered among ordinary values: IF neurons from v = 0 make H = x exactly,
    so the stored bits must be keep_spike_bf16(x). Builds with AVX512-BF16 round groups of 16
    with one instruction and hand groups holding such values to the scalar rule
    (_cpu_kernels.bf16_rows_vectorised() says which build this is); the bits are the same."""
    from spikecore import _cpu_kernels as kernels
    tiny = torch.finfo(torch.float32).tiny
    special = [tiny / 3, -tiny / 3, 1e-45, -1e-45, tiny * (1 - 2 ** -23), tiny, -tiny, 0.0, -0.0,
               float("nan"), float("inf"), -float("inf"), 3.4028235e38, -3.4028235e38,
               2 ** -133, 2.0 ** 128 - 2.0 ** 118, -(2.0 ** 128 - 2.0 ** 118),  # round to inf
               2.0 ** 128 - 2.0 ** 120, 2.0 ** 128 - 2.0 ** 119]   # the largest bf16; a tie
    special += [1.0 + k * 2 ** -23 for k in range(-12, 13)]     # around the threshold
    gen = torch.Generator().manual_seed(5)
    n = 16 * 64 + 5                                             # full groups and a ragged tail
    x = (torch.rand(1, n, generator=gen) * 3 - 1).float()
    slots = torch.randperm(n // 2, generator=gen)[:len(special)]   # first half only: the
    x[0, slots] = torch.tensor(special)                            # second half stays plain
    cfg = make_cfg("IF", False, 0.0)
    got, ref, want = _bf16_h_vs_reference(kernels, x, cfg, stream)
    nan = torch.isnan(ref.h_seq)
    assert int(nan.sum()) == 1 and bool(torch.isnan(got.h_seq[nan]).all())
    assert torch.equal(got.h_seq[~nan].view(torch.int16), want[~nan].view(torch.int16))
    # the rule holds: S recomputed from the stored H is the forward's S
    assert torch.equal(reference.fire(got.h_seq.float(), cfg)[~nan], got.spike[~nan])
    assert torch.equal(got.spike, ref.spike)


@pytest.mark.parametrize("v_threshold", [1.0, 0.75, -0.5, 3.0e-38])
@pytest.mark.parametrize("stream", [False, True])
def test_cpu_bf16_h_nudges_whole_groups_as_the_reference(v_threshold, stream):
    """Rows made only of values a few float32 ulps either side of the threshold (no subnormal,
    no NaN), so that groups of 16 with several lanes to nudge, up and down, positive and
    negative, stay on the vectorised route of AVX512-BF16 builds: the stored bits must be
    keep_spike_bf16(x) and every spike must survive the rounding."""
    from spikecore import _cpu_kernels as kernels
    gen = torch.Generator().manual_seed(7)
    n = 16 * 40 + 3
    ulp = abs(v_threshold) * 2 ** -23
    steps = torch.randint(-40, 41, (2, n), generator=gen).float()
    x = (v_threshold + steps * ulp).float()
    cfg = make_cfg("IF", False, 0.0, v_threshold=v_threshold)
    got, ref, want = _bf16_h_vs_reference(kernels, x, cfg, stream)
    nudged = want != ref.h_seq.to(torch.bfloat16)
    assert int(nudged.sum()) > 100                      # the test exercises what it claims
    assert torch.equal(got.h_seq.view(torch.int16), want.view(torch.int16))
    assert torch.equal(reference.fire(got.h_seq.float(), cfg), got.spike)


def test_h_dtype_rejected_where_unsupported():
    cfg = make_cfg("LIF", False, 0.0)
    x = torch.rand(3, 10, dtype=torch.float64)
    with pytest.raises(ValueError, match="h_dtype"):
        dispatch.forward(x, torch.zeros(10, dtype=torch.float64), cfg, save_h=True,
                         h_dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="h_dtype"):
        dispatch.forward(x.float(), torch.zeros(10), cfg, save_h=True, h_dtype=torch.float16)
    node = spikecore.MultiStepParametricLIFNode()
    node.saved_h_dtype = torch.bfloat16
    with pytest.raises(ValueError, match="bfloat16"):
        node(torch.rand(3, 10, requires_grad=True))


def test_bf16_h_beyond_the_range_keeps_gradients_finite():
    """A finite float32 H that bfloat16 rounds to infinity is kept as the largest finite
    bfloat16 (also where the threshold lies beyond it and only infinity keeps the spike, the one
    case that stores inf); the backward from it gives the gradients of the float32 H, not the
    NaN of (V_r - inf) * 0."""
    big = 2.0 ** 128 - 2.0 ** 118
    cfg = make_cfg("IF", False, 0.0)
    x = torch.tensor([[big, -big, 0.5, 3e38], [0.25, big, -1.0, 1.0]])
    kept = dispatch.forward(x, None, cfg, save_h=True, h_dtype=torch.bfloat16, backend="cpu")
    exact = dispatch.forward(x, None, cfg, save_h=True, backend="cpu")
    bf16_max = torch.finfo(torch.bfloat16).max
    assert torch.equal(kept.h_seq[0, :2].float(), torch.tensor([bf16_max, -bf16_max]))
    assert torch.isfinite(kept.h_seq.float()).all()
    gs = torch.linspace(-1, 1, x.numel()).view(x.shape)
    gv = torch.ones(x.shape[1:])
    got = dispatch.backward(gs, gv, cfg, h_seq=kept.h_seq, backend="cpu")
    want = dispatch.backward(gs, gv, cfg, h_seq=exact.h_seq, backend="cpu")
    for g, w in zip(got, want):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-2, atol=1e-6)
    # a threshold above the bfloat16 range: the spike of H = 3.4e38 survives only as inf
    high = make_cfg("IF", False, 0.0, v_threshold=3.39e38)
    h = dispatch.forward(torch.tensor([[3.4e38, 3.0e38]]), None, high, save_h=True,
                         h_dtype=torch.bfloat16, backend="cpu").h_seq
    assert h[0, 0].item() == float("inf") and h[0, 1].item() < 3.39e38
    assert torch.equal(h, reference.keep_spike_bf16(torch.tensor([[3.4e38, 3.0e38]]),
                                                    torch.tensor([[1.0, 0.0]]), high))
