"""Where a node's forward+backward spends its time, next to the kernels alone.

bench_gpu.py times each candidate between two CUDA events, so the host's work to launch a call
adds to the GPU's whenever the host is the slower of the two. This script separates them for
the bench_gpu cases: the host's time to enqueue one call (no synchronisation inside it), the
GPU's time for it, and the operations the profiler saw, with their device time, so that any
launch beyond the two kernels shows up by name. Two more rows are PyTorch's own floors for a
training call on the same tensors: one differentiable operation (``x * 1``) and its backward
through the autograd engine, and a Python autograd Function shaped like the node's (two
outputs, one saved tensor) that computes nothing.

    python benchmarks/profile_node.py [--steps 8] [--repeat 20]
    OMP_NUM_THREADS=1 python benchmarks/profile_node.py --device cpu --neurons 64 --repeat 5000
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
    on_gpu = ProfilerActivity.CUDA in activities
    fn()   # warm
    with profile(activities=activities) as prof:
        fn()
        if on_gpu:
            torch.cuda.synchronize()
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    try:
        return prof.key_averages().table(sort_by=key, row_limit=rows)
    except (KeyError, AttributeError):   # older torch spells the device column "cuda"
        return prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows)


class IdleFunction(torch.autograd.Function):
    """The autograd shape of the node's Function without its work: two fresh outputs (spike,
    v_next) and one saved tensor forward, one fresh gradient backward."""

    @staticmethod
    def forward(ctx, x):
        spike, v_next = torch.empty_like(x), x.new_empty(x.shape[1:])
        ctx.save_for_backward(spike)
        return spike, v_next

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        _ = ctx.saved_tensors   # unpacked, as the node's backward does
        return torch.empty_like(grad_spike)


def report(steps, dtype, repeat, n=bench_gpu.N, device="cuda", backend=None):
    """Print the host (and on a GPU the device) time of spikecore's node, of its kernels alone
    and of PyTorch's two floors, then the profiler's table of one node call."""
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

    def idle_function():   # a Python Function of the node's shape that computes nothing
        x.grad = None
        IdleFunction.apply(x)[0].backward(g)

    candidates["autograd, x * 1"] = one_op
    candidates["idle Function"] = idle_function
    print(f"\n== T={steps} {str(dtype).split('.')[1]}, N={n}", flush=True)
    for name in ("spikecore", "kernels only", "autograd, x * 1", "idle Function"):
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
    parser.add_argument("--neurons", type=int, default=bench_gpu.N)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: the CPU backend, float32, host times only")
    args = parser.parse_args()
    if args.device == "cuda" and not spikecore.cuda_available():
        sys.exit(f"profile_node: {spikecore.cuda_unavailable_reason()}")
    torch.manual_seed(0)
    on_gpu = args.device == "cuda"
    for dtype in (torch.float32, torch.float16) if on_gpu else (torch.float32,):
        report(args.steps, dtype, args.repeat, n=args.neurons, device=args.device,
               backend=None if on_gpu else "cpu")


if __name__ == "__main__":
    main()
