"""Surrogates: names/indices, and each derivative is the derivative of its primitive."""
import math

import pytest
import torch

from spikecore import surrogate


def test_index_order_is_the_api():
    assert surrogate.NAMES == ("ATan", "Sigmoid", "PiecewiseQuadratic", "SoftSign", "Erf",
                               "SuperSpike", "PiecewiseExp")
    for i, name in enumerate(surrogate.NAMES):
        assert surrogate.resolve(name) == i == surrogate.resolve(i)


@pytest.mark.parametrize("bad", ["atan", "Relu", 7, -1])
def test_unknown_surrogate_lists_valid(bad):
    with pytest.raises(ValueError, match="ATan") as info:
        surrogate.resolve(bad)
    assert "PiecewiseExp" in str(info.value)


@pytest.mark.parametrize("alpha", [0.7, 2.0, 5.0])
@pytest.mark.parametrize("sg", surrogate.SURROGATES, ids=lambda s: s.name)
def test_derivative_of_primitive(sg, alpha):
    x = torch.linspace(-3, 3, 601, dtype=torch.float64)
    x = x[(x * alpha).abs().sub(1).abs() > 1e-3]  # avoid the kinks of piecewise shapes
    x.requires_grad_()
    (auto,) = torch.autograd.grad(sg.primitive(x, alpha).sum(), x)
    torch.testing.assert_close(sg.derivative(x.detach(), alpha), auto, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("sg", surrogate.SURROGATES, ids=lambda s: s.name)
def test_primitive_is_a_smoothed_step(sg):
    alpha = 2.0
    far = torch.tensor([-50.0, 50.0], dtype=torch.float64)
    lo, hi = sg.primitive(far, alpha).tolist()
    assert lo == pytest.approx(0.0, abs=0.02)
    expected_hi = 2 / alpha if sg.name == "SuperSpike" else 1.0
    assert hi == pytest.approx(expected_hi, abs=0.02)
    # the derivative integrates to the primitive's rise
    x = torch.linspace(-60, 60, 600001, dtype=torch.float64)
    area = torch.trapezoid(sg.derivative(x, alpha), x).item()
    rise = (sg.primitive(x[-1:], alpha) - sg.primitive(x[:1], alpha)).item()
    assert area == pytest.approx(rise, rel=1e-6)


def test_peak_values():
    zero = torch.zeros(1, dtype=torch.float64)
    a = 2.0
    expect = [a / 2, a / 4, a, a / 2, a / math.sqrt(math.pi), 1.0, a / 2]
    got = [s.derivative(zero, a).item() for s in surrogate.SURROGATES]
    assert got == pytest.approx(expect)


@pytest.mark.parametrize("name", ["Sigmoid", "Erf", "PiecewiseExp"])
def test_compiled_exp_is_accurate_over_the_whole_range(name):
    """The kernels' own vectorisable exp (include/spikecore_math.h) agrees with PyTorch's
    float32 exp to a few ulp wherever the surrogate is a normal float, and saturates cleanly
    far from the threshold (0, never NaN). Both sides round the exp argument the same way, so
    only the exp itself can differ."""
    from spikecore import dispatch
    from helpers import make_cfg

    cfg = make_cfg("IF", v_reset=None, surrogate_index=surrogate.NAMES.index(name), alpha=2.0)
    h = torch.cat([torch.linspace(-60.0, 60.0, 200001), torch.tensor([-1e30, 1e30])])
    x = h.reshape(1, -1)                      # IF from V = 0: H = X, so sg = g'(X - θ)
    got = dispatch.forward(x, torch.zeros(h.numel()), cfg, with_grad=True,
                           backend="cpu").grad_s_to_h[0]
    want = surrogate.SURROGATES[cfg.surrogate].derivative(h - cfg.v_threshold, cfg.alpha)
    assert not torch.isnan(got).any()
    normal = want > 1e-30
    rel = ((got.double() - want.double()).abs() / want.double())[normal]
    assert rel.max().item() < 1e-6          # a few float32 ulp
    assert (got[~normal].double() - want[~normal].double()).abs().max().item() < 1e-30
