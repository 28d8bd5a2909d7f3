# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Speed: reference, CPU kernel, GPU kernel and the memory floor
#
# spikecore runs the same neuron equations on three backends:
#
# - `reference`: plain PyTorch operations in a Python loop over time, the executable
#   specification every other backend is tested against;
# - `cpu`: one fused loop over time in Cython, parallel over neurons with OpenMP;
# - `cuda`: the same fused loop as a CUDA kernel, when spikecore was built with a CUDA toolkit
#   and a GPU is present.
#
# Here we time a forward and backward pass of an LIF layer on each available backend, check that
# the kernels compute what the reference computes, and compare the times with the least time
# any implementation could take on this machine: the time to move the unavoidable bytes through
# memory.

# %%
import os
import statistics
import time

import matplotlib.pyplot as plt
import torch

import spikecore

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"05_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
print("backends:", {name: spikecore.backends.available(name)
                    for name in spikecore.backends.names()})
print("OpenMP build:", spikecore.openmp_enabled(), "| torch threads:", torch.get_num_threads())
print("CUDA:", spikecore.cuda_available() or spikecore.cuda_unavailable_reason())
print("memory allocator:", "jemalloc" if "jemalloc" in os.environ.get("LD_PRELOAD", "")
      else "the C library's malloc")

# %% [markdown]
# ## The layer to time
#
# A multi-step LIF layer over `T` steps and `N` neurons (a batch of feature vectors). One round
# is `forward` plus `backward` with a random incoming gradient, the unit of work a training step
# does per spiking layer. The backend is chosen with the `backend=` argument of the layer.
# On a GPU we use eight times as many neurons: a GPU needs much more work per call to be kept
# busy, otherwise the fixed cost of every call (Python, autograd, kernel launches) dominates.

# %%
T, N = (16, 1 << 15) if FAST else (32, 1 << 18)
neurons = {"cpu": N, "cuda": 8 * N}
repeats = 5 if FAST else 10
devices = ["cpu"] + (["cuda"] if spikecore.cuda_available() else [])
for device in devices:
    print(f"{device}: T = {T}, N = {neurons[device]}: "
          f"{T * neurons[device] / 1e6:.1f} M neuron-steps per pass")


def make_round(backend, device):
    lif = spikecore.MultiStepLIFNode(tau=2.0, backend=backend)
    x = (2 * torch.rand(T, neurons[device], device=device)).requires_grad_()
    grad_out = torch.rand(T, neurons[device], device=device)

    def one_round():
        lif.reset()
        x.grad = None
        lif(x).backward(grad_out)
        return x.grad

    return one_round


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def median_time(rounds, device):
    # median seconds per round of each candidate, interleaving the candidates
    times = {name: [] for name in rounds}
    for fn in rounds.values():
        fn()                                          # warm-up (allocations, first call)
    for _ in range(repeats):
        for name, fn in rounds.items():               # interleaved: load affects all alike
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# %% [markdown]
# ## First: the kernel must equal the reference
#
# Before timing anything we check the results. The forward pass of the kernels performs the
# same floating-point operations as the reference, so the spikes are identical; the backward
# passes may round differently in the last bit, so the gradients are compared with the float32
# tolerance.

# %%
for device in devices:
    torch.manual_seed(1)
    x = (2 * torch.rand(T, neurons[device], device=device)).requires_grad_()
    grad_out = torch.rand(T, neurons[device], device=device)
    results = {}
    for backend in ("reference", device):
        lif = spikecore.MultiStepLIFNode(tau=2.0, backend=backend)
        x.grad = None
        spikes = lif(x)
        spikes.backward(grad_out)
        results[backend] = (spikes.detach(), lif.v.detach(), x.grad.clone())
    (s_ref, v_ref, g_ref), (s_k, v_k, g_k) = results["reference"], results[device]
    assert torch.equal(s_k, s_ref), "spikes differ"
    torch.testing.assert_close(v_k, v_ref)
    torch.testing.assert_close(g_k, g_ref)
    print(f"{device}: spikes identical, max |grad difference| = {(g_k - g_ref).abs().max():.1e}")
print("CHECK ok: the kernels equal the reference backend")

# %% [markdown]
# ## The memory floor
#
# What is the least time this layer could possibly take? Each neuron does only a handful of
# arithmetic operations per step, so the processor is not the limit: the bytes are. A training
# step has to
#
# - in the forward pass, read the input $X$ and write the spikes $S$ (the next layer needs them)
#   and the charged potential $H$ (the backward pass needs it): 12 bytes per neuron-step in
#   float32;
# - in the backward pass, read $\partial L / \partial S$ and $H$, and write
#   $\partial L / \partial X$: another 12 bytes.
#
# That is 24 bytes per neuron-step. The potential $V$ itself never goes to memory inside the loop:
# it stays in a register from one step to the next, and the backward pass recomputes $S$ and the
# surrogate from $H$ instead of storing them. Storing the two local derivatives
# $\partial S / \partial H$ and $\partial V / \partial H$ instead of $H$ would cost 32 bytes.
# The reference moves far more: every PyTorch operation of the loop reads and writes a full
# `[N]` tensor.
#
# So the time cannot drop below
#
# $$
# t_{floor} = \frac{24\,T N}{B}
# $$
#
# where $B$ is the memory bandwidth. We measure it the simplest way: `dst.copy_(src)` with a
# `src` of 12 bytes per neuron-step reads and writes each byte once, so it moves exactly the
# 24 bytes per neuron-step of the layer, half of them read and half written, as in the layer.
# The time of that copy is $t_{floor}$.
#
# A second copy, `src.clone()`, moves the same bytes into a new tensor every round, as the
# layer's rounds do with their outputs. If it is slower than the first, getting fresh memory
# costs time on this machine; more on that below.

# %%
def make_copy(device, fresh):
    src = torch.rand(3, T, neurons[device], device=device)   # 12 bytes per neuron-step
    dst = torch.empty_like(src)
    dst.copy_(src)                                   # warm-up: touch every page of dst
    if fresh:
        return lambda: src.clone()                   # a new output tensor every round
    return lambda: dst.copy_(src)                    # the same output tensor every round


# %% [markdown]
# ## Timing
#
# We time the reference, the kernel and the two copies of each device in one process,
# interleaved round by round, and keep the median of each: on a shared machine the load changes
# from second to second, and interleaving spreads it over all candidates alike, the floor
# included. Compare ratios rather than milliseconds; absolute times depend on the machine.

# %%
timings, floor = {}, {}
for device in devices:
    rounds = {f"reference ({device})": make_round("reference", device),
              f"{device} kernel": make_round(device, device),
              f"floor: copy ({device})": make_copy(device, fresh=False),
              f"copy, new tensor ({device})": make_copy(device, fresh=True)}
    timings.update(median_time(rounds, device))
    floor[device] = timings[f"floor: copy ({device})"]
for name, seconds in timings.items():
    print(f"{name:<26} {seconds * 1e3:8.2f} ms per round")
print(f"CPU kernel speed-up over the reference: "
      f"{timings['reference (cpu)'] / timings['cpu kernel']:.1f}x")
for device in devices:
    kernel, fresh = timings[f"{device} kernel"], timings[f"copy, new tensor ({device})"]
    print(f"{device}: copy bandwidth {24 * T * neurons[device] / floor[device] / 1e9:.1f} GB/s, "
          f"kernel = {kernel / floor[device]:.1f}x the floor, "
          f"copy into a new tensor = {fresh / floor[device]:.1f}x the floor")

# %%
labels = list(timings)
values = [1e3 * t for t in timings.values()]
fig, ax = plt.subplots(figsize=(8, 3.5))
ax.barh(range(len(labels)), values,
        color=["tab:gray", "tab:blue", "tab:green", "tab:olive"] * len(devices))
ax.set_yticks(range(len(labels)), labels)
ax.set_xscale("log")
ax.set(xlabel="ms per round (log scale)",
       title=f"LIF layer, T = {T}, N = " + ", ".join(f"{neurons[d]} ({d})" for d in devices))
for i, v in enumerate(values):
    ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
fig.tight_layout()
show(fig, "timings")

# %% [markdown]
# ## Reading the numbers
#
# - The reference pays for a dozen separate passes over memory per step and a Python loop; the
#   fused kernel makes one pass and should be many times faster.
# - The ratio of the kernel to the floor tells how much room is left. A ratio close to 1 means
#   the kernel is limited by memory bandwidth, and no implementation, in any language, can do
#   much better on this machine; further gains must come from moving fewer bytes (for example
#   half precision on the GPU, or fusing the neuron with the layer before it).
# - With the C library's allocator on Linux (glibc) the kernel can take a few times the floor
#   here, in the range of the copy into a new tensor. The kernel's loop is not slower; the time
#   goes to fresh memory. Every round allocates new outputs (the spikes, the saved $H$ and
#   $\partial L / \partial X$, 32 MiB each outside the fast mode), and glibc gives freed blocks of
#   32 MiB and more back to the operating system, so each round gets new pages and pays a page
#   fault for every one of them. An allocator that keeps freed memory avoids this:
#   `benchmarks/run_with_allocator.sh python tutorials/en/05_speed.py` runs this tutorial under
#   jemalloc set to keep its pages (and lets PyTorch put large tensors on huge pages), if
#   `libjemalloc.so.2` is installed (Debian and Ubuntu: package `libjemalloc2`); in a notebook,
#   start Jupyter through the script. Then the two copies take the same time and the kernel comes
#   close to the floor. `spikecore train` re-runs itself under jemalloc in the same way when it
#   finds the library. The layers offer no way to pass in preallocated outputs;
#   `benchmarks/bench_neuron.py --prealloc` times the raw kernels writing into buffers allocated
#   beforehand. On a GPU, PyTorch's caching allocator keeps freed memory, so the effect does not
#   appear there.
# - On a GPU the fixed cost of a call, some tens of microseconds, is comparable to the memory
#   floor of a layer of this size; the ratio to the floor only approaches 1 for layers with many
#   more neuron-steps.
# - A CPU kernel can even come in slightly *under* this floor. Before `copy_` writes part of a
#   cache line, the processor reads the line from memory ("read for ownership"), so the copy
#   moves more bytes than it counts. spikecore's kernels write their large outputs with
#   streaming stores, which skip that read (see "Memory traffic and the kernels" in the docs);
#   the benchmarks therefore also time a copy made with streaming stores, a stricter floor.
# - On a small, shared machine all these times are noisy, medians included; the benchmarks in
#   the repository (`benchmarks/`) repeat these measurements at several sizes and against other
#   libraries.

# %%
assert timings["cpu kernel"] < timings["reference (cpu)"], timings
print("CHECK ok: tutorial 05 finished")
