"""backward_from_input: BPTT that recomputes H from the forward's input instead of reading a
saved H. It must give the bits of the backward from the saved H for every configuration,
dtype, length, absent or given state, and thread count."""
import pytest
import torch

from spikecore import _cpu_kernels as K, backends
from helpers import all_configs, cfg_id, make_inputs

KINDS = {torch.float32: (K.FLOAT32, "float"), torch.float64: (K.FLOAT64, "double")}


def _view(t):
    kind = KINDS[t.dtype][0]
    if t.dim() == 1:
        return K.TensorBuffer(t.data_ptr(), -1, t.numel(), kind, t)
    return K.TensorBuffer(t.data_ptr(), t.shape[0], t.shape[1], kind, t)


def _from_input(g, gvn, x, v, cfg, threads):
    absent = K.TensorBuffer(0, -1, 0, KINDS[x.dtype][0])
    gx, gv = torch.empty_like(x), torch.empty(x.shape[1], dtype=x.dtype)
    K.backward_from_input[KINDS[x.dtype][1]](
        _view(g), absent if gvn is None else _view(gvn), _view(x),
        absent if v is None else _view(v), _view(gx), _view(gv), *cfg.kernel_args, threads)
    return gx, gv


# (T, N): a few steps, one step, none, many steps (narrow chunks), several blocks of neurons
SIZES = [(6, 37), (1, 5), (0, 7), (300, 40), (3, 20000)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", list(all_configs()), ids=cfg_id)
def test_equals_the_backward_from_saved_h(cfg, dtype):
    cpu = backends.get("cpu")
    for i, (steps, n) in enumerate(SIZES):
        x, v0 = make_inputs(cfg, steps, (n,), dtype, seed=steps + n)
        g = torch.randn(steps, n, dtype=dtype)
        for v, gvn in ((v0, torch.randn(n, dtype=dtype)), (None, None)):
            h = cpu.forward(x, v, cfg, steps, save_h=True, state_shape=(n,))[2]
            want = cpu.backward(g, gvn, cfg, steps, h_seq=h, state_shape=(n,))
            for threads in (1, 3):
                got = _from_input(g, gvn, x, v, cfg, threads)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), \
                    (steps, n, v is None, threads)


def _plif_from_input(g, gvn, x, v, cfg, threads):
    absent = K.TensorBuffer(0, -1, 0, KINDS[x.dtype][0])
    gx, gv = torch.empty_like(x), torch.empty(x.shape[1], dtype=x.dtype)
    sums = torch.empty(x.shape[1], dtype=torch.float64)
    total = K.backward_plif_from_input[KINDS[x.dtype][1]](
        _view(g), absent if gvn is None else _view(gvn), _view(x),
        absent if v is None else _view(v), _view(gx), _view(gv), sums.numpy(),
        *cfg.kernel_args, threads)
    return gx, gv, total, sums


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", list(all_configs())[::2], ids=cfg_id)
def test_learnable_tau_backward_equals_the_one_from_saved_h(cfg, dtype):
    """The learnable-1/tau backward from the input: dL/dX, dL/dV[-1], the per-neuron sums and
    dL/d(1/tau) are the bits of backward_plif from the forward's H."""
    cpu = backends.get("cpu")
    for steps, n in SIZES:
        x, v0 = make_inputs(cfg, steps, (n,), dtype, seed=steps + n + 1)
        g = torch.randn(steps, n, dtype=dtype)
        for v, gvn in ((v0, torch.randn(n, dtype=dtype)), (None, None)):
            h = cpu.forward(x, v, cfg, steps, save_h=True, state_shape=(n,))[2]
            sums = torch.empty(n, dtype=torch.float64)
            gx, gv = torch.empty_like(x), torch.empty(n, dtype=dtype)
            absent = K.TensorBuffer(0, -1, 0, KINDS[dtype][0])
            total = K.backward_plif[KINDS[dtype][1]](
                _view(g), absent if gvn is None else _view(gvn), _view(h),
                absent if v is None else _view(v), _view(gx), _view(gv), sums.numpy(),
                *cfg.kernel_args, 2)
            for threads in (1, 3):
                got = _plif_from_input(g, gvn, x, v, cfg, threads)
                assert torch.equal(got[0], gx) and torch.equal(got[1], gv), (steps, n, threads)
                assert torch.equal(got[3], sums) and got[2] == total, (steps, n, threads)


# --- the route of the nodes' plans --------------------------------------------------------------
@pytest.fixture
def no_recompute(monkeypatch):
    """Make every [T, N] tensor count as large (no recomputation) while the test runs."""
    from spikecore import cpu_backend
    monkeypatch.setattr(cpu_backend, "RECOMPUTE_MAX_BYTES", 0)


def _large_plan(x, v, cfg):
    """The plan of a layer that saves H: ``cpu_backend.RECOMPUTE_MAX_BYTES`` set to 0."""
    from spikecore import cpu_backend, dispatch
    old, cpu_backend.RECOMPUTE_MAX_BYTES = cpu_backend.RECOMPUTE_MAX_BYTES, 0
    try:
        return dispatch.plan(x, v, cfg)
    finally:
        cpu_backend.RECOMPUTE_MAX_BYTES = old


def _planned(x, v, plan, g_s, g_v):
    from spikecore.autograd import PlannedNeuronFunction
    x = x.detach().clone().requires_grad_()
    v = None if v is None else v.detach().clone().requires_grad_()
    spike, v_next = PlannedNeuronFunction.apply(x, v, plan)
    ((spike * g_s).sum() + (v_next * g_v).sum()).backward()
    return spike, v_next, x.grad, None if v is None else v.grad


def test_small_layers_save_their_input():
    from spikecore import dispatch
    cfg = list(all_configs())[5]
    x, v = make_inputs(cfg, 6, (4, 9), torch.float32)
    plan = dispatch.plan(x, v, cfg)
    assert plan.recompute
    spike, v_next, saved = plan.train_forward(x, v)
    assert len(saved) == 2 and saved[0].data_ptr() == x.data_ptr() and saved[1] is v
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)        # same values, other strides
    spike_t, _, saved_t = plan.train_forward(xt, v)
    assert saved_t[0].is_contiguous() and torch.equal(saved_t[0], x)
    assert torch.equal(spike_t, spike)


def test_large_layers_and_16_bit_h_save_h(no_recompute):
    from spikecore import dispatch
    cfg = list(all_configs())[5]
    x, v = make_inputs(cfg, 6, (4, 9), torch.float32)
    for h_dtype in (None, torch.bfloat16):
        plan = dispatch.plan(x, v, cfg, h_dtype=h_dtype)
        assert not plan.recompute
        spike, v_next, saved = plan.train_forward(x, v)
        h = dispatch.forward(x, v, cfg, save_h=True, h_dtype=h_dtype).h_seq
        assert len(saved) == 1 and torch.equal(saved[0], h)


@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given-v"])
def test_both_routes_give_the_same_gradients(given_v):
    from spikecore import dispatch
    for cfg in list(all_configs())[::7]:
        x, v0 = make_inputs(cfg, 5, (3, 8), torch.float64, seed=2)
        v = v0 if given_v else None
        g_s, g_v = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
        small, large = dispatch.plan(x, v, cfg), _large_plan(x, v, cfg)
        assert small.recompute and not large.recompute
        a, b = _planned(x, v, small, g_s, g_v), _planned(x, v, large, g_s, g_v)
        for p, q in zip(a, b):
            assert (p is None and q is None) or torch.equal(p, q)


def _planned_plif(x, v, k, plan, g_s, g_v):
    from spikecore.autograd import PlannedParametricNeuronFunction
    x = x.detach().clone().requires_grad_()
    v = None if v is None else v.detach().clone().requires_grad_()
    k = k.detach().clone().requires_grad_()
    spike, v_next = PlannedParametricNeuronFunction.apply(x, v, k, plan)
    ((spike * g_s).sum() + (v_next * g_v).sum()).backward()
    return spike, v_next, x.grad, None if v is None else v.grad, k.grad


@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given-v"])
def test_learnable_tau_routes_give_the_same_gradients(given_v):
    """A small layer with a learnable 1/tau saves its input and V[-1]; a large one H and V[-1]:
    the same outputs and the same gradients of x, v and k, bit for bit."""
    from spikecore import dispatch
    for cfg in [c for c in all_configs() if c.neuron == "LIF"][::5]:
        x, v0 = make_inputs(cfg, 5, (3, 8), torch.float64, seed=3)
        v = v0 if given_v else None
        k = torch.tensor(0.37, dtype=torch.float64)
        g_s, g_v = torch.randn(5, 3, 8, dtype=torch.float64), torch.randn(3, 8, dtype=torch.float64)
        small = dispatch.plan(x, v, cfg)
        spike, v_next, saved = small.train_forward_plif(x, v, 0.37)
        assert small.recompute and saved[0].data_ptr() == x.data_ptr() and saved[1] is v
        large = _large_plan(x, v, cfg)
        assert not large.recompute
        a, b = _planned_plif(x, v, k, small, g_s, g_v), _planned_plif(x, v, k, large, g_s, g_v)
        for p, q in zip(a, b):
            assert (p is None and q is None) or torch.equal(p, q), cfg


def test_changing_the_input_in_place_before_backward_is_an_error():
    """The small layers' backward reads the input again, so autograd refuses an input that was
    changed in place after the forward (as for any PyTorch op that saves its input)."""
    import spikecore
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = (torch.rand(4, 3, 5) * 2).requires_grad_()
    h = x * 1.0
    out = node(h)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()
