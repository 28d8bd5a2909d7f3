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
# # 3. 手算随时间反向传播
#
# 一层 LIF 神经元是一个循环计算：某一步的膜电位 $V_t$ 是下一步的输入。要训练它，我们需要每一步的
# $\partial L / \partial X_t$，而链式法则必须沿时间倒着走，从最后一步走到第一步。这就是随时间
# 反向传播（BPTT）。
#
# spikecore 把其中的每一部分都作为教学函数提供出来。本教程用四种方式计算梯度，并检验它们一致：
#
# 1. 用 Python 对时间做循环，调用单步函数 `LIF_hard_reset_forward_with_grad` 和 `LIF_backward`；
# 2. 用普通的 PyTorch 算术写出同样的反向传播，每行一个方程；
# 3. 多步函数 `LIF_hard_reset_fptt_with_grad` 和 `LIF_bptt`；
# 4. `torch.autograd`，对一个由普通张量运算搭成的前向传播求导。

# %%
import os

import matplotlib.pyplot as plt
import torch

import spikecore
from spikecore import neuron, reference, surrogate

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # 显示图像（在 notebook 中内嵌显示），设置了 FIG_DIR 时保存图像，最后释放它
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"03_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
f64 = dict(dtype=torch.float64)   # 所有张量都用双精度：比较可以很严格

# %% [markdown]
# ## 问题
#
# 取 `N` 个 LIF 神经元，运行 `T` 步，使用硬重置，从膜电位 $V_{-1}$ 开始。损失取所有脉冲的加权和
# 加上最终膜电位的加权和，
#
# $$
# L = \sum_{t} \sum_{n} w_{t,n} S_{t,n} + \sum_{n} u_n V_{T-1,n}
# $$
#
# 于是从损失传来的梯度就是 $\partial L / \partial S_t = w_t$ 和 $\partial L / \partial V_{T-1} = u$。
# 换成任何别的损失，也只是改变反向传播的这两个输入。

# %%
T, N = 8, 6
x_seq = 0.9 + 0.8 * torch.randn(T, N, **f64)   # 输入在阈值附近：有些步会放电
v_init = 0.3 * torch.rand(N, **f64)            # V[-1]，第一步之前的膜电位
w = torch.randn(T, N, **f64)                   # dL/dS[t]
u = torch.randn(N, **f64)                      # dL/dV[T-1]

v_th, v_reset, alpha, tau = 1.0, 0.0, 2.0, 2.0
p = dict(v_threshold=v_th, v_reset=v_reset, alpha=alpha, detach_reset=False,
         grad_surrogate_function_index=0, reciprocal_tau=1 / tau, detach_input=False)

# %% [markdown]
# ## 前向传播，一次一步
#
# `LIF_hard_reset_forward_with_grad` 运行一步（充电、放电、重置），同时返回反向传播需要的两个
# 局部导数，其中 $g'$ 是 ATan 替代函数：
#
# $$
# \frac{\partial S_t}{\partial H_t} = g'(H_t - V_{th}), \qquad
# \frac{\partial V_t}{\partial H_t} = 1 - S_t + (V_r - H_t)\,\frac{\partial S_t}{\partial H_t}
# $$
#
# 第二个导数来自硬重置 $V_t = S_t V_r + (1 - S_t) H_t$：$H_t$ 既直接通过 $(1 - S_t) H_t$
# 起作用，又间接通过脉冲 $S_t$ 起作用。我们运行这个循环，同时自己算出 $H_t$，用公式检验这两个
# 局部导数。

# %%
v = v_init
spikes, ds_dh, dv_dh = [], [], []
for t in range(T):
    h = v + (x_seq[t] - (v - v_reset)) / tau                  # 我们自己的充电，用于检验
    s, v, grad_s_to_h, grad_v_to_h = neuron.LIF_hard_reset_forward_with_grad(x_seq[t], v, **p)
    sg = surrogate.ATan.derivative(h - v_th, alpha)
    torch.testing.assert_close(grad_s_to_h, sg)
    torch.testing.assert_close(grad_v_to_h, 1 - s + (v_reset - h) * sg)
    spikes.append(s)
    ds_dh.append(grad_s_to_h)
    dv_dh.append(grad_v_to_h)
spikes = torch.stack(spikes)
v_last = v
print("spikes per step:", spikes.sum(1).tolist())

# %% [markdown]
# ## 反向传播，一次一步
#
# 反向传播的一步接收 $\partial L / \partial S_t$ 和从未来传回的梯度 $\partial L / \partial V_t$，
# 返回该步输入的梯度以及该步之前膜电位的梯度：
#
# $$
# \frac{\partial L}{\partial H_t} = \frac{\partial L}{\partial S_t}\frac{\partial S_t}{\partial H_t}
# + \frac{\partial L}{\partial V_t}\frac{\partial V_t}{\partial H_t}
# $$
#
# $$
# \frac{\partial L}{\partial X_t} = \frac{\partial L}{\partial H_t}\frac{\partial H_t}{\partial X_t},
# \qquad
# \frac{\partial L}{\partial V_{t-1}} = \frac{\partial L}{\partial H_t}\frac{\partial H_t}{\partial V_{t-1}}
# $$
#
# 对这里使用的 LIF 充电方程（`detach_input=False`，即默认值），
# $\partial H_t / \partial X_t = 1/\tau$；若 `detach_input=True`，输入不经缩放直接加上，它就等于 1。
# 两种情况下都有 $\partial H_t / \partial V_{t-1} = 1 - 1/\tau$。所以 `LIF_backward` 的最后两个参数是
# $1/\tau$ 和 `detach_input`。循环从最后一步开始，此时 $\partial L / \partial V_{T-1} = u$，然后把
# $\partial L / \partial V_{t-1}$ 交给前一步。我们调用 `LIF_backward`，并在同一个循环里自己计算这
# 三个方程。

# %%
grad_x_loop = torch.zeros(T, N, **f64)
grad_v = u                                   # dL/dV[T-1]
grad_v_manual = u
for t in reversed(range(T)):
    grad_x_loop[t], grad_v = neuron.LIF_backward(w[t], grad_v, ds_dh[t], dv_dh[t], 1 / tau, False)
    # 用普通算术写出同一步
    grad_h = w[t] * ds_dh[t] + grad_v_manual * dv_dh[t]
    grad_x_manual = grad_h * (1 / tau)
    grad_v_manual = grad_h * (1 - 1 / tau)
    torch.testing.assert_close(grad_x_loop[t], grad_x_manual)
torch.testing.assert_close(grad_v, grad_v_manual)
grad_v_init_loop = grad_v                    # dL/dV[-1]
print("CHECK ok: LIF_backward equals the three backward equations, step by step")

# %% [markdown]
# ## 各用一次调用完成
#
# 多步函数在核函数内部完成这两个循环：`LIF_hard_reset_fptt_with_grad` 以 `[T, N]` 张量的形式返回
# 所有步的脉冲、最后的膜电位和两个局部导数；`LIF_bptt` 从 $t = T-1$ 到 $0$ 运行反向循环。

# %%
spike_seq, v_next, ds_dh_seq, dv_dh_seq = neuron.LIF_hard_reset_fptt_with_grad(x_seq, v_init, **p)
grad_x_seq, grad_v_init = neuron.LIF_bptt(w, u, ds_dh_seq, dv_dh_seq, 1 / tau, False)

assert torch.equal(spike_seq, spikes)
torch.testing.assert_close(v_next, v_last)
torch.testing.assert_close(ds_dh_seq, torch.stack(ds_dh))
torch.testing.assert_close(grad_x_seq, grad_x_loop)
torch.testing.assert_close(grad_v_init, grad_v_init_loop)
print("CHECK ok: LIF_hard_reset_fptt_with_grad + LIF_bptt equal the step-by-step loop")

# %% [markdown]
# ## 与 torch.autograd 对照
#
# 最后做一次独立的检验。`spikecore.reference.fptt_autograd` 用可微的 PyTorch 运算搭出同一个前向
# 传播，其中阶跃函数的反向传播就是替代梯度，然后让 autograd 推导出所有梯度。我们还用普通 PyTorch
# 写了一个自己的前向传播：脉冲取 `step + (g - g.detach())`，它的值恰好是阶跃（括号内为零），
# 它的梯度是 $g'$，因为 `step` 和 `g.detach()` 都不带梯度。

# %%
cfg = spikecore.NeuronConfig.build("LIF", v_th, v_reset, reciprocal_tau=1 / tau, alpha=alpha,
                                   surrogate="ATan", detach_reset=False)


def autograd_grads(forward):
    x = x_seq.clone().requires_grad_()
    v0 = v_init.clone().requires_grad_()
    s, v_end = forward(x, v0)
    loss = (w * s).sum() + (u * v_end).sum()
    loss.backward()
    return x.grad, v0.grad


def plain_torch_forward(x_seq, v):
    out = []
    for x in x_seq:
        h = v + (x - (v - v_reset)) / tau
        g = surrogate.ATan.primitive(h - v_th, alpha)
        s = (h >= v_th).to(h.dtype) + (g - g.detach())
        v = s * v_reset + (1 - s) * h
        out.append(s)
    return torch.stack(out), v


for name, forward in [("reference.fptt_autograd", lambda x, v: reference.fptt_autograd(x, v, cfg)),
                      ("plain PyTorch", plain_torch_forward)]:
    gx, gv = autograd_grads(forward)
    torch.testing.assert_close(gx, grad_x_seq)
    torch.testing.assert_close(gv, grad_v_init)
    print(f"{name:<24} max |dL/dX difference| = {(gx - grad_x_seq).abs().max():.2e}")
print("CHECK ok: hand-computed BPTT gradients equal torch.autograd's")

# %% [markdown]
# 神经元层 `MultiStepLIFNode` 走一条更快的路得到同样的数：它的前向传播只保存一个 `[T, N]` 张量
# $H$（CPU 上的小层则保存输入 $X$，反向传播先由它重新算出 $H$），反向传播再重新算出 $S$ 和两个局部
# 导数，它们都只依赖 $H$。它的梯度也必须一致。

# %%
lif = spikecore.MultiStepLIFNode(tau=tau, v_threshold=v_th, v_reset=v_reset,
                                 surrogate_function="ATan", alpha=alpha)
x = x_seq.clone().requires_grad_()
lif.v = v_init.clone().requires_grad_()     # 从 V[-1] 而不是静息状态开始
v0 = lif.v
loss = (w * lif(x)).sum() + (u * lif.v).sum()
loss.backward()
torch.testing.assert_close(x.grad, grad_x_seq)
torch.testing.assert_close(v0.grad, grad_v_init)
print("CHECK ok: MultiStepLIFNode's backward equals LIF_bptt")

# %% [markdown]
# ## 所有重置方式
#
# 对软重置（`v_reset=None`）、`detach_reset=True`（反向传播中不经过重置，于是
# $\partial V_t / \partial H_t$ 失去替代梯度那一项）以及 `detach_input=True` 做同样的比较，使用
# `LIF_hard_reset_fptt_with_grad`、`LIF_soft_reset_fptt_with_grad` 和 `LIF_bptt`。传给 `LIF_bptt` 的
# `detach_input` 必须与前向传播相同，因为 $\partial H_t / \partial X_t$ 取决于它。

# %%
for hard in (True, False):
    for detach_reset in (False, True):
        for detach_input in (False, True):
            cfg = spikecore.NeuronConfig.build("LIF", v_th, v_reset if hard else None,
                                               reciprocal_tau=1 / tau, detach_input=detach_input,
                                               alpha=alpha, surrogate="ATan",
                                               detach_reset=detach_reset)
            if hard:
                fwd = neuron.LIF_hard_reset_fptt_with_grad(
                    x_seq, v_init, v_th, v_reset, alpha, detach_reset, 0, 1 / tau, detach_input)
            else:
                fwd = neuron.LIF_soft_reset_fptt_with_grad(
                    x_seq, v_init, v_th, alpha, detach_reset, 0, 1 / tau, detach_input)
            _, _, ds_dh_seq, dv_dh_seq = fwd
            gx, gv = neuron.LIF_bptt(w, u, ds_dh_seq, dv_dh_seq, 1 / tau, detach_input)
            ax, av = autograd_grads(lambda x, v: reference.fptt_autograd(x, v, cfg))
            torch.testing.assert_close(gx, ax)
            torch.testing.assert_close(gv, av)
            print(f"{'hard' if hard else 'soft'} reset, detach_reset={detach_reset!s:<5} "
                  f"detach_input={detach_input!s:<5} max diff {(gx - ax).abs().max():.1e}")
print("CHECK ok: all eight reset/detach variants match autograd")

# %% [markdown]
# ## 梯度能往回传多远？
#
# 把全部损失放在最后一步的脉冲上，$L = \sum_n S_{T-1,n}$，然后看更早各步的
# $|\partial L / \partial X_t|$。每往回一步，梯度就乘上
# $\frac{\partial V_t}{\partial H_t}\left(1 - \frac{1}{\tau}\right)$，所以强泄漏（$\tau$ 小）遗忘得
# 很快，而慢泄漏能把梯度带过许多步。
#
# 下面的调用传入 `detach_reset=True`（第六个参数），与后面几篇教程中的网络相同。这时硬重置的
# $\partial V_t / \partial H_t$ 等于 $1 - S_t$：不放电的步上因子是 $1 - 1/\tau$，放电的步上则为 0，
# 所以一个神经元的梯度往回传到它在 $T-1$ 之前的最后一个脉冲就停止了。这里的输入大多低于阈值，脉冲
# 很少（$\tau = 1.5$ 时 40 步里每个神经元约放电一次，$\tau = 16$ 时完全不放电），所以这幅图中的遗忘
# 主要来自泄漏。

# %%
T_long = 20 if FAST else 40
x_long = 0.6 + 0.3 * torch.randn(T_long, 256, **f64)
fig, ax = plt.subplots(figsize=(7, 4))
for tau_k in (1.5, 2.0, 4.0, 16.0):
    _, _, ds, dv = neuron.LIF_hard_reset_fptt_with_grad(
        x_long, torch.zeros(256, **f64), v_th, v_reset, alpha, True, 0, 1 / tau_k, False)
    grad_out = torch.zeros(T_long, 256, **f64)
    grad_out[-1] = 1.0                                   # dL/dS：只有最后一步计入损失
    gx, _ = neuron.LIF_bptt(grad_out, torch.zeros(256, **f64), ds, dv, 1 / tau_k, False)
    ax.semilogy(range(T_long), gx.abs().mean(1).clamp(min=1e-20), "o-", ms=3,
                label=f"tau = {tau_k}")
ax.set(xlabel="time step t", ylabel="mean |dL/dX[t]|",
       title="gradient of the last step's spikes, back in time")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "reach")

# %% [markdown]
# 上面检验过的梯度画成图：来自 `LIF_bptt` 的每个神经元、每一步的 $\partial L / \partial X_t$。

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
im = ax.imshow(grad_x_seq.T.numpy(), aspect="auto", cmap="coolwarm")
ax.set(xlabel="time step t", ylabel="neuron", title="dL/dX from LIF_bptt")
fig.colorbar(im)
show(fig, "grad_x")

# %% [markdown]
# ## 小结
#
# - 脉冲层的 BPTT 是一个从最后一步到第一步的循环，每个神经元只携带一个数：
#   $\partial L / \partial V_t$。
# - 每一步只需要两个局部导数，$\partial S_t / \partial H_t$（替代梯度）和
#   $\partial V_t / \partial H_t$（来自重置），再加上充电方程的常数 $\partial H_t / \partial X_t$ 和
#   $\partial H_t / \partial V_{t-1}$。
# - spikecore 的教学函数、融合神经元层和 torch.autograd 给出相同的梯度。

# %%
print("CHECK ok: tutorial 03 finished")
