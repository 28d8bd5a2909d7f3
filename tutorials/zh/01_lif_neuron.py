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
# # 1. 手写一个 LIF 神经元
#
# 脉冲神经元在时间步之间只保存一个数：膜电位。每一步它做三件事：**充电**（输入电流改变膜电位）、
# **放电**（膜电位达到阈值时发出一个脉冲）和 **重置**（放电之后膜电位被拉低）。在本教程中，我们用
# 几行 PyTorch 亲手写出这三个方程，模拟几个神经元，观察它们的膜电位和脉冲，然后验证 spikecore 的
# 融合核函数和神经元层计算出的结果与我们完全相同。
#
# 所有内容在笔记本电脑的 CPU 上几秒钟即可运行完毕。

# %%
import os

import matplotlib.pyplot as plt
import torch

import spikecore
from spikecore import neuron

# 测试套件设置 SPIKECORE_TUTORIAL_FAST=1 来运行每篇教程的缩短版本，
# 并用 SPIKECORE_TUTORIAL_FIGDIR 保存图像。
FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # 显示图像（在 notebook 中内嵌显示），设置了 FIG_DIR 时保存图像，最后释放它
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"01_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
print(f"spikecore {spikecore.__version__}, torch {torch.__version__}, fast mode: {FAST}")

# %% [markdown]
# ## 三个方程
#
# 记 $X_t$ 为第 $t$ 步的输入，$V_{t-1}$ 为该步之前的膜电位，$H_t$ 为充电后的膜电位，$S_t$ 为脉冲
# （0 或 1），$V_t$ 为重置后的膜电位。时间常数为 $\tau$ 的泄漏积分发放（LIF）神经元按下式充电：
#
# $$
# H_t = V_{t-1} + \frac{1}{\tau}\left(X_t - (V_{t-1} - V_r)\right)
# $$
#
# 因此没有输入时，膜电位向静息值 $V_r$（`v_reset`）衰减；输入为常数 $X$ 时，膜电位趋近于
# $V_r + X$。充电后的膜电位达到阈值 $V_{th}$ 时神经元放电，其中 $\Theta$ 是满足
# $\Theta(0) = 1$ 的阶跃函数：
#
# $$
# S_t = \Theta(H_t - V_{th})
# $$
#
# 放电之后，**硬重置** 把膜电位拉回 $V_r$，而 **软重置** 只减去阈值，保留超出阈值的部分：
#
# $$
# V_t = S_t V_r + (1 - S_t) H_t
# $$
#
# $$
# V_t = H_t - S_t V_{th}
# $$
#
# 在 spikecore 中用 `v_reset=None` 选择软重置，此时充电方程使用 0 作为静息值。下面把这几个方程
# 写成 Python 函数，每个一行。

# %%
tau, v_th, v_reset = 4.0, 1.0, 0.0


def charge(x, v, v_rest):
    # 向 v_rest + x 泄漏积分
    return v + (x - (v - v_rest)) * (1.0 / tau)


def fire(h):
    # 阶跃函数：膜电位恰好等于阈值时也放电
    return (h >= v_th).to(h.dtype)


def hard_reset(h, s):
    return s * v_reset + (1 - s) * h


def soft_reset(h, s):
    return h - s * v_th


# %% [markdown]
# ## 模拟三个神经元
#
# 我们用 `T` 个时间步驱动三个神经元：第一个输入略低于阈值的恒定电流，第二个输入高于阈值的恒定
# 电流，第三个输入带噪声的电流。对时间的这一个循环就是整个模拟；我们保存每一步的 $H_t$、$S_t$ 和
# $V_t$。

# %%
T = 60
x_seq = torch.stack([torch.full((T,), 0.95),
                     torch.full((T,), 1.6),
                     1.3 + 0.6 * torch.randn(T)], dim=1)   # [T, 3 个神经元]


def simulate(x_seq, reset, v_rest):
    v = torch.full(x_seq.shape[1:], v_rest)   # 所有神经元从静息状态开始
    hs, ss, vs = [], [], []
    for x in x_seq:                           # 每次迭代一个时间步
        h = charge(x, v, v_rest)
        s = fire(h)
        v = reset(h, s)
        hs.append(h)
        ss.append(s)
        vs.append(v)
    return torch.stack(hs), torch.stack(ss), torch.stack(vs)


h_hard, s_hard, v_hard = simulate(x_seq, hard_reset, v_rest=v_reset)
h_soft, s_soft, v_soft = simulate(x_seq, soft_reset, v_rest=0.0)
print("spikes per neuron, hard reset:", s_hard.sum(0).tolist())
print("spikes per neuron, soft reset:", s_soft.sum(0).tolist())
assert (s_soft.sum(0) >= s_hard.sum(0)).all() and s_soft.sum() > s_hard.sum()

# %% [markdown]
# ## 膜电位与脉冲
#
# 图中每一步画两个点：曲线先从 $V_{t-1}$ 上升（或下降）到充电后的 $H_t$，神经元放电时再竖直落到
# $V_t$。上方的红色短线标出脉冲。第一个神经元从不放电：它的膜电位缓慢趋近 $0.95$，无论等多久都
# 停在阈值之下。硬重置在每次放电时丢掉 $H_t$ 超出阈值的部分；软重置保留这部分余量，计入下一个
# 脉冲。所以在相同输入下，软重置神经元放电至少与硬重置神经元一样多，对某些输入则更多：上面打印的
# 脉冲数中，两个恒定电流下两者相同，而在带噪声的电流下软重置神经元多放电一次。


# %%
def sawtooth(h, v):
    # 随时间画出 V[-1] -> H[0] -> V[0] -> H[1] -> ... 的轨迹
    t = torch.arange(len(h), dtype=torch.float32)
    times = torch.stack([t, t], dim=1).flatten()
    values = torch.stack([h, v], dim=1).flatten()
    return torch.cat([torch.tensor([-1.0]), times]), torch.cat([torch.tensor([0.0]), values])


fig, axes = plt.subplots(3, 2, figsize=(11, 7), sharex=True, sharey=True)
for col, (h, s, v, title) in enumerate([(h_hard, s_hard, v_hard, "hard reset"),
                                        (h_soft, s_soft, v_soft, "soft reset")]):
    for row in range(3):
        ax = axes[row, col]
        ax.plot(*sawtooth(h[:, row], v[:, row]), lw=1)
        ax.axhline(v_th, color="gray", ls="--", lw=1)
        fired = torch.nonzero(s[:, row]).flatten()
        ax.plot(fired, torch.full_like(fired, 2.2, dtype=torch.float32), "|", color="red", ms=8)
        ax.set_ylim(-0.2, 2.4)
        if row == 0:
            ax.set_title(title)
        if col == 0:
            ax.set_ylabel(f"neuron {row}\npotential")
axes[-1, 0].set_xlabel("time step")
axes[-1, 1].set_xlabel("time step")
fig.tight_layout()
show(fig, "potential")

# %% [markdown]
# ## spikecore 中的同一批神经元
#
# spikecore 的核函数运行的正是这些方程，只是融合成了一个用 Cython（GPU 上则是 CUDA）编写的时间
# 循环。`LIF_hard_reset_fptt` 接收整个序列 `[T, *]`、第一步之前的膜电位、$V_{th}$、$V_r$、
# $1/\tau$ 以及 `detach_input` 标志（见下文），返回脉冲和最后的膜电位。前向传播按与我们的 Python
# 函数相同的顺序执行相同的浮点运算，所以结果不只是接近，而是完全相同。

# %%
v0 = torch.zeros(3)
spikes, v_last = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, False)
assert torch.equal(spikes, s_hard) and torch.equal(v_last, v_hard[-1])
spikes, v_last = neuron.LIF_soft_reset_fptt(x_seq, v0, v_th, 1.0 / tau, False)
assert torch.equal(spikes, s_soft) and torch.equal(v_last, v_soft[-1])

# 一次一步：在我们自己的循环中调用单步函数
v = v0
for t in range(T):
    s, v = neuron.LIF_hard_reset_forward(x_seq[t], v, v_th, v_reset, 1.0 / tau, False)
    assert torch.equal(s, s_hard[t]) and torch.equal(v, v_hard[t])
print("CHECK ok: kernel functions equal the hand-written neuron (hard and soft reset)")

# %% [markdown]
# 神经元层把同样的核函数包装成 `torch.nn.Module`，并在两次调用之间把膜电位保存在 `self.v` 中。
# `MultiStepLIFNode` 一次接收整个序列，`LIFNode` 每次调用处理一步。遇到不相关的新输入之前，两者
# 都必须用 `reset()` 重置，否则上一个输入留下的膜电位会延续下去。

# %%
multi = spikecore.MultiStepLIFNode(tau=tau, v_threshold=v_th, v_reset=v_reset)
assert torch.equal(multi(x_seq), s_hard)
assert torch.equal(multi.v, v_hard[-1])

single = spikecore.LIFNode(tau=tau, v_threshold=v_th, v_reset=None)   # 软重置
steps = torch.stack([single(x_seq[t]) for t in range(T)])
assert torch.equal(steps, s_soft)

multi.reset()
single.reset()
print("after reset():", multi.v, single.v)
print("CHECK ok: LIFNode and MultiStepLIFNode equal the hand-written neuron")

# %% [markdown]
# ## 发放率与输入电流
#
# 在恒定输入下，神经元多久放电一次？我们为每个输入值安排一个神经元，几百个神经元在一次调用中并排
# 运行，然后数脉冲。比较四种神经元：LIF 和 IF（积分发放神经元，$H_t = V_{t-1} + X_t$，不泄漏），
# 各自配硬重置和软重置。
#
# - LIF 神经元在 $X = V_{th}$ 以下保持沉默：它的膜电位收敛到 $X$，永远达不到阈值。超过这个值后，
#   发放率随电流增大。
# - 软重置的 IF 神经元是理想的发放率编码器：它的发放率是 $\min(X / V_{th}, 1)$。每一份输入最终
#   都会用在某个脉冲上，但每步至多一个脉冲：$X = V_{th}$ 以上它每步都放电，余量在膜电位中不断累积。
# - 硬重置的 IF 神经元在每次放电时丢掉余量，所以它的发放率呈阶梯状：每个脉冲需要
#   $\lceil V_{th} / X \rceil$ 步。

# %%
T_long = 100 if FAST else 400
current = torch.linspace(0.0, 2.5, 251)
x_const = current.expand(T_long, -1).contiguous()     # [T_long, 251]：每个电流值一个神经元
v_rest = torch.zeros(251)
rates = {
    "LIF, hard reset": neuron.LIF_hard_reset_fptt(x_const, v_rest, v_th, v_reset, 1 / tau, False),
    "LIF, soft reset": neuron.LIF_soft_reset_fptt(x_const, v_rest, v_th, 1 / tau, False),
    "IF, hard reset": neuron.IF_hard_reset_fptt(x_const, v_rest, v_th, v_reset),
    "IF, soft reset": neuron.IF_soft_reset_fptt(x_const, v_rest, v_th),
}
rates = {name: spikes.mean(0) for name, (spikes, _) in rates.items()}

fig, ax = plt.subplots(figsize=(7, 4))
for name, rate in rates.items():
    ax.plot(current, rate, label=name)
ax.set(xlabel="constant input current X", ylabel="spikes per step", title="firing rate")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "rate")

# %% [markdown]
# 用数字检验上面三点观察：

# %%
below = current < 0.99
assert rates["LIF, hard reset"][below].sum() == 0 and rates["LIF, soft reset"][below].sum() == 0
assert rates["LIF, hard reset"][current > 1.2].min() > 0
ideal = (current / v_th).clamp(max=1.0)
assert (rates["IF, soft reset"] - ideal).abs().max() <= 1.0 / T_long + 1e-6
ratio = v_th / current[1:]                    # current[0] = 0 从不放电
# 比值恰为整数时，k 个输入之和是否达到阈值取决于舍入
clear = (ratio - ratio.round()).abs() > 1e-3
assert torch.allclose(rates["IF, hard reset"][1:][clear], 1 / torch.ceil(ratio[clear]),
                      atol=1.0 / T_long)
print("CHECK ok: firing rates follow the LIF threshold, the IF soft-reset line and staircase")

# %% [markdown]
# ## `detach_input` 改变了什么
#
# 设置 `detach_input=True` 时，输入不再乘以 $1/\tau$ 就直接加上去，
# $H_t = V_{t-1} + X_t - \frac{1}{\tau}(V_{t-1} - V_r)$：泄漏仍然作用于膜电位，但输入不再被
# 缩小。同样的电流于是以 $\tau$ 倍的强度驱动神经元。
#
# 这个标志名不副实：它并不把任何东西从自动求导计算图中分离出去，而是换用另一个充电方程，梯度也随
# 这个方程而变（$\partial H_t / \partial X_t = 1$，而不是 $1/\tau$）。这个名字来自 spikecore 所复现
# 的原 `spikingjelly.cext` API；SpikingJelly 后来的版本把同一个开关叫作 `decay_input`，含义正好相反：
# `detach_input=True` 就是 SpikingJelly 的 `decay_input=False`。

# %%
s_decay, _ = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, False)
s_plain, _ = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, True)
print("spikes per neuron, detach_input=False:", s_decay.sum(0).tolist())
print("spikes per neuron, detach_input=True: ", s_plain.sum(0).tolist())
assert (s_plain.sum(0) >= s_decay.sum(0)).all()

# %% [markdown]
# ## 小结
#
# - 脉冲神经元就是每步三个方程：充电、放电、重置。
# - 硬重置忘掉超出阈值的部分，软重置保留它。
# - spikecore 的核函数和神经元层逐位算出与我们几行 Python 相同的结果，只是放在一个融合的循环里。
#
# 脉冲是阶跃函数，它的导数几乎处处为零。下一篇教程介绍训练如何借助替代梯度绕过这个问题。

# %%
print("CHECK ok: tutorial 01 finished")
