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
# # 5. 速度：参考实现、CPU 核函数、GPU 核函数与内存下限
#
# spikecore 在三个后端上运行同样的神经元方程：
#
# - `reference`：在 Python 时间循环中调用普通 PyTorch 运算，它是可执行的规范，其他所有后端都以它
#   为准进行测试；
# - `cpu`：用 Cython 写成的单个融合时间循环，用 OpenMP 在神经元之间并行；
# - `cuda`：同样的融合循环写成 CUDA 核函数，在 spikecore 用 CUDA 工具链构建且有 GPU 时可用。
#
# 这里我们在每个可用的后端上为一个 LIF 层的前向加反向传播计时，检验核函数算出的结果与参考实现
# 相同，并把这些时间与这台机器上任何实现都无法突破的最短时间相比较：把必不可少的字节在内存中搬运
# 一遍所需的时间。

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
    # 显示图像（在 notebook 中内嵌显示），设置了 FIG_DIR 时保存图像，最后释放它
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
# ## 要计时的层
#
# 一个多步 LIF 层，`T` 个时间步、`N` 个神经元（一批特征向量）。一轮就是一次 `forward` 加一次
# 带随机回传梯度的 `backward`，这正是训练的每一步在每个脉冲层上要做的工作。后端由该层的
# `backend=` 参数选择。在 GPU 上我们使用八倍数量的神经元：GPU 每次调用需要多得多的工作量才能
# 忙起来，否则每次调用的固定开销（Python、autograd、核函数启动）会占主导。

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
    # 每个候选每轮耗时的中位数（秒），各候选交替运行
    times = {name: [] for name in rounds}
    for fn in rounds.values():
        fn()                                          # 预热（内存分配、首次调用）
    for _ in range(repeats):
        for name, fn in rounds.items():               # 交替运行：负载对所有候选的影响相同
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# %% [markdown]
# ## 首先：核函数必须等于参考实现
#
# 计时之前先检查结果。核函数的前向传播与参考实现执行相同的浮点运算，所以脉冲完全相同；反向传播
# 可能在最后一位上舍入不同，所以梯度按 float32 的容差比较。

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
# ## 内存下限
#
# 这个层最少需要多少时间？每个神经元每步只做少量算术运算，所以瓶颈不在处理器，而在字节。训练的
# 一步必须
#
# - 在前向传播中读取输入 $X$，写出脉冲 $S$（下一层需要它）和充电后的膜电位 $H$（反向传播需要
#   它）：float32 下每个神经元每步 12 字节；
# - 在反向传播中读取 $\partial L / \partial S$ 和 $H$，写出 $\partial L / \partial X$：又是
#   12 字节。
#
# 合计每个神经元每步 24 字节。膜电位 $V$ 本身在循环中从不写入内存：它从一步到下一步一直留在
# 寄存器里；反向传播也不存储 $S$ 和替代梯度，而是从 $H$ 重新算出它们。如果改存两个局部导数
# $\partial S / \partial H$ 和 $\partial V / \partial H$ 来代替 $H$，则需要 32 字节。参考实现搬运的
# 字节要多得多：循环中的每个 PyTorch 运算都要读写一个完整的 `[N]` 张量。
#
# 所以时间不可能低于
#
# $$
# t_{floor} = \frac{24\,T N}{B}
# $$
#
# 其中 $B$ 是内存带宽。我们用最简单的方法测量它：`dst.copy_(src)` 把每个字节读一次、写一次；`src`
# 取每个神经元每步 12 字节，这次复制搬运的就恰好是该层每个神经元每步的 24 字节，而且与该层一样，
# 一半是读、一半是写。这次复制的时间就是 $t_{floor}$。
#
# 第二种复制 `src.clone()` 搬运同样的字节，但每轮都写进一个新张量，就像该层每轮写出新的输出一样。
# 如果它比第一种慢，说明在这台机器上获取新内存需要花时间；下文再详细讨论。

# %%
def make_copy(device, fresh):
    src = torch.rand(3, T, neurons[device], device=device)   # 每个神经元每步 12 字节
    dst = torch.empty_like(src)
    dst.copy_(src)                                   # 预热：触及 dst 的每一个内存页
    if fresh:
        return lambda: src.clone()                   # 每轮一个新的输出张量
    return lambda: dst.copy_(src)                    # 每轮都是同一个输出张量


# %% [markdown]
# ## 计时
#
# 我们在同一个进程中为每个设备的参考实现、核函数和两种复制计时，逐轮交替运行，各取中位数：在共享
# 的机器上负载每秒都在变化，交替运行能把它平均地分摊到所有候选上，下限也不例外。请比较比值而不是
# 毫秒数；绝对时间取决于机器。

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
# ## 解读这些数字
#
# - 参考实现每一步都要在内存上分别走十几遍，还要付出 Python 循环的开销；融合核函数只走一遍，应当
#   快很多倍。
# - 核函数时间与下限之比说明还剩多少余地。比值接近 1 表示核函数受限于内存带宽，在这台机器上任何
#   语言写的任何实现都不可能好很多；进一步的提升只能来自搬运更少的字节（例如在 GPU 上使用半精度，
#   或者把神经元与它前面的层融合）。
# - 使用 Linux 上 C 库的内存分配器（glibc）时，这里的核函数可能需要下限的数倍时间，与复制到新
#   张量的时间相当。核函数的循环本身并不慢，时间花在了获取新内存上。每一轮都要分配新的输出（脉冲、
#   保存的 $H$ 和 $\partial L / \partial X$，非快速模式下各 32 MiB），而 glibc 会把释放的 32 MiB 及以上
#   的内存块还给操作系统，于是每一轮拿到的都是新的内存页，每一页都要付出一次缺页中断的代价。保留
#   已释放内存的分配器可以避免这一点：`benchmarks/run_with_allocator.sh python tutorials/zh/05_speed.py`
#   在 jemalloc 下运行本教程，并让 jemalloc 保留它的内存页（同时让 PyTorch 把大张量放在大页上），
#   前提是装有 `libjemalloc.so.2`（Debian 和 Ubuntu：`libjemalloc2` 软件包）；在 notebook 中，请通过
#   这个脚本启动 Jupyter。这样两种复制用时相同，核函数也接近下限。`spikecore train` 找到这个库时会
#   以同样的方式在 jemalloc 下重新运行自己。神经元层没有提供传入预分配输出的途径；
#   `benchmarks/bench_neuron.py --prealloc` 测量的是原始核函数写入预先分配好的缓冲区的时间。在 GPU 上，
#   PyTorch 的缓存分配器会保留释放的内存，所以不会出现这种现象。
# - 在 GPU 上，每次调用的固定开销（几十微秒）与这种规模的层的内存下限相当；只有神经元步数多得多
#   的层，与下限之比才会接近 1。
# - CPU 核函数甚至可能略低于这个下限。`copy_` 在写入一条缓存行的一部分之前，处理器会先从内存读入
#   这条缓存行（"为所有权而读"），所以这种复制实际搬运的字节比它计入的多。spikecore 的核函数用流式
#   存储写出大的输出，省去了这次读取（见文档"内存访问量与核函数"一章）；因此基准测试还会测量一种用
#   流式存储完成的复制，作为更严格的下限。
# - 在小型共享机器上，所有这些时间都有噪声，中位数也不例外；仓库中的基准测试（`benchmarks/`）在
#   多种规模下重复这些测量，并与其他库比较。

# %%
assert timings["cpu kernel"] < timings["reference (cpu)"], timings
print("CHECK ok: tutorial 05 finished")
