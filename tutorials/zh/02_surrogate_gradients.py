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
# # 2. 替代梯度
#
# 神经元按 $S = \Theta(H - V_{th})$ 放电。阶跃函数 $\Theta$ 除了在阈值处跳变以外处处平坦，所以它的
# 导数几乎处处为零：经过它做梯度下降，权重永远不会改变。替代梯度训练在前向传播中保留阶跃函数，
# 只在反向传播中把它的导数换成 $g'(x; \alpha)$：这是一个看起来像模糊阶跃的光滑函数 $g$ 的导数，
# 其中 $x = H - V_{th}$。锐度 $\alpha$ 决定模糊的程度。（spikecore 的七种替代函数中有一种例外：
# SuperSpike 是高度为 $2/\alpha$ 而不是 1 的模糊阶跃，下文再详细介绍。）
#
# 本教程画出 spikecore 的七种替代函数，检验每个导数确实是对应光滑函数的导数，并用几个不同的
# $\alpha$ 训练一个小网络，看看这个选择如何影响学习。

# %%
import math
import os

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import spikecore
from spikecore import surrogate
from spikecore.data import load_dataset

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # 显示图像（在 notebook 中内嵌显示），设置了 FIG_DIR 时保存图像，最后释放它
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"02_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
print("surrogates by index:", dict(enumerate(surrogate.NAMES)))

# %% [markdown]
# ## 阶跃函数没有有用的导数
#
# autograd 也这么认为：比较运算 `h >= v_th` 根本不可微，即使一个取整到阶跃的光滑函数也只会给出
# 零。没有任何梯度流回 `h`。

# %%
h = torch.linspace(-1, 3, 9, requires_grad=True)
step = (h - 1.0 >= 0).to(h.dtype)
print("spikes:", step.tolist(), "| requires grad:", step.requires_grad)

# %% [markdown]
# ## 七个光滑的阶跃
#
# `surrogate.SURROGATES` 的每一项都带有光滑函数（`primitive`，即 $g$）及其导数（`derivative`，即
# $g'$），两者都是以 $x$ 和 $\alpha$ 为参数的普通 PyTorch 函数。列表下标就是核函数的
# `grad_surrogate_function_index`；名称则是神经元层的 `surrogate_function` 参数接受的值。例如反正切
# 替代函数（下标 0）是
#
# $$
# g(x) = \frac{1}{\pi}\arctan\left(\frac{\pi}{2}\alpha x\right) + \frac{1}{2}, \qquad
# g'(x) = \frac{\alpha / 2}{1 + \left(\frac{\pi}{2}\alpha x\right)^2}
# $$
#
# sigmoid 替代函数（下标 1）是 $g(x) = \sigma(\alpha x)$，导数为
# $g'(x) = \alpha\,\sigma(\alpha x)\left(1 - \sigma(\alpha x)\right)$。文档的替代梯度一章推导了全部
# 七种。下面在默认值 $\alpha = 2$ 下把它们并排画出。
#
# 图例有七项，图中却只有六条曲线：在 $\alpha = 2$ 时 SoftSign 和 SuperSpike 是同一个函数。SoftSign
# 的导数是 $g'(x) = \frac{\alpha}{2(1 + \alpha |x|)^2}$，SuperSpike 的导数是
# $g'(x) = \frac{1}{(1 + \alpha |x|)^2}$，即 SoftSign 的导数乘以 $2/\alpha$，两者的原函数也相差同一个
# 因子。$\alpha = 2$ 时这个因子等于 1，后画的 SuperSpike 曲线就把 SoftSign 的曲线盖住了。

# %%
x = torch.linspace(-2.5, 2.5, 501)
alpha = 2.0
fig, (ax_g, ax_dg) = plt.subplots(1, 2, figsize=(12, 4))
ax_g.plot(x, (x >= 0).float(), "k--", lw=1, label="step")
for sg in surrogate.SURROGATES:
    ax_g.plot(x, sg.primitive(x, alpha), label=f"{sg.index} {sg.name}")
    ax_dg.plot(x, sg.derivative(x, alpha), label=f"{sg.index} {sg.name}")
ax_g.set(title="primitive g(x)", xlabel="x = H - V_th")
ax_dg.set(title="derivative g'(x), used in the backward pass", xlabel="x = H - V_th")
for ax in (ax_g, ax_dg):
    ax.grid(alpha=0.3)
ax_g.legend(fontsize=8)
fig.tight_layout()
show(fig, "surrogates")

# %% [markdown]
# 每个导数都应当是对应原函数的导数。我们让 autograd 对每个原函数求导并加以比较（避开
# `PiecewiseQuadratic` 的两个折点，那里导数有跳变）。我们还读出峰值 $g'(0)$：恰好位于阈值处的
# 神经元所能传递的最大梯度。

# %%
for sg in surrogate.SURROGATES:
    for a in (0.5, 2.0, 8.0):
        xs = torch.linspace(-3, 3, 601, dtype=torch.float64)
        xs = xs[(xs.abs() - 1 / a).abs() > 1e-3].requires_grad_()   # 跳过 |x| = 1/alpha
        (auto,) = torch.autograd.grad(sg.primitive(xs, a).sum(), xs)
        torch.testing.assert_close(auto, sg.derivative(xs.detach(), a))
    peak = sg.derivative(torch.zeros(1), 2.0).item()
    print(f"{sg.index} {sg.name:<18} g'(0) = {peak:.3f} at alpha = 2")
print("CHECK ok: each surrogate derivative equals autograd's derivative of its primitive")

# %% [markdown]
# ## 锐度 $\alpha$
#
# $\alpha$ 越大，$g$ 越接近阶跃，$g'$ 越高越窄：恰在阈值附近的神经元得到很大的梯度，其余神经元
# 的梯度则微乎其微。$\alpha$ 越小，微弱的梯度就分散在越宽的膜电位范围上。图中画的是 ATan；除
# SuperSpike 外，所有替代函数都是如此。SuperSpike 的峰值 $g'(0) = 1$ 与 $\alpha$ 无关：$\alpha$ 越大，
# 它的 $g'$ 只是越窄；它的 $g$ 从 0 升到 $2/\alpha$，会越来越平坦、趋近于零，而不是趋近阶跃。

# %%
fig, (ax_g, ax_dg) = plt.subplots(1, 2, figsize=(12, 4))
for a in (0.5, 1.0, 2.0, 4.0, 8.0):
    ax_g.plot(x, surrogate.ATan.primitive(x, a), label=f"alpha = {a}")
    ax_dg.plot(x, surrogate.ATan.derivative(x, a), label=f"alpha = {a}")
ax_g.set(title="ATan primitive", xlabel="x = H - V_th")
ax_dg.set(title="ATan derivative", xlabel="x = H - V_th")
for ax in (ax_g, ax_dg):
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
fig.tight_layout()
show(fig, "alpha_shapes")

# %% [markdown]
# ## 替代函数在神经元层中的位置
#
# 在神经元层中，替代函数取代的是 $\partial S / \partial H$。对于从静息状态
# （$V_{t-1} = V_r = 0$）开始的单个 LIF 步，充电结果为 $H = X / \tau$，因此脉冲对输入的梯度是
# $g'(X/\tau - V_{th}) / \tau$。我们用神经元层的反向传播来验证这一点。

# %%
tau = 2.0
x_in = torch.linspace(0.0, 4.0, 9, requires_grad=True)
lif = spikecore.LIFNode(tau=tau, surrogate_function="ATan", alpha=2.0)
lif(x_in).sum().backward()
expected = surrogate.ATan.derivative(x_in.detach() / tau - 1.0, 2.0) / tau
torch.testing.assert_close(x_in.grad, expected)
print("dS/dX:", [round(g, 4) for g in x_in.grad.tolist()])
print("CHECK ok: LIFNode's gradient is the surrogate derivative times dH/dX")

# %% [markdown]
# ## $\alpha$ 如何影响学习
#
# 现在做一个小实验。一个两层脉冲网络（64 个输入、64 个 LIF 神经元、10 个 LIF 输出神经元）在 8x8
# 手写数字上训练固定的步数，每个 $\alpha$ 值训练一次，初始权重和批次都相同。输入图像作为恒定电流
# 持续 `T = 4` 步，类别得分是输出神经元的发放率。
#
# 开始时所有输出神经元都沉默，所以损失停在 $\ln 10 \approx 2.303$，只有替代梯度能告诉这些沉默的
# 神经元该往哪个方向调整。曲线展示了其中的权衡：$\alpha$ 小时，每个神经元得到的梯度都弱而模糊，
# 学得慢；$\alpha$ 大时，只有少数靠近阈值的神经元得到尖锐的梯度，远离阈值的神经元几乎学不到东西。
# 在这个设置下，中间的取值学得最快。

# %%
digits = load_dataset("digits")
x_train, y_train = digits.train_x.flatten(1), digits.train_y   # [N, 64], [N]
steps = 40 if FAST else 150
batch = 64 if FAST else 128
T = 4


def train(alpha, surrogate_function="ATan", steps=steps):
    torch.manual_seed(0)                                  # 每次训练的初始权重相同
    net = nn.Sequential(
        nn.Linear(64, 64),
        spikecore.MultiStepLIFNode(tau=2.0, surrogate_function=surrogate_function,
                                   alpha=alpha, detach_reset=True),
        nn.Linear(64, 10),
        spikecore.MultiStepLIFNode(tau=2.0, surrogate_function=surrogate_function,
                                   alpha=alpha, detach_reset=True),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = torch.Generator().manual_seed(0)            # 每次训练的批次相同
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(y_train), (batch,), generator=batches)
        x_seq = x_train[idx].expand(T, -1, -1)            # [T, batch, 64]：恒定输入
        spikecore.reset_net(net)
        rate = net(x_seq).mean(0)                         # 每个输出神经元的发放率
        loss = F.cross_entropy(5.0 * rate, y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


alphas = (0.25, 1.0, 4.0, 16.0, 64.0)
curves = {a: train(a) for a in alphas}
final = {a: sum(c[-10:]) / 10 for a, c in curves.items()}

fig, ax = plt.subplots(figsize=(7, 4))
for a, c in curves.items():
    ax.plot(c, label=f"alpha = {a}: final {final[a]:.3f}")
ax.set(xlabel="training step", ylabel="cross-entropy", title="ATan surrogate, several alphas")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "alpha_training")
for a in alphas:
    print(f"alpha = {a:>5}: mean loss of the last 10 steps {final[a]:.3f}")

# %% [markdown]
# 取值范围的中间应当胜过两端，并且训练应当明显离开初始的 $\ln 10$：

# %%
middle = min(final[1.0], final[4.0])
assert middle < 1.0, final
assert middle < final[0.25] and middle < final[64.0], final
print("CHECK ok: a moderate alpha learns faster than a very small or very large one")

# %% [markdown]
# ## 默认 $\alpha$ 下的全部七种
#
# 用每种替代函数在 $\alpha = 2$ 下重复同一个实验。大多数表现相近；SoftSign 和 SuperSpike 在这个
# $\alpha$ 下是同一个函数，训练得到的损失完全相同。注意 `PiecewiseQuadratic`：它的
# 导数在 $|x| > 1/\alpha$ 时恰好为零，所以膜电位始终比阈值低 $1/\alpha$ 以上的神经元完全得不到梯度。
# 如果所有输出神经元一开始都处在那里，网络就无法起步，损失一直停在 $\ln 10$。导数尾部永不为零的
# 替代函数没有这个问题；对于导数只在有限区间内非零的替代函数，较小的 $\alpha$（更宽的支撑区间）
# 就是解决办法。

# %%
per_surrogate = {name: train(2.0, name, steps=30 if FAST else steps)
                 for name in surrogate.NAMES}
fig, ax = plt.subplots(figsize=(8, 3.5))
names = list(per_surrogate)
ax.bar(range(len(names)), [sum(c[-10:]) / 10 for c in per_surrogate.values()])
ax.set_xticks(range(len(names)), names, rotation=20)
ax.axhline(math.log(10), color="gray", ls="--", lw=1)
ax.set(ylabel="final cross-entropy", title="each surrogate at alpha = 2")
fig.tight_layout()
show(fig, "per_surrogate")
for name, c in per_surrogate.items():
    print(f"{name:<18} final loss {sum(c[-10:]) / 10:.3f}")
assert per_surrogate["SoftSign"] == per_surrogate["SuperSpike"]   # alpha = 2 时是同一个函数

# %% [markdown]
# ## 小结
#
# - 前向传播保留精确的阶跃；反向传播使用导数 $g'$（它来自光滑阶跃 $g$），在 $x = H - V_{th}$ 处
#   求值。
# - $\alpha$ 在梯度的宽度和高度之间权衡：太小学得慢，太大则让大多数神经元得不到梯度。
# - 导数只在一个窗口内非零的替代函数，可能让一个起点远离阈值的层停滞不前。
#
# 下一篇教程沿着时间追踪替代梯度：亲手做随时间反向传播。

# %%
print("CHECK ok: tutorial 02 finished")
