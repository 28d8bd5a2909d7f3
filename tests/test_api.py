"""The public API: names, signatures and defaults, templates choosing the neuron, and the named
functions agreeing with the generic path and with hand-computed values."""
import inspect

import pytest
import torch

import spikecore
from spikecore import neuron, reference
from helpers import make_cfg

SPEC_FUNCTIONS = {
    "hard_reset_forward_template": "x, v, v_threshold, v_reset, *args, **kwargs",
    "hard_reset_fptt_template": "x_seq, v, v_threshold, v_reset, *args, **kwargs",
    "soft_reset_forward_template": "x, v, v_threshold, *args, **kwargs",
    "soft_reset_fptt_template": "x_seq, v, v_threshold, *args, **kwargs",
    "hard_reset_forward_with_grad_template": "x, v, v_threshold, v_reset, alpha, detach_reset, "
                                             "grad_surrogate_function_index, *args, **kwargs",
    "hard_reset_fptt_with_grad_template": "x_seq, v, v_threshold, v_reset, alpha, detach_reset, "
                                          "grad_surrogate_function_index, *args, **kwargs",
    "soft_reset_forward_with_grad_template": "x, v, v_threshold, alpha, detach_reset, "
                                             "grad_surrogate_function_index, *args, **kwargs",
    "soft_reset_fptt_with_grad_template": "x_seq, v, v_threshold, alpha, detach_reset, "
                                          "grad_surrogate_function_index, *args, **kwargs",
    "backward_template": "grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, *args, **kwargs",
    "bptt_template": "grad_spike_seq, grad_v_next, grad_s_to_h, grad_v_to_h, *args, **kwargs",
    "LIF_hard_reset_forward": "x, v, v_threshold, v_reset, reciprocal_tau, detach_input",
    "LIF_hard_reset_fptt": "x_seq, v, v_threshold, v_reset, reciprocal_tau, detach_input",
    "LIF_hard_reset_forward_with_grad": "x, v, v_threshold, v_reset, alpha, detach_reset, "
                                        "grad_surrogate_function_index, reciprocal_tau, "
                                        "detach_input",
    "LIF_hard_reset_fptt_with_grad": "x_seq, v, v_threshold, v_reset, alpha, detach_reset, "
                                     "grad_surrogate_function_index, reciprocal_tau, "
                                     "detach_input",
    "LIF_backward": "grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau, "
                    "detach_input",
    "LIF_bptt": "grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau, "
                "detach_input",
}

AUTOGRAD = {
    "LIFStep": "ctx, x, v, v_threshold, v_reset, alpha, detach_reset, "
               "grad_surrogate_function_index, reciprocal_tau, detach_input",
    "LIFMultiStep": "ctx, x_seq, v, v_threshold, v_reset, alpha, detach_reset, "
                    "grad_surrogate_function_index, reciprocal_tau, detach_input",
    "IFStep": "ctx, x, v, v_threshold, v_reset, alpha, detach_reset, "
              "grad_surrogate_function_index",
    "IFMultiStep": "ctx, x_seq, v, v_threshold, v_reset, alpha, detach_reset, "
                   "grad_surrogate_function_index",
}


def _params(fn, drop_keyword_only=True):
    out = []
    for p in inspect.signature(fn).parameters.values():
        if drop_keyword_only and p.kind == p.KEYWORD_ONLY:
            continue
        out.append({p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "") + p.name)
    return ", ".join(out)


@pytest.mark.parametrize("name", sorted(SPEC_FUNCTIONS))
def test_function_signatures(name):
    assert _params(getattr(neuron, name)) == SPEC_FUNCTIONS[name]


@pytest.mark.parametrize("name", sorted(AUTOGRAD))
def test_autograd_function_signatures(name):
    cls = getattr(neuron, name)
    assert issubclass(cls, torch.autograd.Function)
    assert _params(cls.forward) == AUTOGRAD[name]


def test_node_defaults():
    base = inspect.signature(neuron.BaseNode).parameters
    assert [(k, p.default) for k, p in base.items() if k != "backend"] == [
        ("v_threshold", 1.0), ("v_reset", 0.0), ("surrogate_function", "ATan"), ("alpha", 2.0),
        ("detach_reset", False)]
    lif = inspect.signature(neuron.LIFNode).parameters
    assert [(k, p.default) for k, p in lif.items() if k != "backend"] == [
        ("tau", 100.0), ("detach_input", False), ("v_threshold", 1.0), ("v_reset", 0.0),
        ("surrogate_function", "ATan"), ("alpha", 2.0), ("detach_reset", False)]
    for cls in (neuron.MultiStepLIFNode, neuron.IFNode, neuron.MultiStepIFNode):
        assert issubclass(cls, neuron.BaseNode)
    assert issubclass(neuron.MultiStepLIFNode, neuron.LIFNode)
    assert issubclass(neuron.MultiStepIFNode, neuron.IFNode)
    for name in ("BaseNode", "LIFNode", "MultiStepLIFNode", "IFNode", "MultiStepIFNode"):
        assert getattr(spikecore, name) is getattr(neuron, name)


def test_completed_family_exists():
    for reset in ("hard", "soft"):
        for n in ("LIF", "IF"):
            for kind in ("forward", "fptt", "forward_with_grad", "fptt_with_grad"):
                assert callable(getattr(neuron, f"{n}_{reset}_reset_{kind}"))
    assert callable(neuron.IF_backward) and callable(neuron.IF_bptt)


def test_hand_computed_lif_step():
    # tau = 2, V_r = 0, θ = 1: H = V + (X - V)/2
    x = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    v = torch.tensor([0.5, 0.0, 1.5], dtype=torch.float64)
    s, v_next, gs2h, gv2h = neuron.LIF_hard_reset_forward_with_grad(
        x, v, 1.0, 0.0, 2.0, False, 0, 0.5, False)
    h = torch.tensor([0.75, 1.5, 1.0], dtype=torch.float64)
    assert s.tolist() == [0.0, 1.0, 1.0]                       # Θ(0) = 1 at h = θ
    assert v_next.tolist() == [0.75, 0.0, 0.0]
    sg = 1.0 / (1 + (torch.pi / 2 * 2 * (h - 1)) ** 2)         # ATan, α = 2: (α/2)/(1+(π/2 α x)²)
    torch.testing.assert_close(gs2h, sg)
    torch.testing.assert_close(gv2h, 1 - s + (0 - h) * sg)
    gx, gv = neuron.LIF_backward(torch.ones(3, dtype=torch.float64),
                                 torch.zeros(3, dtype=torch.float64), gs2h, gv2h, 0.5, False)
    torch.testing.assert_close(gx, sg * 0.5)
    torch.testing.assert_close(gv, sg * 0.5)


def test_hand_computed_if_soft_sequence():
    # IF, soft reset, θ = 1: constant input 0.6 fires at steps 1 and 3 (V: .6, .2, .8, .4)
    x = torch.full((4, 1), 0.6, dtype=torch.float64)
    s, v = neuron.IF_soft_reset_fptt(x, torch.zeros(1, dtype=torch.float64), 1.0)
    assert s.flatten().tolist() == [0.0, 1.0, 0.0, 1.0]
    torch.testing.assert_close(v, torch.tensor([0.4], dtype=torch.float64))


def test_templates_choose_the_neuron():
    cfg_lif = make_cfg("LIF", False, 0.0, tau=4.0)
    cfg_lif_di = make_cfg("LIF", True, 0.0, tau=4.0)
    cfg_if = make_cfg("IF", False, 0.0)
    x = torch.rand(5, 7, dtype=torch.float64) * 2
    v = torch.zeros(7, dtype=torch.float64)
    expect = {c: reference.fptt(x, v, c)[:2] for c in (cfg_lif, cfg_lif_di, cfg_if)}
    got_lif = neuron.hard_reset_fptt_template(x, v, 1.0, 0.0, 0.25, False)
    got_lif_kw = neuron.hard_reset_fptt_template(x, v, 1.0, 0.0, reciprocal_tau=0.25)
    got_di = neuron.hard_reset_fptt_template(x, v, 1.0, 0.0, 0.25, True)
    got_if = neuron.hard_reset_fptt_template(x, v, 1.0, 0.0)
    for got, cfg in ((got_lif, cfg_lif), (got_lif_kw, cfg_lif), (got_di, cfg_lif_di),
                     (got_if, cfg_if)):
        assert all(torch.equal(a, b) for a, b in zip(got, expect[cfg]))
    with pytest.raises(TypeError, match="unexpected keyword argument 'tau'"):
        neuron.hard_reset_fptt_template(x, v, 1.0, 0.0, tau=4.0)
    with pytest.raises(TypeError, match="detach_input"):
        neuron.hard_reset_fptt_template(x, v, 1.0, 0.0, detach_input=True)


def test_v_reset_none_is_soft_everywhere():
    x = torch.rand(6, 9, dtype=torch.float64) * 2
    v = torch.zeros(9, dtype=torch.float64)
    soft = neuron.LIF_soft_reset_fptt(x, v, 1.0, 0.5, False)
    via_hard = neuron.LIF_hard_reset_fptt(x, v, 1.0, None, 0.5, False)
    ref = reference.fptt(x, v, make_cfg("LIF", False, None))[:2]
    for a, b, c in zip(soft, via_hard, ref):
        assert torch.equal(a, b) and torch.equal(a, c)
    s1, v1 = neuron.LIFMultiStep.apply(x, v, 1.0, None, 2.0, False, 0, 0.5, False)
    assert torch.equal(s1, ref[0]) and torch.equal(v1, ref[1])
    node = neuron.MultiStepLIFNode(tau=2.0, v_reset=None)
    assert torch.equal(node(x), ref[0]) and torch.equal(node.v, ref[1])


@pytest.mark.parametrize("multi_step", [False, True])
@pytest.mark.parametrize("kind, detach_input", [("LIF", False), ("LIF", True), ("IF", False)])
@pytest.mark.parametrize("v_reset", [-0.1, None], ids=["hard", "soft"])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("surrogate_index", [1, 4])
def test_spec_autograd_functions_match_reference(kind, detach_input, v_reset, detach_reset,
                                                 surrogate_index, multi_step):
    """Each argument of LIFStep/LIFMultiStep/IFStep/IFMultiStep reaches its place: every
    reset, detach option and two surrogates, at θ = 0.8, τ = 3, α = 1.5 (where no two of them
    can stand in for each other), against autograd of the reference."""
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(5, 4, 3, generator=gen, dtype=torch.float64) * 1.5
    if not multi_step:
        x = x[0]
    v = torch.rand(x.shape[1:] if multi_step else x.shape, generator=gen, dtype=torch.float64)
    cfg = make_cfg(kind, detach_input, v_reset, surrogate_index=surrogate_index,
                   detach_reset=detach_reset, v_threshold=0.8, tau=3.0, alpha=1.5)
    xr, vr = x.clone().requires_grad_(), v.clone().requires_grad_()
    if kind == "LIF":
        fn = neuron.LIFMultiStep if multi_step else neuron.LIFStep
        s, vn = fn.apply(xr, vr, 0.8, v_reset, 1.5, detach_reset, surrogate_index, 1 / 3.0,
                         detach_input)
    else:
        fn = neuron.IFMultiStep if multi_step else neuron.IFStep
        s, vn = fn.apply(xr, vr, 0.8, v_reset, 1.5, detach_reset, surrogate_index)
    ws = torch.linspace(-1, 2, s.numel(), dtype=torch.float64).view(s.shape)
    (s * ws).sum().backward(retain_graph=True)
    (vn * 0.5).sum().backward()
    xa, va = x.clone().requires_grad_(), v.clone().requires_grad_()
    sr, vnr = reference.fptt_autograd(xa if multi_step else xa.unsqueeze(0), va, cfg)
    sr = sr if multi_step else sr[0]
    ((sr * ws).sum() + (vnr * 0.5).sum()).backward()
    assert torch.equal(s, sr) and torch.equal(vn, vnr)
    torch.testing.assert_close(xr.grad, xa.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(vr.grad, va.grad, rtol=1e-10, atol=1e-12)


NAMED_FUNCTIONS = sorted(name for name in neuron.__all__ if name.startswith(("LIF_", "IF_")))


@pytest.mark.parametrize("detach_input", [False, True])
@pytest.mark.parametrize("detach_reset", [False, True])
@pytest.mark.parametrize("name", NAMED_FUNCTIONS)
def test_named_functions_match_reference(name, detach_reset, detach_input):
    """Every function of the spec's named family against the reference's fptt,
    fptt_with_grad and bptt, at θ = 0.8, V_r = -0.2, τ = 2.5, α = 3, surrogate 5: each
    argument must reach the formula it names."""
    fn = getattr(neuron, name)
    kind = name.split("_")[0]
    soft = "_soft_reset_" in name
    multi = "fptt" in name or "bptt" in name
    scalars = dict(v_threshold=0.8, v_reset=-0.2, reciprocal_tau=0.4, alpha=3.0,
                   detach_reset=detach_reset, detach_input=detach_input,
                   grad_surrogate_function_index=5)
    cfg = make_cfg(kind, detach_input and kind == "LIF", None if soft else -0.2,
                   surrogate_index=5, detach_reset=detach_reset, v_threshold=0.8, tau=2.5,
                   alpha=3.0)
    gen = torch.Generator().manual_seed(len(name))
    shape = (6, 3, 5)
    t = dict(x=torch.rand(shape, generator=gen, dtype=torch.float64) * 1.5,
             v=torch.rand(shape[1:], generator=gen, dtype=torch.float64),
             grad_spike=torch.randn(shape, generator=gen, dtype=torch.float64),
             grad_v_next=torch.randn(shape[1:], generator=gen, dtype=torch.float64),
             grad_s_to_h=torch.rand(shape, generator=gen, dtype=torch.float64),
             grad_v_to_h=torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 0.5)
    if not multi:
        for k in ("x", "grad_spike", "grad_s_to_h", "grad_v_to_h"):
            t[k] = t[k][0]
    t.update(x_seq=t["x"], grad_spike_seq=t["grad_spike"])
    params = [p for p in inspect.signature(fn).parameters if p != "backend"]
    got = fn(*[t[p] if p in t else scalars[p] for p in params], backend="cpu")
    seq = (lambda a: a) if multi else (lambda a: a.unsqueeze(0))
    unseq = (lambda a: a) if multi else (lambda a: a[0])
    if "backward" in name or "bptt" in name:
        want = reference.bptt(seq(t["grad_spike"]), t["grad_v_next"], seq(t["grad_s_to_h"]),
                              seq(t["grad_v_to_h"]), cfg)
        want = (unseq(want[0]), want[1])
    elif "with_grad" in name:
        s, vn, gs2h, gv2h = reference.fptt_with_grad(seq(t["x"]), t["v"], cfg)
        want = (unseq(s), vn, unseq(gs2h), unseq(gv2h))
    else:
        s, vn = reference.fptt(seq(t["x"]), t["v"], cfg)[:2]
        want = (unseq(s), vn)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_package_reports_build():
    assert spikecore.cpu_available()
    assert isinstance(spikecore.openmp_enabled(), bool)
