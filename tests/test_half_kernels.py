"""The CPU's float16/bfloat16 kernels (``forward_half``, ``backward_half``), which convert blocks
of neurons to float32 in cache: their conversions against PyTorch's, and every result against
the plan that casts whole tensors around the float32 kernels (``backends.CastPlan``), bit for
bit."""
import pytest
import torch

from spikecore import _cpu_kernels as K, backends, cpu_backend, dispatch
from helpers import all_configs, cfg_id, cfg_seed, make_cfg

HALVES = [torch.float16, torch.bfloat16]
IDS = ["f16", "bf16"]


def _bits(t):
    return t.view(torch.int16)


@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_widening_every_pattern_matches_torch(dtype):
    patterns = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    halves = patterns.view(dtype)
    got = torch.empty(65536, dtype=torch.float32)
    K.half_to_float(patterns.view(torch.uint16).numpy(), got.numpy(), dtype == torch.float16)
    want = halves.float()
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan)
    assert torch.equal(got[~nan].view(torch.int32), want[~nan].view(torch.int32))   # -0 too


@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_narrowing_rounds_as_torch(dtype):
    """Random float32 patterns of every magnitude, and the values where rounding turns: ties
    on both sides of each representable value, the overflow edge, subnormals, zeros."""
    gen = torch.Generator().manual_seed(3)
    random = torch.randint(-2**31, 2**31, (1 << 20,), generator=gen, dtype=torch.int64)
    values = [random.to(torch.int32).view(torch.float32)]
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).float()
    every = every[every.isfinite()]
    ulp_below = torch.nextafter(every, torch.full_like(every, -float("inf")))
    ulp_above = torch.nextafter(every, torch.full_like(every, float("inf")))
    values += [every, ulp_below, ulp_above, (every[1:] + every[:-1]) / 2,
               torch.tensor([0.0, -0.0, 65504.0, 65519.996, 65520.0, 65536.0, 6.1035156e-05,
                             5.9604645e-08, 2.9802322e-08, 2.9802326e-08, 1e-45, 3.4e38,
                             float("inf"), -float("inf")])]
    src = torch.cat(values)
    src = src[~src.isnan()]
    got = torch.empty(src.numel(), dtype=torch.int16)
    K.float_to_half(src.numpy(), got.view(torch.uint16).numpy(), dtype == torch.float16)
    assert torch.equal(got, _bits(src.to(dtype)))
    nan = torch.tensor([float("nan"), -float("nan")])
    out = torch.empty(2, dtype=torch.int16)
    K.float_to_half(nan.numpy(), out.view(torch.uint16).numpy(), dtype == torch.float16)
    assert out.view(dtype).isnan().all()


@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_scalar_rules_of_the_row_tails(dtype):
    """Rows shorter than eight values take the scalar rules, which a build with F16C uses only
    for the last values of a row (and a build without it for all): every pattern widened, and
    the narrowing edges, in rows of seven."""
    f16 = dtype == torch.float16
    patterns = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    halves = patterns.view(dtype).float()
    finite = halves[halves.isfinite()]
    edges = torch.cat([finite, (finite[1:] + finite[:-1]) / 2,
                       torch.nextafter(finite, torch.full_like(finite, float("inf")))])
    widened = torch.empty(65536)
    narrowed = torch.empty(edges.numel(), dtype=torch.int16)
    src16, out32 = patterns.view(torch.uint16).numpy(), widened.numpy()
    src32, out16 = edges.numpy(), narrowed.view(torch.uint16).numpy()
    for lo in range(0, 65536, 7):
        K.half_to_float(src16[lo:lo + 7], out32[lo:lo + 7], f16)
    for lo in range(0, edges.numel(), 7):
        K.float_to_half(src32[lo:lo + 7], out16[lo:lo + 7], f16)
    nan = halves.isnan()
    assert torch.equal(widened.isnan(), nan)
    assert torch.equal(widened[~nan].view(torch.int32), halves[~nan].view(torch.int32))
    assert torch.equal(narrowed, _bits(edges.to(dtype)))


def _plans(x, v, cfg):
    """The 16-bit plan and, around the same float32 plan, the plan that casts."""
    half = dispatch.plan(x, v, cfg, backend="cpu")
    assert type(half) is cpu_backend._HalfPlan
    cast = backends.CastPlan(half._inner, cfg, x, v is not None, half.steps, half.state_shape,
                             None)
    return half, cast


def _same(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _check(cfg, dtype, steps, shape, given_v, given_gv, seed):
    gen = torch.Generator().manual_seed(seed)
    x = ((torch.rand((steps,) + shape, generator=gen) * 1.6 - 0.2) / cfg.reciprocal_tau).to(dtype)
    v = (torch.rand(shape, generator=gen) * 0.8 - 0.2).to(dtype) if given_v else None
    g = torch.randn((steps,) + shape, generator=gen).to(dtype)
    gv = torch.randn(shape, generator=gen).to(dtype) if given_gv else None
    half, cast = _plans(x, v, cfg)
    for save_h in (True, False):
        got, want = half.forward(x, v, save_h), cast.forward(x, v, save_h)
        assert all(_same(a, b) for a, b in zip(got[:2], want[:2])), (save_h, got, want)
        assert (got[2] is None) == (want[2] is None) == (not save_h)
    h = want[2] if want[2] is not None else cast.forward(x, v)[2]
    got, h_half = half.forward(x, v), half.forward(x, v)[2]
    assert torch.equal(h_half, h) and h_half.dtype == torch.float32
    gx, gvo = half.backward(g, gv, h)
    wx, wvo = cast.backward(g, gv, h)
    assert _same(gx, wx) and _same(gvo, wvo)


@pytest.mark.parametrize("cfg", list(all_configs()), ids=cfg_id)
@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_every_config_equals_the_plan_that_casts(cfg, dtype):
    cases = [(True, True)]
    if backends.holds_exactly(dtype, cfg.v_rest):   # else a fresh state has no 16-bit plan
        cases.append((False, False))
    for given_v, given_gv in cases:
        _check(cfg, dtype, 6, (3, 45), given_v, given_gv, cfg_seed(cfg) + given_v)


@pytest.mark.parametrize("steps", [0, 1, 7, 300])
@pytest.mark.parametrize("n", [1, 127, 129, 5000])
@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_shapes_and_blocks(steps, n, dtype):
    """Step counts around none, one, odd and many (a narrow block: 300 steps leave room for 218
    neurons, rounded down to one chunk of 128), sizes around a chunk and across blocks."""
    cfg = make_cfg("LIF", False, 0.0, 2, v_threshold=0.8, tau=3.0)
    for given_v, given_gv in ((False, False), (True, False), (False, True)):
        _check(cfg, dtype, steps, (n,), given_v, given_gv, steps * 7 + n)


@pytest.mark.parametrize("dtype", HALVES, ids=IDS)
def test_large_layer_trains_through_the_half_kernels_with_threads(dtype, monkeypatch):
    """A layer too large to save its input (the plan saves H): the node's Function runs the
    16-bit kernels on several threads, and its spikes, potential and gradients are the cast
    plan's."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)   # more blocks than threads
    cfg = make_cfg("LIF", False, 0.0, 0)
    steps, n = 4, 140000   # 2.2 MB as float32: no recompute
    gen = torch.Generator().manual_seed(11)
    x = (torch.rand(steps, n, generator=gen) * 2).to(dtype)
    v = torch.rand(n, generator=gen).to(dtype)
    g, gv = torch.randn(steps, n, generator=gen).to(dtype), torch.randn(n, generator=gen).to(dtype)
    half, cast = _plans(x, v, cfg)
    assert not half.recompute
    s, vn, saved = half.train_forward(x, v)
    ws, wvn, wsaved = cast.train_forward(x, v)
    assert _same(s, ws) and _same(vn, wvn) and torch.equal(saved[0], wsaved[0])
    assert all(_same(a, b) for a, b in zip(half.train_backward(g, gv, saved),
                                           cast.train_backward(g, gv, wsaved)))
    assert s.float().sum() > 0 and (s.float() == 0).any()   # some fire, some do not


def test_small_layers_and_learnable_tau_keep_the_casts():
    """What the 16-bit kernels do not cover stays on CastPlan's route: a small layer's training
    call saves its input, and the learnable-1/τ backward runs in float32."""
    cfg = make_cfg("LIF", False, 0.0, 0)
    x = torch.rand(4, 10, dtype=torch.bfloat16)
    plan = dispatch.plan(x, None, cfg, backend="cpu")
    assert plan.recompute
    assert plan.train_forward(x, None)[2][0].dtype == torch.float32   # the input, cast up
    h = plan.forward(x, None)[2]
    grad_x, _, grad_k = plan.backward_plif(torch.ones_like(x), None, h, None, 0.4)
    assert grad_x.dtype == torch.bfloat16 and grad_k.dtype == torch.float64
    assert type(dispatch.plan(x, None, cfg, backend="cpu", h_dtype=torch.bfloat16)) \
        is backends.CastPlan
