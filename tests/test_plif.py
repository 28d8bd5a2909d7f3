"""ParametricLIF: learnable 1/τ = sigmoid(w), the fused gradient for w against autograd."""
import math

import pytest
import torch

import spikecore
from spikecore import ops, reference
from spikecore.autograd import ParametricNeuronFunction, PlannedParametricNeuronFunction
from spikecore.plif import MultiStepParametricLIFNode, ParametricLIFNode
from helpers import grad_tol, make_cfg

CASES = [(di, v_reset, dr, sg) for di in (False, True) for v_reset in (0.0, None, -0.2)
         for dr in (False, True) for sg in range(7)]


def _autograd_reference(x, v0, w, cfg, g_s, g_v):
    xr = x.detach().clone().requires_grad_()
    wr = w.detach().clone().requires_grad_()
    s, v = reference.fptt_autograd(xr, v0, cfg, reciprocal_tau=torch.sigmoid(wr))
    ((s * g_s).sum() + (v * g_v).sum()).backward()
    return s, v, xr.grad, wr.grad


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("detach_input, v_reset, detach_reset, sg", CASES)
def test_plif_matches_autograd(detach_input, v_reset, detach_reset, sg, dtype, backend):
    torch.manual_seed(0)
    node = MultiStepParametricLIFNode(init_tau=3.0, detach_input=detach_input, v_reset=v_reset,
                                      surrogate_function=sg, detach_reset=detach_reset,
                                      v_threshold=0.8, alpha=3.0, backend=backend).to(dtype)
    with torch.no_grad():
        node.w.fill_(0.3)
    x = (torch.rand(7, 4, 9, dtype=dtype) * 1.5).requires_grad_()
    g_s, g_v = torch.randn(7, 4, 9, dtype=dtype), torch.randn(4, 9, dtype=dtype)
    s = node(x)
    ((s * g_s).sum() + (node.v * g_v).sum()).backward()
    cfg = make_cfg("LIF", detach_input, v_reset, sg, detach_reset, tau=3.0, v_threshold=0.8,
                   alpha=3.0)
    v0 = torch.full((4, 9), 0.0 if v_reset is None else v_reset, dtype=dtype)
    s_ref, v_ref, gx_ref, gw_ref = _autograd_reference(x, v0, node.w, cfg, g_s, g_v)
    assert torch.equal(s, s_ref) and torch.equal(node.v, v_ref)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(x.grad, gx_ref, **tol)
    torch.testing.assert_close(node.w.grad, gw_ref, **tol)
    assert node.w.grad.abs().item() > 0


def _plif_call(route, x, v, w, cfg, multi_step, backend):
    """(spike, v_next) of a learnable-k call with k = sigmoid(w), by the eager autograd Function
    or by the custom operator (the torch.compile route)."""
    k = torch.sigmoid(w)
    if route == "function":
        return ParametricNeuronFunction.apply(x, v, k, cfg, multi_step, backend)
    spike, v_next, _, _ = torch.ops.spikecore.neuron_forward(
        x, v, cfg.v_rest, k, *ops.config_scalars(cfg), multi_step, backend, True, False)
    return spike, v_next


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("multi_step", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given-v"])
@pytest.mark.parametrize("detach_input, v_reset, detach_reset, sg", CASES[::5])
def test_eager_function_equals_operator(detach_input, v_reset, detach_reset, sg, given_v,
                                        multi_step, backend):
    # Eager nodes take ParametricNeuronFunction, torch.compile the custom operator: the same
    # kernels, so the same bits, for outputs and for the gradients of x, v and w.
    torch.manual_seed(sg)
    cfg = make_cfg("LIF", detach_input, v_reset, sg, detach_reset, tau=3.0)
    shape = (6, 4, 7) if multi_step else (4, 7)
    x = torch.rand(shape, dtype=torch.float64) * 1.5
    v = torch.rand(shape[-2:], dtype=torch.float64) * 0.5 if given_v else None
    g_s, g_v = torch.randn(shape, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    results = []
    for route in ("function", "operator"):
        xr = x.clone().requires_grad_()
        vr = v.clone().requires_grad_() if given_v else None
        w = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        spike, v_next = _plif_call(route, xr, vr, w, cfg, multi_step, backend)
        ((spike * g_s).sum() + (v_next * g_v).sum()).backward()
        results.append((spike, v_next, xr.grad, w.grad) + ((vr.grad,) if given_v else ()))
    if multi_step or given_v or not detach_input:
        # (one step from rest with the undecayed input: dH/dk = -(V[-1] - V_r) = 0 exactly)
        assert results[0][3].abs().item() > 0
    for a, b in zip(*results):
        assert torch.equal(a, b)


# through the node's plan (bfloat16: computed in float32 by a plan that casts); the general
# route where bfloat16 cannot hold the fresh state V_r = 0.1
@pytest.mark.parametrize("dtype, v_reset, function", [
    (torch.float32, 0.0, PlannedParametricNeuronFunction),
    (torch.bfloat16, 0.0, PlannedParametricNeuronFunction),
    (torch.bfloat16, 0.1, ParametricNeuronFunction)])
def test_node_takes_the_eager_function(monkeypatch, dtype, v_reset, function):
    calls = []
    real = function.apply

    def spy(*args):
        calls.append(args[2])
        return real(*args)

    monkeypatch.setattr(function, "apply", spy)
    node = MultiStepParametricLIFNode(init_tau=2.0, v_reset=v_reset)
    node(torch.rand(3, 5, dtype=dtype)).sum().backward()
    assert len(calls) == 1 and calls[0].grad_fn is not None     # k = sigmoid(w), in the graph
    assert node.w.grad is not None and node.w.grad.abs().item() > 0


def test_plif_gradient_bit_identical_across_threads():
    n = 3 * 16384 + 5
    x = torch.rand(6, n) * 1.5
    grads = []
    old = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            node = MultiStepParametricLIFNode(init_tau=2.5)
            xr = x.clone().requires_grad_()
            node(xr).sum().backward()
            grads.append((node.w.grad.clone(), xr.grad.clone()))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(grads[0][0], grads[1][0]) and torch.equal(grads[0][1], grads[1][1])


def test_single_step_equals_multi_step():
    # float64 throughout (w too: a float32 w would round its gradient once per call)
    multi = MultiStepParametricLIFNode(init_tau=4.0).double()
    single = ParametricLIFNode(init_tau=4.0).double()
    x = torch.rand(5, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2
    xm, xs = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_m = multi(xm)
    out_s = torch.stack([single(xs[t]) for t in range(5)])
    assert torch.equal(out_m, out_s)
    out_m.sum().backward()
    out_s.sum().backward()
    torch.testing.assert_close(multi.w.grad, single.w.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(xm.grad, xs.grad, rtol=1e-10, atol=1e-12)


def test_init_and_repr():
    node = ParametricLIFNode(init_tau=5.0)
    assert node.tau == pytest.approx(5.0)
    assert torch.sigmoid(node.w).item() == pytest.approx(0.2)
    assert "init_tau=5.0" in repr(node) and "tau=5" in repr(node)
    assert [n for n, _ in node.named_parameters()] == ["w"]
    for bad, exc in ((1.0, ValueError), (0.5, ValueError), (math.inf, ValueError),
                     ("2", TypeError)):
        with pytest.raises(exc, match="init_tau"):
            ParametricLIFNode(init_tau=bad)


def test_inference_saves_nothing():
    node = MultiStepParametricLIFNode(init_tau=2.0)
    with torch.no_grad():
        out = node(torch.rand(4, 10))
    assert out.grad_fn is None
    node.reset()
    out = node(torch.rand(4, 10))       # w requires grad: training route
    assert out.grad_fn is not None


def test_tau_learns():
    torch.manual_seed(1)
    node = MultiStepParametricLIFNode(init_tau=10.0)
    opt = torch.optim.SGD(node.parameters(), lr=2.0)
    x = torch.full((16, 64), 1.2) + torch.rand(16, 64) * 0.1
    rates = []
    for _ in range(30):
        node.reset()
        rate = node(x).mean()
        loss = (rate - 0.4) ** 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        rates.append(rate.item())
    assert rates[-1] > rates[0] + 0.1 and node.tau < 10.0


@pytest.mark.skipif(not spikecore.cuda_available(),
                    reason=f"CUDA backend unavailable: {spikecore.cuda_unavailable_reason()}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("detach_input, v_reset", [(False, 0.0), (True, None)])
def test_plif_cuda_matches_cpu(dtype, detach_input, v_reset):
    torch.manual_seed(3)
    x = (torch.rand(6, 5, 32) * 1.5).to(dtype)
    grads = {}
    for device in ("cpu", "cuda"):
        node = MultiStepParametricLIFNode(init_tau=3.0, detach_input=detach_input,
                                          v_reset=v_reset).to(device)
        xr = x.to(device).detach().clone().requires_grad_()
        s = node(xr)
        s.float().sum().backward()
        grads[device] = (s.cpu(), xr.grad.cpu(), node.w.grad.cpu())
    assert torch.equal(grads["cpu"][0], grads["cuda"][0])
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(grads["cuda"][1], grads["cpu"][1], **tol)
    torch.testing.assert_close(grads["cuda"][2], grads["cpu"][2], **tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_plif_half_inputs_compute_in_float32(dtype, v_reset):
    """16-bit inputs on the CPU run the float32 kernels: the spikes of a float32 node given the
    same (rounded) inputs, and gradients of x and w equal to its, rounded, against autograd
    of the reference in float32."""
    gen = torch.Generator().manual_seed(4)
    x16 = (torch.rand(6, 3, 8, generator=gen) * 1.5).to(dtype).requires_grad_()
    g_s = torch.randn(6, 3, 8, generator=gen).to(dtype)
    kw = dict(init_tau=3.0, v_reset=v_reset, surrogate_function="SoftSign", v_threshold=0.8)
    half = MultiStepParametricLIFNode(**kw).to(dtype)
    s16 = half(x16)
    (s16 * g_s).sum().backward()
    cfg = make_cfg("LIF", False, v_reset, 3, tau=3.0, v_threshold=0.8)
    v0 = torch.full((3, 8), 0.0 if v_reset is None else v_reset)
    w32 = half.w.detach().float()
    s_ref, _, gx_ref, gw_ref = _autograd_reference(x16.detach().float(), v0, w32, cfg,
                                                   g_s.float(), torch.zeros(3, 8))
    assert s16.dtype == dtype and torch.equal(s16.float(), s_ref)
    torch.testing.assert_close(x16.grad, gx_ref.to(dtype), **grad_tol(dtype))
    torch.testing.assert_close(half.w.grad.float(), gw_ref, **grad_tol(dtype))
