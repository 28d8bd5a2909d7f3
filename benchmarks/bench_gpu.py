"""GPU benchmark: multi-step LIF forward+backward, spikecore against the plain PyTorch loop and
torch.compile of it, each as a multiple of the memory floor.

The floor: a fused forward+backward moves 6 elements per neuron-step (forward reads X, writes
S and H; backward reads dL/dS and H, writes dL/dX), so at the device-to-device copy bandwidth B
measured in the same run it cannot take less than 6·T·N·bytes / B.

Every candidate is timed one call per pair of CUDA events: the host's time to launch the call
adds to the GPU's. spikecore and its kernels are also timed back to back, 10 calls per pair,
as a training loop runs them.

    python benchmarks/bench_gpu.py [--repeat 20] [--no-compile]
"""
import argparse
import statistics
import sys
import time

import torch

import spikecore
from spikecore import backends, reference
from spikecore.config import NeuronConfig

N = 64 * 65536
BATCH = 10   # calls per timed sample for the back-to-back rows
CASES = [(32, torch.float32), (32, torch.float16), (8, torch.float32), (8, torch.float16)]


def copy_bandwidth(repeat=20):
    """Bytes per second of a device-to-device copy (bytes read + bytes written)."""
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda")   # 1 GiB
    dst = torch.empty_like(src)
    times = time_cuda(lambda: dst.copy_(src), repeat)
    return 2 * src.numel() * src.element_size() / statistics.median(times)


def time_cuda(fn, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return times


CFG = NeuronConfig.build("LIF", 1.0, 0.0, 0.5, False, 2.0, 0, False)   # tau = 2, hard, ATan


def make_case(steps, dtype, n=N, device="cuda", backend=None, compiled=None):
    """The candidates of one case, as ``{name: function}`` running one forward+backward each,
    and ``check()``, which asserts that spikecore's spikes equal the reference's. ``backend``
    names the CUDA backend to use (``None``: by device); tests pass the host emulation."""
    x = (torch.rand(steps, n, device=device) * 1.5).to(dtype).requires_grad_()
    g = torch.randn(steps, n, device=device).to(dtype)
    v0 = torch.zeros(n, device=device, dtype=dtype)
    node = spikecore.MultiStepLIFNode(tau=2.0, backend=backend).to(device)
    kernels = backends.get(backend or "cuda")
    x2d, g2d = x.detach().view(steps, n), g.view(steps, n)

    def run_spikecore():
        x.grad = None
        node.reset()
        node(x).backward(g)

    run_spikecore.tensors = (x, g)   # for benchmarks/profile_node.py

    def run_kernels():  # the two kernels alone, no autograd and no Python node
        h = kernels.forward(x2d, v0, CFG, steps, save_h=True)[2]
        kernels.backward(g2d, v0, CFG, steps, h_seq=h)

    def run_loop(fn=reference.fptt_autograd):
        x.grad = None
        s, _ = fn(x, v0, CFG)
        s.backward(g)

    def check():
        node.reset()
        s_ref = reference.fptt(x.detach().float(), v0.float(), CFG)[0]
        assert torch.equal(node(x.detach()).float(), s_ref), "spikecore spikes differ"

    candidates = {"spikecore": run_spikecore, "kernels only": run_kernels,
                  "pytorch loop": run_loop}
    if compiled is not None:
        candidates["torch.compile"] = lambda: run_loop(compiled)
    return candidates, check, x.element_size()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--compile-budget", type=float, default=150.0,
                        help="seconds of torch.compile after which later cases skip it")
    args = parser.parse_args()
    if not spikecore.cuda_available():
        sys.exit(f"bench_gpu: {spikecore.cuda_unavailable_reason()}")
    torch.manual_seed(0)
    bandwidth = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth {bandwidth / 1e12:.2f} TB/s",
          flush=True)
    compiled = torch.compile(reference.fptt_autograd, dynamic=False)
    compile_spent = 0.0
    rows = []
    for steps, dtype in CASES:
        use_compile = not args.no_compile and compile_spent < args.compile_budget
        candidates, check, item = make_case(steps, dtype,
                                            compiled=compiled if use_compile else None)
        floor = 6 * steps * N * item / bandwidth
        if use_compile:
            t0 = time.perf_counter()
            try:
                candidates["torch.compile"]()
                torch.cuda.synchronize()
            except Exception as exc:  # report, keep benchmarking the others
                print(f"torch.compile failed for T={steps} {dtype}: {exc}", flush=True)
                del candidates["torch.compile"]
            compile_spent += time.perf_counter() - t0
        check()   # the spikes must agree before any timing counts
        medians = {name: statistics.median(time_cuda(fn, args.repeat))
                   for name, fn in candidates.items()}
        # Back to back, as in a training loop: the host enqueues the next call while the GPU
        # runs this one, so the time per call is the larger of the two, not their sum.
        for name in ("spikecore", "kernels only"):
            fn = candidates[name]
            medians[f"{name}, {BATCH} in a row"] = statistics.median(
                time_cuda(lambda: [fn() for _ in range(BATCH)], args.repeat)) / BATCH
        base = medians["spikecore"]
        for name, t in medians.items():
            rows.append((f"T={steps} {str(dtype).split('.')[1]}", name, t * 1e3, t / floor,
                         t / base))
        torch.cuda.empty_cache()

    print("\nmulti-step LIF forward+backward, N = 64*65536 neurons, CUDA events, median of "
          f"{args.repeat}")
    print(f"{'case':<14}{'candidate':<28}{'ms':>9}{'x floor':>9}{'x spikecore':>13}")
    for case, name, ms, xfloor, rel in rows:
        print(f"{case:<14}{name:<28}{ms:9.3f}{xfloor:9.2f}{rel:13.2f}")
    print(f"(\"{BATCH} in a row\": {BATCH} calls per timed sample, the time per call: the host "
          "prepares the next call while the GPU runs this one)")


if __name__ == "__main__":
    main()
