"""Plans: a node checks its first call and makes a Plan, through which that call and the later
ones like it run without the checks. The planned route must give the bits of the general route
(NeuronFunction through dispatch), take only the calls it was checked for, and leave every error
message as it was."""
import copy
import pickle
import random

import pytest
import torch

import spikecore
from spikecore import backends, cpu_backend, dispatch, reference
from spikecore.autograd import (NeuronFunction, ParametricNeuronFunction, PlannedNeuronFunction,
                                PlannedParametricNeuronFunction)
from helpers import make_cfg, make_inputs

CONFIGS = [make_cfg("IF", False, 0.0, 0), make_cfg("LIF", False, None, 1, True),
           make_cfg("LIF", True, -0.3, 4), make_cfg("LIF", False, 0.0, 6, v_threshold=0.7)]


def _run(apply, x, v, g_s, g_v):
    """Spikes, last potential and the gradients of x and v for the loss sum(s·g_s + v·g_v)
    (``g_s`` or ``g_v`` None: that output does not reach the loss)."""
    x = x.detach().clone().requires_grad_()
    v = None if v is None else v.detach().clone().requires_grad_()
    spike, v_next = apply(x, v)
    loss = ((0 if g_s is None else (spike * g_s).sum())
            + (0 if g_v is None else (v_next * g_v).sum()))
    loss.backward()
    return spike, v_next, x.grad, None if v is None else v.grad


def _equal(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert (p is None) == (q is None)
        if p is not None:
            assert p.dtype == q.dtype and torch.equal(p, q)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize("multi_step", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given_v"])
@pytest.mark.parametrize("loss", ["s", "s+v", "v"])
def test_plan_equals_general_route(backend, dtype, cfg, multi_step, given_v, loss):
    steps, shape = (6, (3, 5)) if multi_step else (1, (3, 5))
    x, v0 = make_inputs(cfg, steps, shape, dtype, seed=7)
    if not multi_step:
        x = x[0]
    v = v0 if given_v else None
    g_s = torch.randn(x.shape, dtype=dtype) if "s" in loss else None
    g_v = torch.randn(shape, dtype=dtype) if "v" in loss else None
    plan = dispatch.plan(x, v, cfg, multi_step=multi_step, backend=backend)
    assert plan.accepts(x, v)
    planned = _run(lambda x, v: PlannedNeuronFunction.apply(x, v, plan), x, v, g_s, g_v)
    general = _run(lambda x, v: NeuronFunction.apply(x, v, cfg, multi_step, backend),
                   x, v, g_s, g_v)
    _equal(planned, general)
    # and the general route itself against autograd through plain PyTorch ops
    xs = x if multi_step else x.unsqueeze(0)
    xr = xs.detach().clone().requires_grad_()
    vr = (v0 if given_v else torch.full(shape, cfg.v_rest, dtype=dtype)).clone()
    vr.requires_grad_()
    s_ref, v_ref = reference.fptt_autograd(xr, vr, cfg)
    ((0 if g_s is None else (s_ref * g_s.reshape(s_ref.shape)).sum())
     + (0 if g_v is None else (v_ref * g_v).sum())).backward()
    assert torch.equal(planned[0].reshape(s_ref.shape), s_ref.detach())
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(planned[2].reshape(xr.grad.shape), xr.grad, **tol)
    if given_v:
        torch.testing.assert_close(planned[3], vr.grad, **tol)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", CONFIGS[1:], ids=range(1, len(CONFIGS)))
@pytest.mark.parametrize("multi_step", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given_v"])
def test_planned_learnable_tau_equals_general_route(backend, dtype, cfg, multi_step, given_v):
    """ParametricLIF through a plan: the bits of ParametricNeuronFunction, the gradient of k
    included; the plan is made once and serves two values of k."""
    shape = (3, 5)
    x, v0 = make_inputs(cfg, 6 if multi_step else 1, shape, dtype, seed=11)
    if not multi_step:
        x = x[0]
    v = v0 if given_v else None
    g_s, g_v = torch.randn(x.shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    plan = dispatch.plan(x, v, cfg, multi_step=multi_step, backend=backend)
    for w in (0.3, -1.2):
        results = []
        for planned in (True, False):
            k = torch.sigmoid(torch.tensor(w, dtype=dtype, requires_grad=True))
            k.retain_grad()
            if planned:
                def apply(x, v):
                    return PlannedParametricNeuronFunction.apply(x, v, k, plan)
            else:
                def apply(x, v):
                    return ParametricNeuronFunction.apply(x, v, k, cfg, multi_step, backend)
            results.append(_run(apply, x, v, g_s, g_v) + (k.grad,))
        _equal(*results)
        if multi_step or given_v or not cfg.detach_input:
            # (one step from rest with the undecayed input: dH/dk = -(V[-1] - V_r) = 0 exactly)
            assert results[0][-1].abs().item() > 0


def test_planned_learnable_tau_checks_k():
    cfg = CONFIGS[1]
    x = torch.rand(4, 3)
    plan = dispatch.plan(x, None, cfg)
    for k in (torch.tensor(float("nan")), torch.tensor(0.0), torch.tensor(-0.5)):
        with pytest.raises(ValueError, match="reciprocal_tau"):
            PlannedParametricNeuronFunction.apply(x, None, k.requires_grad_(), plan)
    node = spikecore.MultiStepParametricLIFNode(init_tau=2.0)
    node(x)
    with torch.no_grad():
        node.w.fill_(float("nan"))
    node.reset()
    for grad in (True, False):
        with torch.set_grad_enabled(grad), pytest.raises(ValueError, match="reciprocal_tau"):
            node(x)



@pytest.mark.parametrize("function", [PlannedNeuronFunction, PlannedParametricNeuronFunction])
def test_planned_apply_keeps_torch_route_under_functorch(function):
    """The planned Functions enter autograd's C++ apply directly, except under a functorch
    transform, where torch.autograd.Function.apply's Python layer must still run: its check
    refuses these Functions (they define no setup_context) instead of letting the kernels
    meet wrapped tensors. (A node refuses such tensors itself: tests/test_inputs.py.)"""
    x = torch.rand(4, 3)
    plan = dispatch.plan(x, None, CONFIGS[1])
    rest = (None, plan) if function is PlannedNeuronFunction else (None, torch.tensor(0.5), plan)
    spike, _ = function.apply(x.clone().requires_grad_(), *rest)   # the direct route
    assert spike.grad_fn is not None and torch.equal(spike, plan.forward(x, None)[0])
    with pytest.raises(RuntimeError, match="setup_context"):
        torch.func.grad(lambda t: function.apply(t, *rest)[0].sum())(x.clone())


def test_direct_apply_falls_back_without_torch_internals(monkeypatch):
    """Should a PyTorch version lack the private functions the direct apply uses, a Function
    keeps torch.autograd.Function.apply."""
    from spikecore.autograd import _direct_apply

    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, v):
            return 2 * x

        @staticmethod
        def backward(ctx, g):
            return 2 * g, None

    with monkeypatch.context() as patch:
        patch.delattr(torch._C, "_are_functorch_transforms_active")
        assert _direct_apply(Double) is Double
    assert Double.apply.__func__ is torch.autograd.Function.apply.__func__
    x = torch.ones(3, requires_grad=True)   # (torch's own apply needs what was removed)
    Double.apply(x, None).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 2.0))


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_plan_keeps_h_in_bfloat16(backend):
    cfg = CONFIGS[1]
    x, _ = make_inputs(cfg, 5, (4, 6), torch.float32, seed=3)
    g_s = torch.randn(x.shape)
    plan = dispatch.plan(x, None, cfg, backend=backend, h_dtype=torch.bfloat16)
    spike, _, h = plan.forward(x, None)
    assert h.dtype == torch.bfloat16
    planned = _run(lambda x, v: PlannedNeuronFunction.apply(x, v, plan), x, None, g_s, None)
    general = _run(lambda x, v: NeuronFunction.apply(x, v, cfg, True, backend, False,
                                                     torch.bfloat16), x, None, g_s, None)
    _equal(planned, general)


def test_plan_takes_any_strides():
    """Non-contiguous inputs and incoming gradients (expanded, transposed) just work."""
    cfg = CONFIGS[2]
    x, v0 = make_inputs(cfg, 5, (6, 4), torch.float32, seed=1)
    xt, vt = x.transpose(1, 2), v0.t()          # [5, 4, 6] and [4, 6], not contiguous
    plan = dispatch.plan(xt.contiguous(), vt.contiguous(), cfg)
    assert plan.accepts(xt, vt)
    g_s = torch.randn(1, 4, 6).expand(5, 4, 6)  # an expanded incoming gradient
    planned = _run(lambda x, v: PlannedNeuronFunction.apply(x, v, plan), xt, vt, g_s, None)
    general = _run(lambda x, v: NeuronFunction.apply(x, v, cfg, True, None),
                   xt.contiguous(), vt.contiguous(), g_s.contiguous(), None)
    _equal(planned, general)


def test_accepts_only_what_was_checked():
    cfg = CONFIGS[0]
    x = torch.rand(4, 3, 5)
    fresh = dispatch.plan(x, None, cfg)
    given = dispatch.plan(x, torch.zeros(3, 5), cfg)
    assert fresh.accepts(torch.rand(4, 3, 5), None)
    assert not fresh.accepts(x, torch.zeros(3, 5))             # a state it did not check
    assert given.accepts(x, torch.zeros(3, 5)) and not given.accepts(x, None)
    assert not given.accepts(x, torch.zeros(15))                # state of another shape
    assert not given.accepts(x, torch.zeros(3, 5, dtype=torch.float64))
    assert not given.accepts(x, torch.zeros(3, 5).to_sparse())
    for other in (torch.rand(4, 2, 5), torch.rand(5, 3, 5), x.double(), x[None],
                  x.to_sparse()):
        assert not fresh.accepts(other, None)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given-v"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_inputs_get_a_cast_plan_equal_to_the_general_route(dtype, given_v, backend):
    """float16/bfloat16 run in float32 on the CPU: their plan wraps the float32 plan and casts
    as the general route does, so every result is the general route's, bit for bit."""
    cfg = make_cfg("LIF", False, -0.25, 1, tau=3.0, v_threshold=0.8)   # V_r exact in 16 bits
    gen = torch.Generator().manual_seed(6)
    x = (torch.rand(5, 3, 7, generator=gen) * 1.5).to(dtype)
    v = torch.rand(3, 7, generator=gen).to(dtype) if given_v else None
    g, gv = torch.randn(5, 3, 7, generator=gen).to(dtype), torch.randn(3, 7, generator=gen).to(dtype)
    plan = dispatch.plan(x, v, cfg, backend=backend)
    assert isinstance(plan, backends.CastPlan) and plan.accepts(x, v)
    assert not plan.accepts(x.float(), None if v is None else v.float())
    want = dispatch.forward(x, v, cfg, backend=backend, save_h=True)
    got = plan.forward(x, v)
    assert [t.dtype for t in got] == [dtype, dtype, torch.float32]
    assert all(torch.equal(a, b) for a, b in zip(got, want[:3]))
    assert all(torch.equal(a, b) for a, b in zip(
        plan.backward(g, gv, got[2]), dispatch.backward(g, gv, cfg, h_seq=want.h_seq,
                                                         backend=backend)))
    # a training call, through the autograd Function the nodes use (small layer: it saves x)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    va = vb = None
    if given_v:
        va, vb = v.clone().requires_grad_(), v.clone().requires_grad_()
    s_plan, vn_plan = PlannedNeuronFunction.apply(xa, va, plan)
    s_gen, vn_gen = NeuronFunction.apply(xb, vb, cfg, True, backend)
    assert torch.equal(s_plan, s_gen) and torch.equal(vn_plan, vn_gen)
    ((s_plan * g).sum() + (vn_plan * gv).sum()).backward()
    ((s_gen * g).sum() + (vn_gen * gv).sum()).backward()
    assert xa.grad.dtype == dtype and torch.equal(xa.grad, xb.grad)
    if given_v:
        assert torch.equal(va.grad, vb.grad)
    # the learnable-1/τ backward
    got_k = plan.backward_plif(g, gv, got[2], v, 0.4)
    want_k = dispatch.backward_plif(g, gv, cfg.with_reciprocal_tau(0.4), h_seq=want.h_seq,
                                    v_init=v, backend=backend)
    assert all(torch.equal(a, b) for a, b in zip(got_k, want_k))


def test_no_cast_plan_where_a_fresh_state_must_be_filled():
    """A V_r bfloat16 cannot hold: a fresh state is then the rounded V_r, which only the
    general route fills in; a given state needs no filling."""
    cfg = make_cfg("LIF", False, 0.1, 0)
    x = torch.rand(4, 3, dtype=torch.bfloat16)
    assert dispatch.plan(x, None, cfg) is None
    assert isinstance(dispatch.plan(x, torch.zeros(3, dtype=torch.bfloat16), cfg),
                      backends.CastPlan)
    assert type(dispatch.plan(x.float(), None, cfg)) is not backends.CastPlan


def test_plan_checks_like_forward():
    cfg = CONFIGS[0]
    with pytest.raises(TypeError, match="x_seq must be a floating-point tensor"):
        dispatch.plan(torch.ones(3, 4, dtype=torch.int64), None, cfg)
    with pytest.raises(ValueError, match=r"v must have shape \(4,\)"):
        dispatch.plan(torch.rand(3, 4), torch.zeros(5), cfg)
    with pytest.raises(ValueError, match="leading time dimension"):
        dispatch.plan(torch.tensor(1.0), None, cfg)
    with pytest.raises(ValueError, match="backend must be one of"):
        dispatch.plan(torch.rand(3, 4), None, cfg, backend="tpu")


# --- nodes --------------------------------------------------------------------------------
def _node_grads(node, xs, steps_per_call):
    """Run ``xs`` through the node in calls of ``steps_per_call`` (single-step nodes: 1) without
    a reset in between; the spikes and the input's gradient of sum(spikes · weights)."""
    x = xs.detach().clone().requires_grad_()
    outs = []
    for t in range(0, x.shape[0], steps_per_call):
        chunk = x[t:t + steps_per_call]
        outs.append(node(chunk if node.multi_step else chunk[0]).reshape(chunk.shape))
    spikes = torch.cat(outs)
    weights = torch.linspace(-1, 1, spikes.numel(), dtype=spikes.dtype).reshape(spikes.shape)
    (spikes * weights).sum().backward()
    return spikes.detach(), x.grad


@pytest.mark.parametrize("multi_step", [True, False])
def test_node_over_calls_matches_autograd(multi_step):
    """Several calls that carry v (the graph through the state included): the node's first call
    makes a plan for a fresh state, the second one for a given state, later calls reuse it."""
    cfg = make_cfg("LIF", False, 0.0, 0, tau=3.0)
    xs, _ = make_inputs(cfg, 8, (2, 5), torch.float64, seed=5)
    node = (spikecore.MultiStepLIFNode if multi_step else spikecore.LIFNode)(tau=3.0).double()
    spikes, grad = _node_grads(node, xs, 2 if multi_step else 1)
    assert node.__dict__["_plan"].v_given
    xr = xs.detach().clone().requires_grad_()
    s_ref, _ = reference.fptt_autograd(xr, torch.zeros(2, 5, dtype=torch.float64), cfg)
    weights = torch.linspace(-1, 1, s_ref.numel(), dtype=torch.float64).reshape(s_ref.shape)
    (s_ref * weights).sum().backward()
    assert torch.equal(spikes, s_ref.detach())
    torch.testing.assert_close(grad, xr.grad, rtol=1e-9, atol=1e-11)


def test_changed_parameters_retire_the_plan():
    """A plan holds the config; changing a parameter must never run the old one."""
    x = torch.rand(6, 4, 3) * 2
    node = spikecore.MultiStepLIFNode(tau=2.0)
    node(x)
    for name, value in (("tau", 7.0), ("v_threshold", 0.4), ("surrogate_function", "Erf"),
                        ("detach_reset", True), ("v_reset", None)):
        setattr(node, name, value)
        assert node.__dict__["_plan"] is None
        node.reset()
        fresh = spikecore.MultiStepLIFNode(tau=node.tau, v_threshold=node.v_threshold,
                                           v_reset=node.v_reset, detach_reset=node.detach_reset,
                                           surrogate_function=node.surrogate_function)
        assert torch.equal(node(x), fresh(x)) and torch.equal(node.v, fresh.v)


def test_train_and_eval_keep_the_plan():
    """Switching mode (each epoch's evaluation) changes nothing a plan holds, so the plan stays;
    the results in either mode are a fresh node's."""
    x = (torch.rand(5, 3, 4) * 2).requires_grad_()
    model = torch.nn.Sequential(spikecore.MultiStepLIFNode(tau=2.0))
    node = model[0]
    model(x).sum().backward()
    plan = node.__dict__["_plan"]
    assert plan is not None
    for mode in (False, True):
        model.train(mode)
        assert node.training is mode and node.__dict__["_plan"] is plan
        node.reset()
        with torch.no_grad():
            out = model(x)
        assert node.__dict__["_plan"] is plan
        assert torch.equal(out, reference.fptt(x.detach(), torch.zeros(3, 4), node.config())[0])


def test_plan_follows_shape_dtype_and_backend():
    node = spikecore.MultiStepIFNode()
    node(torch.rand(3, 4))
    first = node.__dict__["_plan"]
    node.reset()
    node(torch.rand(3, 4))
    assert node.__dict__["_plan"] is first                  # reused
    node.reset()
    node(torch.rand(3, 7))
    assert node.__dict__["_plan"].shape == (3, 7)
    node.reset()
    node.double()(torch.rand(3, 7, dtype=torch.float64))
    assert node.__dict__["_plan"].dtype == torch.float64
    node.backend = "reference"
    node.reset()
    node(torch.rand(3, 7, dtype=torch.float64))
    assert node.__dict__["_plan"].backend.name == "reference"


def test_errors_after_a_plan_are_unchanged():
    node = spikecore.MultiStepLIFNode(tau=2.0)
    node(torch.rand(4, 8, 3))
    with pytest.raises(ValueError, match="call reset"):     # a new batch size, no reset
        node(torch.rand(4, 5, 3))
    node.reset()
    with pytest.raises(TypeError, match="dv_seq must be a floating-point tensor"):
        node(torch.ones(4, 8, 3, dtype=torch.int32))
    with pytest.raises(TypeError, match="expects a torch.Tensor"):
        node([1.0, 2.0])
    node(torch.rand(4, 8, 3))
    node.reset()
    with pytest.raises(TypeError, match="dv_seq must be a dense tensor"):
        node(torch.rand(4, 8, 3).to_sparse())
    single = spikecore.LIFNode(tau=2.0)
    single(torch.rand(3))                    # a plan for a given state after this call
    single(torch.rand(3))
    single.v = torch.zeros(3).to_sparse()
    with pytest.raises(TypeError, match="v must be a dense tensor"):
        single(torch.rand(3))


def test_nodes_with_a_plan_copy_and_pickle():
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = torch.rand(4, 3)
    node(x)
    for clone in (copy.deepcopy(node), pickle.loads(pickle.dumps(node))):
        assert clone.__dict__["_plan"] is None
        clone.reset()
        node.reset()
        assert torch.equal(clone(x), node(x))


def test_plan_threads_follow_torch(monkeypatch):
    """A plan picks the thread count on every call, not when it is made."""
    seen, cpu = [], backends.get("cpu")
    real_entry = cpu._entry

    def spying_entry(name, dtype, h_dtype=None):
        kernel = real_entry(name, dtype, h_dtype)

        def spy(*args):
            seen.append(args[-1])
            return kernel(*args)
        return spy

    monkeypatch.setattr(cpu, "_entry", spying_entry)
    threads = torch.get_num_threads()
    node = spikecore.MultiStepIFNode()
    big = torch.rand(2, cpu_backend.PARALLEL_MIN_ELEMENTS)
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            node.reset()
            with torch.no_grad():
                node(big)
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 2]


def test_float_state_other_than_rest_takes_the_general_route():
    """A float potential other than the rest value has no plan (the plan's fresh state is the
    rest potential); the general route broadcasts it."""
    cfg = make_cfg("LIF", False, 0.0, 0, tau=2.0)
    x = torch.rand(5, 3, dtype=torch.float64) * 1.5
    node = spikecore.MultiStepLIFNode(tau=2.0).double()
    node(x)                               # a plan for the fresh state
    node.v = 0.4
    spikes = node(x)
    s_ref, v_ref, _, _ = reference.fptt(x, torch.full((3,), 0.4, dtype=torch.float64), cfg)
    assert torch.equal(spikes, s_ref) and torch.equal(node.v, v_ref)
    node.reset()
    s_rest, _, _, _ = reference.fptt(x, torch.zeros(3, dtype=torch.float64), cfg)
    assert torch.equal(node(x), s_rest)


NODE_KINDS = [(spikecore.MultiStepLIFNode, dict(tau=2.5)), (spikecore.LIFNode, dict(tau=3.0)),
              (spikecore.MultiStepIFNode, {}), (spikecore.IFNode, dict(v_reset=None)),
              (spikecore.MultiStepParametricLIFNode, dict(init_tau=2.0)),
              (spikecore.ParametricLIFNode, dict(init_tau=3.0, detach_input=True))]


@pytest.mark.parametrize("seed", range(12))
def test_random_call_sequences_match_the_general_route(seed, monkeypatch):
    """Random sequences of calls (inputs with and without requires_grad, grad mode on and off,
    resets, detaches, parameter changes, new batch sizes and dtypes) on a node and on its twin
    that never uses a plan: the same spikes and states at every call, and the same gradients of
    every input and parameter at the end."""
    planned_calls = []
    # the plan's forwards (none calls another)
    for name in ("forward", "train_forward", "train_forward_plif"):
        method = getattr(cpu_backend._CPUPlan, name)
        monkeypatch.setattr(cpu_backend._CPUPlan, name,
                            lambda *a, _m=method, **k: planned_calls.append(1) or _m(*a, **k))
    rng = random.Random(seed)
    cls, kwargs = NODE_KINDS[seed % len(NODE_KINDS)]
    planned = cls(**kwargs)
    if hasattr(planned, "w"):   # a learnable tau: k = sigmoid(w) away from 1/init_tau
        with torch.no_grad():
            planned.w.fill_(rng.uniform(-1.5, 1.5))
    general = copy.deepcopy(planned)
    general._run_planned = lambda x, v: None       # the twin always takes the general route
    dtype, batch, inputs, losses = torch.float64, 3, [], [0, 0]
    for _ in range(14):
        action = rng.choice(["call"] * 5 + ["no_grad", "reset", "detach", "change", "resize"])
        if action == "reset" or action == "resize":
            for node in (planned, general):
                node.reset()
            if action == "resize":
                batch = rng.choice([2, 3, 5])
                dtype = rng.choice([torch.float32, torch.float64])
                planned.to(dtype)
                general.to(dtype)
            continue
        if action == "detach":
            planned.detach()
            general.detach()
            continue
        if action == "change":
            value = rng.choice([0.6, 0.9, 1.2])
            planned.v_threshold = general.v_threshold = value
            continue
        shape = ((4,) if planned.multi_step else ()) + (batch, 2)
        x = (torch.rand(shape, dtype=dtype) * 2).requires_grad_(rng.random() < 0.8)
        x2 = x.detach().clone().requires_grad_(x.requires_grad)
        inputs.append((x, x2))
        with torch.set_grad_enabled(action == "call"):
            s1, s2 = planned(x), general(x2)
        assert torch.equal(s1, s2)
        assert torch.equal(torch.as_tensor(planned.v), torch.as_tensor(general.v))
        if s1.requires_grad:
            w = torch.rand(s1.shape, dtype=dtype)
            losses = [losses[0] + (s1 * w).sum(), losses[1] + (s2 * w).sum()]
    assert len(planned_calls) == len(inputs)    # every call of the node, none of the twin
    if torch.is_tensor(losses[0]):
        losses[0].backward()
        losses[1].backward()
    assert any(x.grad is not None for x, _ in inputs) or not torch.is_tensor(losses[0])
    for x, x2 in inputs:
        assert (x.grad is None) == (x2.grad is None)
        if x.grad is not None:
            assert torch.equal(x.grad, x2.grad)
    for p1, p2 in zip(planned.parameters(), general.parameters()):
        assert (p1.grad is None) == (p2.grad is None)
        if p1.grad is not None:
            assert torch.equal(p1.grad, p2.grad)


def test_saved_tensor_hooks_see_what_a_planned_layer_saves():
    """Pack/unpack hooks (offloading, compression) get the one [T, N] tensor a planned layer
    saves, and its backward runs from what unpack returns."""
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = (torch.rand(4, 3, 5) * 2).requires_grad_()
    node(x)
    node.reset()   # the node has its plan
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t.clone()

    with torch.autograd.graph.saved_tensors_hooks(pack, torch.zeros_like):
        spike = node(x)
    assert packed == [x.shape]
    spike.backward(torch.ones_like(spike))
    # unpack gave zeros: the backward is that of a layer whose saved input was all zeros
    zeros = torch.zeros_like(x, requires_grad=True)
    node.reset()
    node(zeros).backward(torch.ones_like(spike))
    assert torch.equal(x.grad, zeros.grad) and zeros.grad.abs().sum() > 0
