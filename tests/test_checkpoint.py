"""Activation checkpointing with stateful nodes: spikecore.checkpoint gives the gradients and
the state of the same network run without checkpointing, bit for bit; torch.utils.checkpoint
alone, whose recomputation would start from the state the forward pass left, is refused."""
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as torch_checkpoint

import spikecore
from spikecore.checkpoint import checkpoint


def _grads_and_state(run, model, nodes, x):
    """Parameter gradients, input gradient and the nodes' state after ``run(x)`` and a
    backward of a fixed weighting of its output."""
    model.zero_grad(set_to_none=True)
    for node in nodes:
        node.reset()
    x = x.detach().clone().requires_grad_()
    out = run(x)
    weights = torch.linspace(-1, 1, out.numel()).view(out.shape)
    (out * weights).sum().backward()
    return ([p.grad.clone() for p in model.parameters()] + [x.grad],
            [node.v.detach().clone() for node in nodes])


def _assert_same(a, b):
    for p, q in zip(a[0] + a[1], b[0] + b[1]):
        assert torch.equal(p, q)
    assert any(g.abs().sum() > 0 for g in a[0])


# neurons per layer: small layers save their input, large ones ([T, N] >= 2 MiB) save H
@pytest.mark.parametrize("width", [16, 70000], ids=["input-saved", "h-saved"])
def test_multi_step_region_matches_no_checkpoint(width):
    torch.manual_seed(0)
    lin = nn.Linear(3, width)
    node = spikecore.MultiStepLIFNode(tau=2.0)
    plif = spikecore.MultiStepParametricLIFNode(init_tau=3.0, v_reset=None)
    model = nn.ModuleList([lin, plif])
    x = torch.rand(8, 2, 3) * 3

    def region(t):
        return plif(node(lin(t)) * 0.9 + lin(t) * 0.5)

    plain = _grads_and_state(region, model, [node, plif], x)
    checked = _grads_and_state(lambda t: checkpoint(region, t), model, [node, plif], x)
    _assert_same(checked, plain)


def test_single_step_nodes_over_time_and_regions_in_a_row():
    """A region that calls single-step nodes once per step, and the state carried from one
    region into the next (BPTT across both)."""
    torch.manual_seed(1)
    lin = nn.Linear(4, 12)
    a, b = spikecore.LIFNode(tau=2.0), spikecore.IFNode(v_reset=None)
    x = torch.rand(6, 3, 4) * 2

    def steps(t):   # t: [T, batch, 4], the nodes called once per step
        return torch.stack([b(a(lin(t[i]))) for i in range(t.shape[0])])

    def two_regions(run):
        return lambda t: torch.cat([run(steps, t[:3]), run(steps, t[3:])])

    plain = _grads_and_state(two_regions(lambda f, t: f(t)), lin, [a, b], x)
    checked = _grads_and_state(two_regions(checkpoint), lin, [a, b], x)
    _assert_same(checked, plain)


def test_nested_regions():
    torch.manual_seed(2)
    lin = nn.Linear(3, 10)
    n1, n2 = spikecore.MultiStepLIFNode(tau=2.0), spikecore.MultiStepIFNode()
    x = torch.rand(5, 2, 3) * 2

    def inner(t):
        return n2(t)

    def outer(t):
        return checkpoint(inner, n1(lin(t))) + n1(lin(t) * 0.5)

    plain = _grads_and_state(lambda t: n2(n1(lin(t))) + n1(lin(t) * 0.5), lin, [n1, n2], x)
    checked = _grads_and_state(lambda t: checkpoint(outer, t), lin, [n1, n2], x)
    _assert_same(checked, plain)


@pytest.mark.parametrize("reentrant", [False, True])
def test_torch_checkpoint_alone_is_refused(reentrant):
    lin = nn.Linear(3, 70000)
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = (torch.rand(8, 1, 3) * 2).requires_grad_()
    out = torch_checkpoint(lambda t: node(lin(t)), x, use_reentrant=reentrant)
    with pytest.raises(RuntimeError, match="MultiStepLIFNode was called during a backward pass"
                                           ".*spikecore.checkpoint"):
        out.sum().backward()


def test_checkpoint_arguments():
    node = spikecore.MultiStepLIFNode()
    x = torch.rand(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="use_reentrant=False"):
        checkpoint(node, x, use_reentrant=True)
    with pytest.raises(ValueError, match="context_fn"):
        checkpoint(node, x, context_fn=None)
    out = checkpoint(node, x, preserve_rng_state=False)   # other arguments reach torch
    assert out.shape == x.shape


@pytest.mark.parametrize("width", [16, 70000], ids=["input-saved", "h-saved"])
def test_region_inside_torch_compile(width):
    """Under torch.compile the region runs eagerly between the compiled graphs: the gradients
    and state equal the uncompiled network's, on the first (compiling) call and on a cached
    one."""
    torch.manual_seed(3)
    lin, head = nn.Linear(3, width), nn.Linear(width, 2)
    node = spikecore.MultiStepLIFNode(tau=2.0)
    model = nn.ModuleList([lin, head])
    x = torch.rand(8, 2, 3) * 3

    def region(t):
        return node(t) * 0.9 + node(t * 0.5)

    plain = _grads_and_state(lambda t: head(region(lin(t))), model, [node], x)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = torch.compile(lambda t: head(checkpoint(region, lin(t))), backend=backend)
    for _ in range(2):
        _assert_same(_grads_and_state(compiled, model, [node], x), plain)
    assert len(graphs) >= 2   # the Linear layers before and after the region were compiled
