"""Training-epoch benchmark: the model of ``spikecore train`` built with spikecore's nodes vs the
same model with the plain PyTorch autograd loop (and SpikingJelly / snnTorch nodes if installed).

The network is :func:`spikecore.models.mlp` (Flatten -> Linear(64, hidden) -> LIF ->
Linear(hidden, 10) -> LIF, LIF tau=2, hard reset to 0, detach_reset=True, ATan), T=8 steps of
direct encoding, on the digits data of :mod:`spikecore.data`, Adam, cross-entropy on 5 x the
mean output over T: the defaults of ``spikecore train``, including its optimiser
(:class:`spikecore.optim.Adam`; ``--optimizer torch-fused`` runs ``torch.optim.Adam(fused=True)``
and ``--optimizer default`` PyTorch's default Adam instead, for every candidate alike). Every
candidate starts from the SAME initial weights and sees the SAME batches; only the neuron layers
differ, and what each candidate's user calls before a batch to drop the previous state
(``reset_net`` for spikecore's and SpikingJelly's nodes; nothing for the plain loop and the
snnTorch loop, which start every call at rest). Before timing, the
outputs and weight gradients of the first batch are compared with spikecore's.

Direct encoding repeats each image over T as a view, so the model's first Linear layer runs once
per sample and its output is shared by the T steps (:class:`spikecore.models.SeqToANN`), for
every candidate alike. ``--per-step-input`` feeds a copy instead, so that the first Linear layer
runs at every step, as it did before that shortcut.

Epochs are interleaved (epoch e of every candidate, then epoch e+1, ...); the table gives the
median epoch time and spikecore's end-to-end speed-up over each candidate: the ratio of the
medians, and the median of the per-epoch ratios ("paired": each epoch against spikecore's epoch
of the same round, which cancels most of a drift in the host's speed).

    python benchmarks/bench_train.py [--epochs 5] [--threads 2] [--hidden 128] [-T 8]
                                     [--optimizer {spikecore,torch-fused,default}]
                                     [--neuron {lif,plif}] [--bare] [--per-step-input]

``--neuron plif`` builds the model with ParametricLIF nodes (learnable 1/tau = sigmoid(w), init
tau 2) and compares them with the plain loop learning the same w, and with SpikingJelly's
ParametricLIFNode (snnTorch has no such neuron).

``--bare`` adds a diagnostic candidate: spikecore's CPU kernels behind the thinnest possible
``torch.autograd.Function`` (no checks, no state, no dispatch), the least that any Python
wrapper of these kernels can cost inside a training step.
"""
import argparse
import copy
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from spikecore import _cpu_kernels, cpu_backend  # noqa: E402
from spikecore import data as _data  # noqa: E402
from spikecore import models, reference  # noqa: E402
from spikecore.nodes import BaseNode, MultiStepLIFNode  # noqa: E402
from spikecore.plif import ParametricLIFNode  # noqa: E402
from spikecore.train import make_optimizer  # noqa: E402
from spikecore.utils import reset_net  # noqa: E402


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per candidate")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--timesteps", "-T", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--max-batches", type=int, default=None, help="batches per epoch (tests)")
    p.add_argument("--no-peers", action="store_true", help="skip SpikingJelly and snnTorch")
    p.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="spikecore",
                   help="Adam as spikecore train makes it, PyTorch's fused Adam, or PyTorch's "
                        "default Adam")
    p.add_argument("--neuron", choices=("lif", "plif"), default="lif",
                   help="LIF nodes, or ParametricLIF nodes with a learnable time constant")
    p.add_argument("--bare", action="store_true",
                   help="also time the kernels behind a bare autograd.Function (diagnostic)")
    p.add_argument("--per-step-input", action="store_true",
                   help="feed the encoded input as a copy: the first Linear runs at every step")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --- neuron layers of the other candidates --------------------------------------------------------
class PlainLIF(nn.Module):
    """The plain PyTorch autograd loop over time (spikecore.reference.fptt_autograd) with the
    configuration of the spikecore node it replaces; for a ParametricLIF node, a copy of its w
    and 1/tau = sigmoid(w) computed by autograd too."""

    def __init__(self, node: BaseNode):
        super().__init__()
        self.cfg = node.config()
        if isinstance(node, ParametricLIFNode):
            self.w = nn.Parameter(node.w.detach().clone())

    def forward(self, x_seq):
        v = torch.full(x_seq.shape[1:], self.cfg.v_rest, dtype=x_seq.dtype)
        k = torch.sigmoid(self.w) if hasattr(self, "w") else None
        return reference.fptt_autograd(x_seq, v, self.cfg, reciprocal_tau=k)[0]


_BARE_FORWARD = _cpu_kernels.forward["float", "float"]
_BARE_BACKWARD = _cpu_kernels.backward["float", "float"]


class _BareFunction(torch.autograd.Function):
    """The CPU kernels with nothing around them: C-contiguous float32 ``[T, *]`` input (T > 0),
    fresh state, only H saved, the kernels' float32 specialisations called directly with the
    CPU backend's thread rule. Each tensor goes to the kernel as a TensorBuffer of its memory."""

    @staticmethod
    def _buffers(steps, n, *tensors):
        """``[T, N]`` buffers of ``tensors`` (the last one a ``[N]`` state), then the kernels'
        absent sequence ``[0, N]`` and absent state ``[0]``."""
        view, f32 = _cpu_kernels.TensorBuffer, _cpu_kernels.FLOAT32
        return ([view(t.data_ptr(), steps, n, f32, t) for t in tensors[:-1]]
                + [view(tensors[-1].data_ptr(), -1, n, f32, tensors[-1]), view(0, 0, n, f32),
                   view(0, -1, 0, f32)])

    @staticmethod
    def forward(ctx, x, kernel_args):
        steps = x.shape[0]
        n = x.numel() // steps
        spike, h, v = torch.empty_like(x), torch.empty_like(x), x.new_empty(n)
        bx, bs, bh, bv, no_seq, no_state = _BareFunction._buffers(steps, n, x, spike, h, v)
        _BARE_FORWARD(bx, no_state, bs, bv, bh, no_seq, no_seq, no_seq, *kernel_args,
                      cpu_backend.CPUBackend._threads(steps * n))
        ctx.save_for_backward(h)
        ctx.kernel_args = kernel_args
        ctx.set_materialize_grads(False)   # v's gradient stays None, as in spikecore's Function
        return spike, v

    @staticmethod
    def backward(ctx, grad_spike, _grad_v):
        (h,) = ctx.saved_tensors
        grad_spike = grad_spike.contiguous()
        steps = h.shape[0]
        n = h.numel() // steps
        grad_x, grad_v = torch.empty_like(grad_spike), grad_spike.new_empty(n)
        bg, bh, bgx, bgv, no_seq, no_state = _BareFunction._buffers(steps, n, grad_spike, h,
                                                                    grad_x, grad_v)
        _BARE_BACKWARD(bg, no_state, bh, no_seq, no_seq, bgx, bgv, *ctx.kernel_args,
                       cpu_backend.CPUBackend._threads(steps * n))
        return grad_x, None


class BareLIF(nn.Module):
    """Diagnostic (``--bare``): the spikecore node's kernels behind :class:`_BareFunction`."""

    def __init__(self, node: BaseNode):
        super().__init__()
        self.kernel_args = node.config().kernel_args

    def forward(self, x_seq):
        return _BareFunction.apply(x_seq.contiguous(), self.kernel_args)[0]


def sj_factory():
    mods, why = C.import_spikingjelly()
    if mods is None:
        return None, why
    neuron, surrogate, _ = mods

    def make(node):
        cfg = node.config()
        common = dict(decay_input=not cfg.detach_input, v_threshold=cfg.v_threshold,
                      v_reset=cfg.v_reset, surrogate_function=surrogate.ATan(alpha=cfg.alpha),
                      detach_reset=cfg.detach_reset, step_mode="m")
        if isinstance(node, ParametricLIFNode):   # the same w = -ln(init_tau - 1) at start
            return neuron.ParametricLIFNode(init_tau=float(node.init_tau), **common)
        return neuron.LIFNode(tau=float(node.tau), **common)
    return make, None


def snn_factory():
    mods, why = C.import_snntorch()
    if mods is None:
        return None, why
    snntorch, surrogate = mods

    class SnnLeaky(nn.Module):
        """snnTorch's Leaky stepped in a Python loop (its documented usage): H = beta*V + X,
        reset to zero (detached). beta = 1 - 1/tau: the charge of spikecore's LIF with
        detach_input=True, not the decayed-input LIF of the other candidates."""

        def __init__(self, node):
            super().__init__()
            cfg = node.config()
            self.leaky = snntorch.Leaky(beta=1.0 - cfg.reciprocal_tau, threshold=cfg.v_threshold,
                                        reset_mechanism="zero",
                                        spike_grad=surrogate.atan(alpha=cfg.alpha))

        def forward(self, x_seq):
            mem, out = torch.zeros_like(x_seq[0]), []
            for x in x_seq:
                s, mem = self.leaky(x, mem)
                out.append(s)
            return torch.stack(out)
    return SnnLeaky, None


def swap_nodes(net: nn.Module, make) -> nn.Module:
    """A deep copy of ``net`` (same weights) with every spikecore node replaced by make(node)."""
    net = copy.deepcopy(net)
    for name, child in list(net.named_children()):
        if isinstance(child, BaseNode):
            setattr(net, name, make(child))
        else:
            setattr(net, name, swap_nodes(child, make) if list(child.children()) else child)
    return net


def is_node(m):
    """A neuron layer of any candidate (spikecore node, PlainLIF, SpikingJelly, snnTorch)."""
    return (isinstance(m, (BaseNode, PlainLIF, BareLIF))
            or type(m).__name__ in ("LIFNode", "ParametricLIFNode", "SnnLeaky"))


def reset_all(net):
    """The state of every kind of node in ``net`` reset (outside the timed steps)."""
    reset_net(net)
    reset_spikingjelly(net)


def reset_spikingjelly(net):
    for m in net.modules():  # SpikingJelly's nodes have reset()
        if (not isinstance(m, BaseNode) and type(m).__module__.startswith("spikingjelly")
                and callable(getattr(m, "reset", None))):
            m.reset()


# --- training ---------------------------------------------------------------------------------
class Run:
    """One candidate: its network, its optimizer and ``reset``, what its user calls before each
    batch to drop the state of the previous one (``reset_net`` for spikecore's nodes and
    SpikingJelly's; nothing for layers that start every call at rest)."""

    def __init__(self, name, net, lr, optimizer, note="", reset=None, encode=None):
        self.name, self.net, self.note = name, net, note
        self.opt = OPTIMIZERS[optimizer](net.parameters(), lr)
        self.reset = reset
        self.encode = encode or encoder(per_step_input=False)
        self.times, self.losses, self.skip = [], [], None


OPTIMIZERS = {   # --optimizer: (parameters, lr) -> Adam
    "spikecore": make_optimizer,   # spikecore.optim.Adam
    "torch-fused": lambda params, lr: torch.optim.Adam(params, lr=lr, fused=True),
    "default": lambda params, lr: torch.optim.Adam(params, lr=lr),
}


def encoder(per_step_input):
    """Direct encoding ``(x, T) -> [T, *x.shape]``: a view of ``x`` (the same at every step),
    or a copy with ``per_step_input`` (``--per-step-input``)."""
    if per_step_input:
        return lambda x, T: _data.direct_encode(x, T).contiguous()
    return _data.direct_encode


def step(run, x, y, T):
    net = run.net
    if run.reset is not None:
        run.reset(net)
    out = net(run.encode(x, T))
    loss = F.cross_entropy(out.mean(0) * 5.0, y)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.opt.step()
    return loss.item()


def epoch(run, ds, batches, T):
    run.net.train()
    t0 = time.perf_counter()
    total = 0.0
    for j in batches:
        total += step(run, ds.train_x[j], ds.train_y[j], T) * len(j)
    return time.perf_counter() - t0, total / sum(len(j) for j in batches)


def first_batch(runs, ds, batch, T, snn_twin):
    """Outputs and weight gradients of the first batch (before any step) vs spikecore's."""
    x, y = ds.train_x[batch], ds.train_y[batch]
    encode = runs[0].encode   # the same for every candidate

    def outputs(net):
        """(spikes of every neuron layer, concatenated; weight gradients)."""
        reset_all(net)  # drop state (and graphs) left by training before copying
        net = copy.deepcopy(net)
        spikes = []
        hooks = [m.register_forward_hook(lambda m, i, o: spikes.append(o.detach().flatten()))
                 for m in net.modules() if is_node(m)]
        out = net(encode(x, T))
        F.cross_entropy(out.mean(0) * 5.0, y).backward()
        for h in hooks:
            h.remove()
        return torch.cat(spikes), [p.grad.clone() for p in net.parameters()]

    ref_out, ref_g = outputs(runs[0].net)
    twin_out, twin_g = outputs(snn_twin) if snn_twin is not None else (None, None)
    lines = [f"  {runs[0].name}: reference; firing rate of all neuron layers "
             f"{ref_out.mean().item():.3f} ({ref_out.numel()} spikes compared)"]
    for r in runs[1:]:
        out, g = outputs(r.net)
        if r.name.startswith("snnTorch"):
            o, gg, what = twin_out, twin_g, ("vs spikecore with the matching model "
                                            "(MultiStepLIFNode detach_input=True)")
        else:
            o, gg, what = ref_out, ref_g, "vs spikecore"
        diff = int((out != o).sum())
        err = max((a - b).abs().max().item() for a, b in zip(g, gg))
        scale = max(b.abs().max().item() for b in gg) or 1.0
        r.note = (f"spikes of every layer equal {what}" if diff == 0 else
                  f"{diff} of {out.numel()} spikes differ {what}")
        r.note += f"; max |weight grad diff| {err:.1e} (rel {err / scale:.1e})"
        lines.append(f"  {r.name}: {r.note}")
    return lines


def workload(seed, batch_size, hidden, max_batches=None, neuron="lif"):
    """``(dataset, batches, model)``: the digits data, its training samples in a seeded order
    cut into batches (the first ``max_batches`` of them), and the spikecore model with
    ``neuron`` nodes."""
    ds = _data.load_dataset("digits")
    order = torch.randperm(len(ds.train_y), generator=torch.Generator().manual_seed(seed))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    torch.manual_seed(seed)
    model = models.mlp(ds.in_shape, ds.num_classes, hidden=hidden, neuron=neuron)
    return ds, batches[:max_batches] if max_batches else batches, model


def main(argv=None):
    a = parse(argv)
    C.set_threads(a.threads)
    plif = a.neuron == "plif"
    C.header(f"training epoch, mlp hidden={a.hidden}, {a.neuron.upper()} nodes, T={a.timesteps}, "
             f"digits, batch {a.batch_size}, Adam ({a.optimizer}) lr {a.lr}"
             + (", input copied per step" if a.per_step_input else ""), a.threads)
    ds, batches, base = workload(a.seed, a.batch_size, a.hidden, a.max_batches, a.neuron)
    runs = [Run("spikecore nodes", copy.deepcopy(base), a.lr, a.optimizer, reset=reset_net),
            Run("plain PyTorch loop", swap_nodes(base, PlainLIF), a.lr, a.optimizer)]
    skipped = []
    if a.bare and plif:
        skipped.append(("bare Function", "LIF only"))
    elif a.bare:
        runs.append(Run("diagnostic: kernels in a bare Function", swap_nodes(base, BareLIF),
                        a.lr, a.optimizer))
    snn_twin = None
    if a.no_peers:
        skipped += [("SpikingJelly", "--no-peers"), ("snnTorch", "--no-peers")]
    else:
        make, why = sj_factory()
        if make is None:
            skipped.append(("SpikingJelly", why))
        else:
            sj_node = "ParametricLIFNode" if plif else "LIFNode"
            runs.append(Run(f"SpikingJelly {C.peer_version('spikingjelly')} {sj_node}",
                            swap_nodes(base, make), a.lr, a.optimizer,
                            reset=reset_spikingjelly))
        make, why = (None, "no learnable-tau neuron") if plif else snn_factory()
        if make is None:
            skipped.append(("snnTorch", why))
        else:
            runs.append(Run(f"snnTorch {C.peer_version('snntorch')} Leaky (different model)",
                            swap_nodes(base, make), a.lr, a.optimizer))
            snn_twin = swap_nodes(base, lambda n: MultiStepLIFNode(
                tau=n.tau, detach_input=True, v_threshold=n.v_threshold, v_reset=n.v_reset,
                surrogate_function=n.surrogate_function, alpha=n.alpha, detach_reset=True))
    encode = encoder(a.per_step_input)
    for r in runs:
        r.encode = encode
    print(f"{len(batches)} batches per epoch; checks on the first batch (same weights):")
    for line in first_batch(runs, ds, batches[0], a.timesteps, snn_twin):
        print(line)
    for name, why in skipped:
        print(f"  {name}: skipped ({why})")
    C.flush()

    for e in range(a.warmup + a.epochs):
        k = e % len(runs)
        for r in runs[k:] + runs[:k]:
            t, loss = epoch(r, ds, batches, a.timesteps)
            if e >= a.warmup:
                r.times.append(t)
                r.losses.append(loss)
    print(f"after training ({a.warmup + a.epochs} epochs each), first batch again, each with "
          "its own trained weights:")
    for line in first_batch([r for r in runs if not r.name.startswith("snnTorch")], ds,
                            batches[0], a.timesteps, None):
        print(line)
    for r in runs[1:]:
        if r.name.startswith("snnTorch"):
            continue
        err = max((p - q).abs().max().item()
                  for p, q in zip(r.net.parameters(), runs[0].net.parameters()))
        print(f"  {r.name}: max |weight diff| vs spikecore after training {err:.1e}")
    ref = runs[0]
    n_samples = sum(len(j) for j in batches)
    rows = []
    for r in runs:
        med = sorted(r.times)[len(r.times) // 2] if r.times else float("nan")
        r.median = med
    for r in runs:
        paired = sorted(t / t_ref for t, t_ref in zip(r.times, ref.times))
        rows.append([r.name, C.fmt_ms(r.median), f"{min(r.times) * 1e3:.1f}",
                     f"{n_samples / r.median:.0f}", f"{r.median / ref.median:.2f}",
                     f"{paired[len(paired) // 2]:.2f}", f"{r.losses[-1]:.4f}"])
    print(f"\nmedian of {a.epochs} interleaved epochs (after {a.warmup} warm-up); "
          f"speed-up = candidate epoch time / spikecore's (of the medians; paired: median of "
          f"the per-epoch ratios)")
    print(C.table(rows, ["candidate", "epoch ms", "min ms", "samples/s", "speed-up", "paired",
                         "last loss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
