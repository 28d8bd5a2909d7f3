"""Per-call time of a small multi-step LIF node on the CPU for float32, bfloat16 and float16
inputs (16-bit inputs are computed in float32 through a plan that casts): inference and a
training step (forward + backward), side by side in one run.

    python benchmarks/half_calls.py [--steps 4] [--neurons 256] [--threads 1] [--repeat 7]
"""
import argparse
import statistics
import time

import torch

import spikecore


def _time(f, repeat, number, warmup):
    for _ in range(warmup):
        f()
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(number):
            f()
        runs.append((time.perf_counter() - t) / number)
    return statistics.median(runs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--neurons", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=7, help="runs whose median is reported")
    p.add_argument("--number", type=int, default=500, help="calls per run")
    p.add_argument("--warmup", type=int, default=200, help="calls before the runs")
    a = p.parse_args(argv)
    timing = dict(repeat=a.repeat, number=a.number, warmup=a.warmup)
    torch.set_num_threads(a.threads)
    print(f"# [T={a.steps}, N={a.neurons}], {a.threads} thread(s), torch {torch.__version__}")
    print("| dtype | inference (us) | training step (us) |")
    print("|---|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        node = spikecore.MultiStepLIFNode(tau=2.0)
        x = torch.rand(a.steps, a.neurons, dtype=dtype)
        xg = x.clone().requires_grad_()
        g = torch.ones_like(x)

        def infer():
            node.reset()
            with torch.no_grad():
                node(x)

        def train():
            node.reset()
            node(xg).backward(g)

        print(f"| {str(dtype).split('.')[1]} | {_time(infer, **timing) * 1e6:.1f} | "
              f"{_time(train, **timing) * 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
