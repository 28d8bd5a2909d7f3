"""Where a node's forward+backward spends its time, next to the kernels alone.

bench_gpu.py times each candidate between two CUDA events, so the host's work to launch a call
adds to the GPU's whenever the host is the slower of the two. This script separates them for
the bench_gpu cases: the host's time to enqueue one call (no synchronisation inside it), the
GPU's time for it, and the operations the profiler saw, with their device time, so that any
launch beyond the two kernels shows up by name. A third row is PyTorch's own floor for a
training call: one differentiable operation (``x * 1``) and its backward through the autograd
engine, on the same tensors.

    python benchmarks/profile_node.py [--steps 8] [--repeat 20]
"""
import argparse
import statistics
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

import bench_gpu
import spikecore


def host_time(fn, repeat, sync):
    """Median seconds the host spends in ``fn()``, the device drained before each call."""
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    sync()
    return statistics.median(times)


def device_ops(fn, activities, rows=12):
    """The profiler's table of one call of ``fn``, its operations sorted by device time."""
    fn()   # warm
    with profile(activities=activities) as prof:
        fn()
        if ProfilerActivity.CUDA in activities:
            torch.cuda.synchronize()
    key = "self_device_time_total" if ProfilerActivity.CUDA in activities else "self_cpu_time_total"
    try:
        return prof.key_averages().table(sort_by=key, row_limit=rows)
    except (KeyError, AttributeError):   # older torch spells the device column "cuda"
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows)


def report(steps, dtype, repeat, n=bench_gpu.N, device="cuda", backend=None):
    """Print the host and device time of spikecore's node and of its kernels alone."""
    candidates, check, _ = bench_gpu.make_case(steps, dtype, n=n, device=device,
                                               backend=backend)
    check()
    on_gpu = device == "cuda"
    sync = torch.cuda.synchronize if on_gpu else (lambda: None)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    x, g = candidates["spikecore"].tensors

    def one_op():   # the autograd engine's round trip for the simplest differentiable call
        x.grad = None
        (x * 1).backward(g)

    candidates["autograd, x * 1"] = one_op
    print(f"\n== T={steps} {str(dtype).split('.')[1]}, N={n}", flush=True)
    for name in ("spikecore", "kernels only", "autograd, x * 1"):
        fn = candidates[name]
        host = host_time(fn, repeat, sync)
        line = f"{name:<16} host {host * 1e3:7.3f} ms"
        if on_gpu:
            line += f"   device {statistics.median(bench_gpu.time_cuda(fn, repeat)) * 1e3:7.3f} ms"
        print(line, flush=True)
    print(device_ops(candidates["spikecore"], activities), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if not spikecore.cuda_available():
        sys.exit(f"profile_node: {spikecore.cuda_unavailable_reason()}")
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float16):
        report(args.steps, dtype, args.repeat)


if __name__ == "__main__":
    main()
