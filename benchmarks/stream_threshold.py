"""Where streaming stores start to pay: the CPU kernels with and without them, by tensor size.

The CPU kernels write an output of at least ``_cpu_kernels.stream_min_bytes()`` bytes per
``[T, N]`` tensor with streaming (non-temporal) stores, which skip the cache. That saves the read
of every destination line when the output would leave the cache anyway, and costs a trip to
memory when the next layer could have read it from cache. This script times one multi-step LIF
layer, forward (H saved) + BPTT from H with fresh outputs as in training, at several tensor
sizes, with streaming forced on and forced off, interleaved in one process, and prints the
ratio. ``--mlp`` also times whole training steps (Adam) of an MLP with three spiking hidden
layers of each given width, T=8, batch 64, with the default threshold against no streaming: the
isolated layer keeps its buffers in cache from one call to the next, a network does not.

    python benchmarks/stream_threshold.py [--steps 16] [--mib 0.25 0.5 1 2 4 16 64]
                                          [--mlp 1024 2048 4096]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

import spikecore  # noqa: E402
from spikecore import _cpu_kernels, dispatch  # noqa: E402
from spikecore.config import NeuronConfig  # noqa: E402

ALWAYS, NEVER = 0, 1 << 62


def layer_call(x, grad, cfg, threshold):
    def call():
        _cpu_kernels.stream_min_bytes(threshold)
        res = dispatch.forward(x, None, cfg, save_h=True, backend="cpu")
        dispatch.backward(grad, None, cfg, h_seq=res.h_seq, backend="cpu")
    return call


def mlp_step(hidden, threshold, steps=8, batch=64):
    torch.manual_seed(0)
    layers, width = [], 784
    for _ in range(3):
        layers += [torch.nn.Linear(width, hidden),
                   spikecore.MultiStepLIFNode(tau=2.0, v_reset=None)]
        width = hidden
    net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x, y = torch.rand(steps, batch, 784), torch.randint(0, 10, (batch,))

    def step():
        _cpu_kernels.stream_min_bytes(threshold)
        spikecore.reset_net(net)
        loss = torch.nn.functional.cross_entropy(net(x).mean(0), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--mib", type=float, nargs="+", default=[0.25, 0.5, 1, 2, 4, 16, 64],
                   help="size of one [T, N] float32 tensor in MiB")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--repeat", type=int, default=31)
    p.add_argument("--mlp", type=int, nargs="*", default=[],
                   help="hidden widths of the training-step comparison")
    a = p.parse_args(argv)
    C.set_threads(a.threads)
    default = _cpu_kernels.stream_min_bytes()
    C.header(f"streaming stores on/off, multi-step LIF forward + BPTT, T={a.steps}, float32",
             a.threads)
    print(f"# default threshold: {default / 2**20:g} MiB per [T, N] tensor; kernels built for "
          f"{_cpu_kernels.vector_isa()}")
    cfg = NeuronConfig.build("LIF", 1.0, 0.0, 0.5, False, 2.0, 0, False)
    rows = []
    try:
        for mib in a.mib:
            n = max(1, int(mib * 2**20) // (4 * a.steps))
            x = torch.rand(a.steps, n) * 1.5
            grad = torch.rand(a.steps, n)
            on = C.Candidate("stream", layer_call(x, grad, cfg, ALWAYS))
            off = C.Candidate("no stream", layer_call(x, grad, cfg, NEVER))
            C.interleave([on, off], a.repeat, warmup=2)
            rows.append([f"{a.steps * n * 4 / 2**20:.2f}", str(n), C.fmt_ms(on.median),
                         C.fmt_ms(off.median), f"{on.median / off.median:.2f}",
                         "yes" if a.steps * n * 4 >= default else "no"])
            C.flush()
        print(f"\nmedian of {a.repeat} interleaved repetitions; ratio < 1: streaming is "
              "faster")
        print(C.table(rows, ["MiB per tensor", "N", "stream ms", "no stream ms", "ratio",
                             "streams by default"]))
        rows = []
        for hidden in a.mlp:
            on = C.Candidate("default", mlp_step(hidden, default))
            off = C.Candidate("no stream", mlp_step(hidden, NEVER))
            C.interleave([on, off], a.repeat, warmup=2)
            rows.append([str(hidden), f"{8 * 64 * hidden * 4 / 2**20:.1f}",
                         C.fmt_ms(on.median), C.fmt_ms(off.median),
                         f"{on.median / off.median:.3f}"])
            C.flush()
    finally:
        _cpu_kernels.stream_min_bytes(default)
    if rows:
        print(f"\ntraining steps, MLP 784-H-H-H-10 with LIF after each hidden layer, T=8, "
              f"batch 64, median of {a.repeat}")
        print(C.table(rows, ["H", "MiB per [T, N]", "default ms", "no stream ms", "ratio"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
