"""Neuron nodes: state, reset, repr, multi-step == T single steps, inference route."""
import pytest
import torch

import spikecore
from spikecore import cpu_backend, dispatch, reference
from spikecore.autograd import NeuronFunction, PlannedNeuronFunction
from helpers import make_cfg

NODE_PAIRS = [
    (lambda **k: spikecore.LIFNode(tau=3.0, **k),
     lambda **k: spikecore.MultiStepLIFNode(tau=3.0, **k)),
    (lambda **k: spikecore.LIFNode(tau=3.0, detach_input=True, **k),
     lambda **k: spikecore.MultiStepLIFNode(tau=3.0, detach_input=True, **k)),
    (spikecore.IFNode, spikecore.MultiStepIFNode),
]


@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("pair", range(len(NODE_PAIRS)))
def test_multi_step_equals_single_steps(pair, v_reset):
    make_single, make_multi = NODE_PAIRS[pair]
    kw = dict(v_reset=v_reset, surrogate_function="Erf", alpha=3.0)
    single, multi = make_single(**kw), make_multi(**kw)
    x = (torch.rand(7, 2, 3, 5, dtype=torch.float64) * 1.2).requires_grad_()
    xs = x.detach().clone().requires_grad_()
    out_multi = multi(x)
    out_single = torch.stack([single(xs[t]) for t in range(7)])
    assert torch.equal(out_multi, out_single)
    assert torch.equal(multi.v, single.v)
    g = torch.randn_like(out_multi)
    (out_multi * g).sum().backward()
    (out_single * g).sum().backward()
    torch.testing.assert_close(x.grad, xs.grad, rtol=1e-12, atol=1e-12)


def test_state_and_reset():
    node = spikecore.MultiStepLIFNode(tau=2.0, v_reset=-0.5)
    assert node.v == -0.5
    x = torch.rand(4, 3, 2)
    node(x)
    assert isinstance(node.v, torch.Tensor) and node.v.shape == (3, 2)
    v_after_first = node.v.clone()
    node(x)  # continues from the stored potential
    s_cont = node.v.clone()
    node.reset()
    assert node.v == -0.5
    node(x)
    assert torch.equal(node.v, v_after_first)
    assert not torch.equal(s_cont, v_after_first)
    soft = spikecore.IFNode(v_reset=None)
    assert soft.v == 0.0


def test_initial_state_matches_reference():
    cfg = make_cfg("LIF", False, 0.2, tau=5.0)
    x = torch.rand(6, 10, dtype=torch.float64) * 2
    node = spikecore.MultiStepLIFNode(tau=5.0, v_reset=0.2)
    s, v, _, _ = reference.fptt(x, torch.full((10,), 0.2, dtype=torch.float64), cfg)
    assert torch.equal(node(x), s) and torch.equal(node.v, v)


def test_extra_repr_shows_every_parameter():
    text = repr(spikecore.MultiStepLIFNode(tau=7.5, detach_input=True, v_threshold=0.8,
                                           v_reset=None, surrogate_function="Sigmoid",
                                           alpha=4.0, detach_reset=True))
    for part in ("tau=7.5", "detach_input=True", "v_threshold=0.8", "v_reset=None",
                 "surrogate_function='Sigmoid'", "alpha=4.0", "detach_reset=True"):
        assert part in text
    assert "surrogate_function=1" not in repr(spikecore.IFNode(surrogate_function=1))
    assert "surrogate_function='Sigmoid'" in repr(spikecore.IFNode(surrogate_function=1))


def _spy_training_forwards(monkeypatch, route, plan_class=cpu_backend._CPUPlan):
    """Record, for each forward a node runs, whether it keeps something for the backward:
    dispatch.forward's save_h on the general route, a call of ``plan_class.train_forward`` on
    the plan route (its inference forward keeps nothing)."""
    calls = []
    if route == "general":
        orig = dispatch.forward

        def spy(*args, **kwargs):
            calls.append(kwargs.get("save_h", False))
            return orig(*args, **kwargs)

        monkeypatch.setattr(dispatch, "forward", spy)
    else:
        train, infer = plan_class.train_forward, plan_class.forward
        inside = []   # non-empty while train_forward runs (it may call forward itself)

        def spy_train(plan, x, v):
            calls.append(True)
            inside.append(1)
            try:
                return train(plan, x, v)
            finally:
                inside.pop()

        def spy_infer(plan, x, v, save_h=True, **kwargs):
            if not inside:
                calls.append(save_h)
            return infer(plan, x, v, save_h, **kwargs)

        monkeypatch.setattr(plan_class, "train_forward", spy_train)
        monkeypatch.setattr(plan_class, "forward", spy_infer)
    return calls


# bfloat16 inputs are computed in float32, through the CPU's 16-bit plan; the general route where
# a fresh state must be filled in (a V_r bfloat16 does not hold)
@pytest.mark.parametrize("route, dtype, v_reset", [
    ("general", torch.bfloat16, 0.1), ("plan", torch.float32, 0.0),
    ("plan", torch.bfloat16, 0.0)])
def test_inference_saves_nothing_and_training_saves_one_sequence(monkeypatch, route, dtype,
                                                                 v_reset):
    calls = _spy_training_forwards(monkeypatch, route, cpu_backend._HalfPlan
                                   if dtype == torch.bfloat16 else cpu_backend._CPUPlan)
    node = spikecore.MultiStepLIFNode(tau=2.0, v_reset=v_reset)
    x = torch.rand(5, 8, dtype=dtype)
    with torch.no_grad():
        assert node(x.requires_grad_()).grad_fn is None
    node.reset()
    assert node(torch.rand(5, 8, dtype=dtype)).grad_fn is None   # no input needs a gradient
    assert calls == [False, False]
    node.reset()
    out = node(torch.rand(5, 8, dtype=dtype, requires_grad=True))
    assert calls == [False, False, True]
    saved = out.grad_fn.saved_tensors
    # one [T, N] tensor: H, or (the CPU's small layers) the input H is recomputed from
    assert len(saved) == 1 and saved[0].shape == (5, 8) and saved[0].dtype == torch.float32


def test_training_graph_across_calls():
    """v carries the graph between calls: gradients reach the first call's input."""
    node = spikecore.LIFNode(tau=2.0)
    x1 = torch.rand(4, requires_grad=True)
    x2 = torch.full((4,), 0.3)
    node(x1)
    out = node(x2)                      # x2 needs no grad, but v does
    cfg = make_cfg("LIF", False, 0.0)
    assert out.grad_fn is not None
    out.sum().backward()
    xr = x1.detach().clone().requires_grad_()
    s, v = reference.fptt_autograd(xr.unsqueeze(0), torch.zeros(4), cfg)
    s2, _ = reference.fptt_autograd(x2.unsqueeze(0), v, cfg)
    s2.sum().backward()
    torch.testing.assert_close(x1.grad, xr.grad)


@pytest.mark.parametrize("dtype, v_reset, function", [
    (torch.float32, 0.1, PlannedNeuronFunction), (torch.bfloat16, 0.0, PlannedNeuronFunction),
    (torch.bfloat16, 0.1, NeuronFunction)])
def test_node_runs_through_neuron_function(dtype, v_reset, function):
    """A plan, unless the input's dtype cannot hold the fresh state (V_r = 0.1 in bfloat16):
    the general Function fills that one in."""
    node = spikecore.MultiStepIFNode(v_reset=v_reset)
    x = torch.rand(3, 4, dtype=dtype, requires_grad=True)
    out = node(x)
    assert type(out.grad_fn).__name__ == function.__name__ + "Backward"


def test_any_trailing_shape():
    node = spikecore.MultiStepLIFNode(tau=2.0)
    for shape in [(4,), (4, 2), (4, 2, 3, 5), (4, 1, 1, 1, 2)]:
        node.reset()
        x = torch.rand(shape) * 2
        assert node(x).shape == shape
    single = spikecore.LIFNode(tau=2.0)
    assert single(torch.tensor(1.5)).shape == ()
