"""Second derivatives: the fused backward is first-order only, and says so.

Differentiating the gradient of a spiking layer again (a gradient penalty, meta-learning) needs
the derivative of the BPTT recursion itself, which the kernels do not provide. Every route into
them must then raise when the second backward reaches the layer, instead of returning a finite
number that silently lacks the layer's terms; first-order gradients taken with
``create_graph=True`` keep their values. The reference built from plain PyTorch ops is the way
to second derivatives, and is checked here against finite differences.
"""
import pytest
import torch

import spikecore
from spikecore import neuron, reference
from helpers import make_cfg

MESSAGE = "cannot be differentiated again"


def _node(cls, **kw):
    return lambda x: cls(**kw)(x)


def _with_v_seq(x):
    node = spikecore.MultiStepLIFNode(tau=2.0)
    node.store_v_seq = True   # the general route (no plan)
    return node(x)


def _custom_op(x):
    cfg = make_cfg("LIF")
    return torch.ops.spikecore.neuron_forward(
        x, None, 0.0, None, *spikecore.ops.config_scalars(cfg), True, "", True, False)[0]


ROUTES = {
    "planned node": _node(spikecore.MultiStepLIFNode, tau=2.0),
    "single-step node": _node(spikecore.IFNode, v_reset=None),
    "general route": _with_v_seq,
    "parametric node": _node(spikecore.MultiStepParametricLIFNode),
    "LIFMultiStep": lambda x: neuron.LIFMultiStep.apply(
        x, torch.zeros(x.shape[1:]), 1.0, 0.0, 2.0, False, 0, 0.5, False)[0],
    "NeuronFunction, reference backend": lambda x: spikecore.autograd.NeuronFunction.apply(
        x, None, make_cfg("LIF", surrogate_index=1), True, "reference")[0],
    "custom operator": _custom_op,
}


@pytest.mark.parametrize("route", ROUTES)
def test_second_backward_raises_and_first_order_is_unchanged(route):
    layer = ROUTES[route]
    torch.manual_seed(0)
    x = (torch.randn(6, 5) + 0.5).requires_grad_()
    plain, = torch.autograd.grad(layer(x).sum(), x)
    graph, = torch.autograd.grad(layer(x).sum() + (x ** 3).sum(), x, create_graph=True)
    torch.testing.assert_close(graph.detach() - 3 * x.detach() ** 2, plain)
    with pytest.raises(RuntimeError, match=MESSAGE):
        graph.sum().backward()


def test_first_order_without_create_graph_carries_no_graph():
    x = torch.rand(4, 3, requires_grad=True)
    spikecore.MultiStepLIFNode()(x).sum().backward()
    assert x.grad is not None and x.grad.grad_fn is None and not x.grad.requires_grad


def test_reference_gives_the_second_derivative():
    """One step, loss on the spike: dL/dx = g'(x - θ), so d²L/dx² = g''(x - θ), compared with
    central differences of the reference's own first derivative."""
    cfg = make_cfg("IF", v_reset=None, surrogate_index=0, alpha=2.0)
    x = torch.linspace(-1.0, 3.0, 41, dtype=torch.float64).reshape(1, 41).requires_grad_()
    v0 = torch.zeros(41, dtype=torch.float64)

    def first(xs):
        xs = xs.detach().requires_grad_()
        return torch.autograd.grad(reference.fptt_autograd(xs, v0, cfg)[0].sum(), xs)[0]

    g, = torch.autograd.grad(reference.fptt_autograd(x, v0, cfg)[0].sum(), x,
                             create_graph=True)
    second, = torch.autograd.grad(g.sum(), x)
    eps = 1e-5
    numeric = (first(x + eps) - first(x - eps)) / (2 * eps)
    torch.testing.assert_close(second, numeric, rtol=1e-6, atol=1e-8)
    assert second.abs().max() > 0.1
