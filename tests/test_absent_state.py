"""State inputs that are not given: ``v=None`` (every neuron starts at rest) and
``grad_v_next=None`` (the last potential does not reach the loss).

The nodes' training route relies on both, so each must equal the explicit tensor it stands for,
on every backend, bit for bit (the same arithmetic runs either way).
"""
import pytest
import torch

import spikecore
from spikecore import dispatch
from spikecore.autograd import NeuronFunction
from spikecore.plif import MultiStepParametricLIFNode
from helpers import all_configs, cfg_id, make_cfg, make_inputs

BACKENDS = ["cpu", "reference"]
CONFIGS = list(all_configs())[::5]   # every charge and reset, several surrogates


def _rest(cfg, shape, dtype):
    return torch.full(shape, cfg.v_rest, dtype=dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("multi_step, steps", [(True, 6), (True, 1), (True, 0), (False, 1)],
                         ids=["T6", "T1", "T0", "single"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_forward_without_v_starts_at_rest(cfg, multi_step, steps, backend):
    x, _ = make_inputs(cfg, max(steps, 1), (3, 37), torch.float32)
    x = x[:steps] if multi_step else x[0]
    state = x.shape[1:] if multi_step else x.shape
    kw = dict(multi_step=multi_step, backend=backend, save_h=True, save_v=True, with_grad=True)
    got = dispatch.forward(x, None, cfg, **kw)
    want = dispatch.forward(x, _rest(cfg, state, x.dtype), cfg, **kw)
    for name, g, w in zip(got._fields, got, want):
        assert g.shape == w.shape, name
        assert torch.equal(g, w), name
    if steps == 0:   # no step: the state is the resting potential
        assert torch.equal(got.v_next, _rest(cfg, state, x.dtype))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("multi_step, steps", [(True, 6), (True, 0), (False, 1)],
                         ids=["T6", "T0", "single"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_backward_absent_inputs(cfg, multi_step, steps, backend):
    """An absent grad_v_next is zero; an absent V[-1] of the learnable-1/tau backward is the
    resting potential."""
    x, v = make_inputs(cfg, max(steps, 1), (4, 29), torch.float64)
    x = x[:steps] if multi_step else x[0]
    fwd = dispatch.forward(x, v, cfg, multi_step=multi_step, backend=backend, save_h=True,
                           with_grad=True)
    gs = torch.randn_like(x)
    zeros = torch.zeros_like(v)
    for route in (dict(h_seq=fwd.h_seq),
                  dict(grad_s_to_h=fwd.grad_s_to_h, grad_v_to_h=fwd.grad_v_to_h)):
        got = dispatch.backward(gs, None, cfg, multi_step=multi_step, backend=backend, **route)
        want = dispatch.backward(gs, zeros, cfg, multi_step=multi_step, backend=backend, **route)
        assert all(torch.equal(g, w) for g, w in zip(got, want))
    if cfg.neuron != "LIF":   # a learnable time constant exists for LIF only
        return
    got = dispatch.backward_plif(gs, None, cfg, h_seq=fwd.h_seq, v_init=v,
                                 multi_step=multi_step, backend=backend)
    want = dispatch.backward_plif(gs, zeros, cfg, h_seq=fwd.h_seq, v_init=v,
                                  multi_step=multi_step, backend=backend)
    assert all(torch.equal(g, w) for g, w in zip(got, want))
    rest = torch.full_like(v, cfg.v_rest)
    got = dispatch.backward_plif(gs, zeros, cfg, h_seq=fwd.h_seq, v_init=None,
                                 multi_step=multi_step, backend=backend)
    want = dispatch.backward_plif(gs, zeros, cfg, h_seq=fwd.h_seq, v_init=rest,
                                  multi_step=multi_step, backend=backend)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS[::3], ids=cfg_id)
def test_function_gradients_with_unused_outputs(cfg, backend):
    """v=None gets no gradient; a loss on v_next alone, on the spikes alone, or on both gives
    the gradients of the same function with an explicit resting potential."""
    x0, _ = make_inputs(cfg, 5, (2, 11), torch.float64)
    for use in ("spike", "v_next", "both"):
        x = x0.clone().requires_grad_()
        xr, vr = x0.clone().requires_grad_(), _rest(cfg, (2, 11), x0.dtype).requires_grad_()
        s, vn = NeuronFunction.apply(x, None, cfg, True, backend)
        sr, vnr = NeuronFunction.apply(xr, vr, cfg, True, backend)
        w = torch.linspace(-1, 1, s.numel(), dtype=x.dtype).view_as(s)
        loss = {"spike": lambda s, vn: (s * w).sum(), "v_next": lambda s, vn: vn.pow(2).sum(),
                "both": lambda s, vn: (s * w).sum() + vn.pow(2).sum()}[use]
        loss(s, vn).backward()
        loss(sr, vnr).backward()
        assert torch.equal(x.grad, xr.grad), use
        assert vr.grad is not None


@pytest.mark.parametrize("node_cls, kwargs", [
    (spikecore.MultiStepLIFNode, dict(tau=2.0)),
    (spikecore.MultiStepIFNode, dict(v_reset=None)),
    (MultiStepParametricLIFNode, dict(init_tau=3.0))], ids=["lif", "if-soft", "plif"])
def test_fresh_node_matches_explicit_start(node_cls, kwargs):
    """A node after reset() (v a float) trains exactly like the same node started from a
    tensor of its resting potential."""
    torch.manual_seed(3)
    x = (torch.rand(6, 2, 9, dtype=torch.float64) * 2).requires_grad_()
    fresh, explicit = node_cls(**kwargs).double(), node_cls(**kwargs).double()
    explicit.v = torch.full((2, 9), fresh.v, dtype=torch.float64)
    out_f, out_e = fresh(x), explicit(x)
    assert torch.equal(out_f, out_e) and torch.equal(fresh.v, explicit.v)
    g = torch.randn_like(out_f)
    gf = torch.autograd.grad(out_f, [x, *fresh.parameters()], g)
    ge = torch.autograd.grad(out_e, [x, *explicit.parameters()], g)
    assert all(torch.equal(a, b) for a, b in zip(gf, ge))


def test_node_config_follows_attribute_changes():
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = torch.full((3, 4), 0.9)
    assert node(x).sum() == 0            # tau=2: H = 0.45, 0.675, 0.79 stays below 1
    assert node.config().reciprocal_tau == 0.5
    node.reset()
    node.tau = 1.0                       # H = X: 0.9 < 1, still no spike; threshold next
    assert node.config().reciprocal_tau == 1.0
    node.v_threshold = 0.5
    node.reset()
    assert node(x).sum() == 12           # every step fires now
    with pytest.raises(ValueError, match="tau"):
        node.tau = -1.0
        node.config()


HALF = [torch.float16, torch.bfloat16]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", HALF, ids=["f16", "bf16"])
@pytest.mark.parametrize("v_reset", [-0.3, 0.25, 0.0])
def test_16_bit_fresh_state_is_the_rest_its_dtype_holds(v_reset, dtype, backend):
    """These backends compute 16-bit inputs in float32. A state that is not given starts from
    V_reset as the input's dtype holds it (torch.full in that dtype), as a given state of
    that value does, as the CUDA kernels and the torch.compile route do; -0.3 is not exact in
    either 16-bit dtype, so starting from the float32 value would differ."""
    cfg = make_cfg("LIF", False, v_reset)
    torch.manual_seed(4)
    x = (torch.rand(5, 3, 200) * 2.2).to(dtype)
    rest = torch.full((3, 200), v_reset, dtype=dtype)
    kw = dict(backend=backend, save_h=True, save_v=True, with_grad=True)
    got, want = dispatch.forward(x, None, cfg, **kw), dispatch.forward(x, rest, cfg, **kw)
    for name, g, w in zip(got._fields, got, want):
        assert torch.equal(g, w), name
    gs = torch.randn(x.shape).to(dtype)
    got = dispatch.backward_plif(gs, None, cfg, h_seq=want.h_seq, v_init=None, backend=backend)
    want = dispatch.backward_plif(gs, None, cfg, h_seq=want.h_seq, v_init=rest, backend=backend)
    assert all(torch.equal(g, w) for g, w in zip(got, want))


@pytest.mark.parametrize("node_cls", [spikecore.MultiStepLIFNode, MultiStepParametricLIFNode],
                         ids=["lif", "plif"])
def test_16_bit_fresh_node_eager_and_compiled_agree(node_cls):
    """A fresh float16 node with V_reset = -0.3 (not exact in float16): eager, explicitly
    started and compiled (the custom-operator route) give the same spikes, state and
    gradients."""
    torch.manual_seed(5)
    x0 = (torch.rand(6, 2, 40) * 2.2).half()
    g = torch.randn(6, 2, 40).half()
    results = []
    for route in ("fresh", "explicit", "compiled"):
        node = node_cls(v_reset=-0.3).half()
        if route == "explicit":
            node.v = torch.full((2, 40), -0.3, dtype=torch.float16)
        run = torch.compile(node, backend="aot_eager") if route == "compiled" else node
        x = x0.clone().requires_grad_()
        out = run(x)
        grads = torch.autograd.grad(out, [x, *node.parameters()], g)
        results.append((out, node.v, *grads))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
