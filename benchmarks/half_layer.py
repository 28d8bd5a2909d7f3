"""16-bit layers on the CPU: the float16/bfloat16 kernels against the plan that casts whole
tensors around the float32 kernels, with float32 beside them.

A multi-step LIF node, training step (forward + backward) and inference, on [T, N], all
candidates interleaved in one process (median of --repeat). "casts" runs the same dtype
through ``backends.CastPlan`` (what every 16-bit call did before the 16-bit kernels); the
results of both routes are checked to be the same bits first. × floor: the time over the bytes
the fused kernels must move (training: 16-bit X, S, dL/dS, dL/dX and a float32 H written and
read; inference: X and S) at the measured copy bandwidth.

    benchmarks/run_with_allocator.sh python benchmarks/half_layer.py [-T 32] [-N 262144]
"""
import argparse
import statistics
import time

import torch

import spikecore
from spikecore import cpu_backend


def _node_case(dtype, steps, n, casts, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(steps, n, generator=gen) * 1.5).to(dtype).requires_grad_()
    g = torch.randn(steps, n, generator=gen).to(dtype)
    node = spikecore.MultiStepLIFNode(tau=2.0)

    def plan_kind():
        node.reset()
        node(x.detach())
        return type(node._plan).__name__

    def train():
        x.grad = None
        node.reset()
        spike = node(x)
        spike.backward(g)
        return spike, x.grad

    def infer():
        node.reset()
        with torch.no_grad():
            return node(x)

    if casts:   # the plan that casts: the CPU backend offers no 16-bit plan
        saved = dict(cpu_backend._HALF_CODES)
        cpu_backend._HALF_CODES.clear()
        try:
            kind = plan_kind()
        finally:
            cpu_backend._HALF_CODES.update(saved)
    else:
        kind = plan_kind()
    return train, infer, kind


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-T", "--steps", type=int, default=32)
    parser.add_argument("-N", "--neurons", type=int, default=262144)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()
    steps, n = args.steps, args.neurons
    src = torch.empty(1 << 25)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t0 = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    bandwidth = 5 * 2 * src.numel() * 4 / (time.perf_counter() - t0)
    candidates = {("float32", "kernels"): _node_case(torch.float32, steps, n, False)}
    for dtype in (torch.bfloat16, torch.float16):
        name = str(dtype).split(".")[1]
        candidates[(name, "16-bit kernels")] = _node_case(dtype, steps, n, False)
        candidates[(name, "casts")] = _node_case(dtype, steps, n, True)
        (train16, infer16, _), (train_c, infer_c, _) = (candidates[(name, "16-bit kernels")],
                                                        candidates[(name, "casts")])
        for a, b in ((train16(), train_c()), ((infer16(),), (infer_c(),))):
            assert all(torch.equal(p.view(torch.int16), q.view(torch.int16))
                       for p, q in zip(a, b)), f"{name}: the two routes differ"
    times = {(key, what): [] for key in candidates for what in ("train", "infer")}
    for _ in range(3):
        for train, infer, _ in candidates.values():
            train()
            infer()
    for _ in range(args.repeat):
        for key, (train, infer, _) in candidates.items():
            for what, fn in (("train", train), ("infer", infer)):
                t0 = time.perf_counter()
                fn()
                times[key, what].append(time.perf_counter() - t0)
    print(f"multi-step LIF node, T={steps}, N={n}, {torch.get_num_threads()} threads, "
          f"copy bandwidth {bandwidth / 1e9:.1f} GB/s, median of {args.repeat}, interleaved")
    print(f"{'dtype':<10}{'route':<16}{'plan':<12}{'train ms':>10}{'x floor':>9}"
          f"{'infer ms':>10}{'x floor':>9}")
    for (dtype, route), (_, _, kind) in candidates.items():
        item = 4 if dtype == "float32" else 2
        floors = {"train": steps * n * (4 * item + 8) / bandwidth,
                  "infer": steps * n * 2 * item / bandwidth}
        cells = "".join(f"{statistics.median(times[(dtype, route), w]) * 1e3:10.2f}"
                        f"{statistics.median(times[(dtype, route), w]) / floors[w]:9.2f}"
                        for w in ("train", "infer"))
        print(f"{dtype:<10}{route:<16}{kind:<12}{cells}")


if __name__ == "__main__":
    main()
