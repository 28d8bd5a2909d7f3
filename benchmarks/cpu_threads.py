"""CPU thread scaling of the fused multi-step LIF kernels (forward + BPTT from saved H).

For each thread count: the median time of the two kernels alone, writing into buffers
allocated beforehand, its multiple of the memory floor (24 bytes per neuron-step in float32 over
the best copy bandwidth measured with the same threads: torch ``copy_`` or a copy with the
kernels' streaming stores), and a check that the results are
bit-identical to the 1-thread run.

    python benchmarks/cpu_threads.py [--steps 64] [--neurons 262144] [--threads 1 2 4 8 16]
"""
import argparse
import os
import statistics
import time

import torch

from spikecore import _cpu_kernels as kernels
from spikecore.config import NeuronConfig


def median_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--neurons", type=int, default=262144)
    parser.add_argument("--threads", type=int, nargs="+",
                        default=[t for t in (1, 2, 4, 8, 16) if t <= os.cpu_count()])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--h-bf16", action="store_true",
                        help="keep the saved H in bfloat16 (the floor becomes 20 bytes)")
    parser.add_argument("--plif", action="store_true",
                        help="the ParametricLIF backward (also dL/d(1/tau)) instead of LIF's")
    args = parser.parse_args()
    if args.plif and args.h_bf16:
        parser.error("--plif keeps H in float32; it cannot be combined with --h-bf16")
    cfg = NeuronConfig.build("LIF", 1.0, 0.0, 0.5, False, 2.0, 0, False)
    x = torch.rand(args.steps, args.neurons) * 1.5
    v = torch.zeros(args.neurons)
    g = torch.randn_like(x)
    spike, gx = torch.empty_like(x), torch.empty_like(x)
    h = torch.empty_like(x, dtype=torch.bfloat16 if args.h_bf16 else torch.float32)
    h_np = h.view(torch.int16).numpy().view("uint16") if args.h_bf16 else h.numpy()
    v_next, gv = torch.empty_like(v), torch.empty_like(v)
    scratch = torch.empty(args.neurons, dtype=torch.float64)
    unused = x.new_empty(0, args.neurons).numpy()
    p = cfg.kernel_args
    src = torch.rand(args.steps * args.neurons * 3)
    dst = torch.empty_like(src)
    src_b, dst_b = src.numpy().view("uint8"), dst.numpy().view("uint8")
    first = None
    print(f"multi-step {'ParametricLIF' if args.plif else 'LIF'} forward+backward, "
          f"T={args.steps}, N={args.neurons}, float32, "
          f"saved H in {'bfloat16' if args.h_bf16 else 'float32'}")
    print(f"{'threads':>7}{'ms':>10}{'copy GB/s':>11}{'x floor':>9}{'speed-up':>10}  identical")
    base = None
    for threads in args.threads:
        torch.set_num_threads(threads)

        def step():
            kernels.forward(x.numpy(), v.numpy(), spike.numpy(), v_next.numpy(), h_np,
                            unused, unused, unused, *p, threads)
            if args.plif:
                kernels.backward_plif(g.numpy(), v.numpy(), h_np, v.numpy(), gx.numpy(),
                                      gv.numpy(), scratch.numpy(), *p, threads)
            else:
                kernels.backward(g.numpy(), v.numpy(), h_np, unused, unused, gx.numpy(),
                                 gv.numpy(), *p, threads)

        t = median_time(step, args.repeat)
        copy_time = min(median_time(lambda: dst.copy_(src), args.repeat),
                        median_time(lambda: kernels.copy_bytes(src_b, dst_b, True, threads),
                                    args.repeat))
        bw = 2 * src.numel() * 4 / copy_time
        floor = (20 if args.h_bf16 else 24) * args.steps * args.neurons / bw
        step()
        out = tuple(o.clone() for o in (spike, v_next, gx, gv))
        first = first or out
        same = all(torch.equal(a, b) for a, b in zip(first, out))
        base = base or t
        print(f"{threads:7d}{t * 1e3:10.2f}{bw / 1e9:11.1f}{t / floor:9.2f}{base / t:10.2f}"
              f"  {same}")


if __name__ == "__main__":
    main()
