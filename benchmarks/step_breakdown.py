"""Where a training step of the ``bench_train.py`` model goes: the same model, weights and
batches with its two neuron layers replaced by stand-ins of increasing cost, timed in one
process.

Candidates (only the neuron layers differ):

* identity: no neuron layer; what is left is the Linear layers, the loss, Adam and the autograd
  engine, the part every candidate of ``bench_train.py`` shares (its output is made contiguous,
  as a neuron layer's is, so that the second Linear layer runs at every step);
* Function without kernel: a ``torch.autograd.Function`` that allocates what the real one
  allocates (spikes, H and the state forward, the input gradient backward; the spikes and the
  gradient zero-filled) and runs no kernel: PyTorch's own cost of a Python-level Function;
* bare kernel Function: the same plus spikecore's kernels (``bench_train.py --bare``);
* spikecore nodes: ``MultiStepLIFNode``;
* plain PyTorch loop: the reference loop over time.

Each round restores every candidate's initial weights and optimizer, runs the same batches
for each candidate in turn and records its time per step; the table gives the median over the
rounds, each row's increment over identity, and the step time that 3x over the plain loop
allows.

With ``--profile`` a second pass trains spikecore's nodes alone with timers around each level of
their layers (node call, autograd Function, plan, kernel; forward and backward) and prints
where their time goes inside a step.

``--per-step-input`` feeds the input as a copy, as ``bench_train.py --per-step-input`` does.

    python benchmarks/step_breakdown.py [--rounds 12] [--batches 40] [--threads 1] [--profile]
                                        [--per-step-input]
"""
import argparse
import copy
import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402
from bench_train import BareLIF, PlainLIF, Run, encoder, step, swap_nodes, workload  # noqa: E402

from spikecore import backends, cpu_backend  # noqa: E402
from spikecore.autograd import PlannedNeuronFunction  # noqa: E402
from spikecore.nodes import BaseNode  # noqa: E402
from spikecore.utils import reset_net  # noqa: E402


class Contiguous(nn.Module):
    """The identity stand-in: no neuron layer, its input made contiguous as a layer's output is
    (a no-op unless the input is the shared view of a static input)."""

    def forward(self, x_seq):
        return x_seq.contiguous()


class _AllocateOnly(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(torch.empty_like(x))              # H
        return torch.zeros_like(x), x.new_empty(x.shape[1:])   # spikes, state

    @staticmethod
    def backward(ctx, grad_spike, _grad_v):
        (h,) = ctx.saved_tensors
        return torch.zeros_like(h)


class AllocateOnly(nn.Module):
    """The Function-without-kernel stand-in for a neuron layer."""

    def __init__(self, _node=None):
        super().__init__()

    def forward(self, x_seq):
        return _AllocateOnly.apply(x_seq)[0]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--rounds", type=int, default=12, help="timed rounds (after one warm-up)")
    p.add_argument("--batches", type=int, default=40, help="steps per candidate and round")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--timesteps", "-T", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--per-step-input", action="store_true",
                   help="feed the encoded input as a copy: the first Linear runs at every step")
    p.add_argument("--profile", action="store_true",
                   help="also time the levels inside spikecore's layers during the steps")
    return p.parse_args(argv)


def main(argv=None):
    a = parse(argv)
    C.set_threads(a.threads)
    C.header(f"training step breakdown, mlp hidden={a.hidden}, T={a.timesteps}, digits, batch "
             f"{a.batch_size}, Adam of spikecore train (spikecore.optim.Adam)", a.threads)
    ds, batches, base = workload(0, a.batch_size, a.hidden, a.batches)
    nets = {"identity": swap_nodes(base, lambda node: Contiguous()),
            "Function without kernel": swap_nodes(base, AllocateOnly),
            "bare kernel Function": swap_nodes(base, BareLIF),
            "spikecore nodes": copy.deepcopy(base),
            "plain PyTorch loop": swap_nodes(base, PlainLIF)}
    initial = copy.deepcopy(base.state_dict())   # the swapped layers hold no parameters
    per_step = {name: [] for name in nets}
    encode = encoder(a.per_step_input)

    for r in range(1 + a.rounds):
        for name, net in nets.items():
            net.load_state_dict(initial)
            run = Run(name, net, 1e-2, "spikecore",   # a fresh Adam every round
                      reset=reset_net if name == "spikecore nodes" else None, encode=encode)
            t0 = time.perf_counter()
            for j in batches:
                step(run, ds.train_x[j], ds.train_y[j], a.timesteps)
            if r > 0:
                per_step[name].append((time.perf_counter() - t0) / len(batches))

    med = {name: statistics.median(times) for name, times in per_step.items()}
    rows = [[name, f"{med[name] * 1e6:.0f}", f"{(med[name] - med['identity']) * 1e6:+.0f}"]
            for name in nets]
    print(f"\nmedian over {a.rounds} rounds of {len(batches)} steps per candidate")
    print(C.table(rows, ["neuron layers", "us per step", "vs identity"]))
    budget = med["plain PyTorch loop"] / 3
    layers = sum(isinstance(m, BaseNode) for m in base.modules())
    print(f"3x over the plain loop allows {budget * 1e6:.0f} us per step, "
          f"{(budget - med['identity']) * 1e6 / layers:.0f} us per neuron layer over identity")
    if a.profile:
        profile(base, ds, batches, a.timesteps, a.rounds, encode)
    return 0


# --- inside spikecore's layers ------------------------------------------------------------------
def _timing(fn, totals, key):
    """``fn`` wrapped to add the time of each call to ``totals[key]`` (nanoseconds)."""
    clock = time.perf_counter_ns

    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += clock() - t0
    return wrapper


def _timed(owner, name, totals, key):
    """Make ``owner.name`` (a function, a staticmethod or one inherited from a base class) add
    its time to ``totals[key]``; returns a function that undoes it."""
    own = owner.__dict__.get(name)
    wrapper = _timing(getattr(owner, name), totals, key)
    setattr(owner, name, staticmethod(wrapper) if isinstance(own, staticmethod) else wrapper)
    return lambda: setattr(owner, name, own) if own is not None else delattr(owner, name)


def profile(base, ds, batches, timesteps, rounds, encode):
    """Time the levels of spikecore's neuron layers inside training steps (per step, summed
    over the layers; each level includes the ones below it). The wrappers cost a little time
    of their own, so this runs apart from the table above."""
    levels = dict.fromkeys(["node call (nn.Module, state)", "  autograd Function apply",
                            "    plan forward (outputs, buffers, kernel)", "      forward kernel",
                            "Function backward", "  plan backward (outputs, buffers, kernel)",
                            "    backward kernel"], 0)
    keys = list(levels)
    cpu = backends.get("cpu")
    real_entry = cpu._entry

    def timed_entry(name, dtype, h_dtype=None):
        """The kernel, timed: a node's plan picks its kernels through this when it is made."""
        return _timing(real_entry(name, dtype, h_dtype), levels,
                       keys[3] if name == "forward" else keys[6])

    undo = [_timed(BaseNode, "__call__", levels, keys[0]),
            _timed(PlannedNeuronFunction, "apply", levels, keys[1]),
            _timed(cpu_backend._CPUPlan, "train_forward", levels, keys[2]),
            _timed(PlannedNeuronFunction, "backward", levels, keys[4]),
            _timed(cpu_backend._CPUPlan, "train_backward", levels, keys[5])]
    cpu._entry = timed_entry
    try:
        run = Run("spikecore nodes", copy.deepcopy(base), 1e-2, "spikecore",   # plans made here
                  reset=reset_net, encode=encode)
        for r in range(1 + rounds):
            if r == 1:   # after a warm-up round
                levels.update(dict.fromkeys(levels, 0))
            for j in batches:
                step(run, ds.train_x[j], ds.train_y[j], timesteps)
    finally:
        cpu._entry = real_entry
        for u in undo:
            u()
    steps = rounds * len(batches)
    print(f"\ninside spikecore's neuron layers over {steps} training steps: us per step, both "
          "layers together; each level includes those indented below it")
    print(C.table([[k, f"{v / steps / 1e3:.1f}"] for k, v in levels.items()],
                  ["level", "us per step"]))


if __name__ == "__main__":
    sys.exit(main())
