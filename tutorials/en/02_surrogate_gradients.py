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
# # 2. Surrogate gradients
#
# A neuron fires $S = \Theta(H - V_{th})$. The step function $\Theta$ is flat everywhere except
# at the threshold, where it jumps, so its derivative is zero almost everywhere: gradient
# descent through it would never change a weight. Surrogate-gradient training keeps the step in
# the forward pass and, in the backward pass only, replaces its derivative by the derivative
# $g'(x; \alpha)$ of a smooth function $g$ that looks like a blurred step, with
# $x = H - V_{th}$. The sharpness $\alpha$ sets how blurred it is. (One of spikecore's seven,
# SuperSpike, is a blurred step of height $2/\alpha$ rather than 1; more on it below.)
#
# This tutorial plots spikecore's seven surrogates, checks that each derivative really is the
# derivative of its smooth function, and trains a small network with several values of $\alpha$
# to see how the choice changes learning.

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
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"02_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
print("surrogates by index:", dict(enumerate(surrogate.NAMES)))

# %% [markdown]
# ## The step has no useful derivative
#
# Autograd agrees: a comparison `h >= v_th` is not differentiable at all, and even a smooth
# function that rounds to the step would give zeros. Nothing flows back to `h`.

# %%
h = torch.linspace(-1, 3, 9, requires_grad=True)
step = (h - 1.0 >= 0).to(h.dtype)
print("spikes:", step.tolist(), "| requires grad:", step.requires_grad)

# %% [markdown]
# ## Seven smooth steps
#
# Each entry of `surrogate.SURROGATES` carries the smooth function (`primitive`, $g$) and its
# derivative (`derivative`, $g'$), both as plain PyTorch functions of $x$ and $\alpha$. The list
# index is the `grad_surrogate_function_index` of the kernel functions; the name is what the
# neuron layers accept as `surrogate_function`. For example the arctangent surrogate (index 0) is
#
# $$
# g(x) = \frac{1}{\pi}\arctan\left(\frac{\pi}{2}\alpha x\right) + \frac{1}{2}, \qquad
# g'(x) = \frac{\alpha / 2}{1 + \left(\frac{\pi}{2}\alpha x\right)^2}
# $$
#
# and the sigmoid surrogate (index 1) is $g(x) = \sigma(\alpha x)$ with
# $g'(x) = \alpha\,\sigma(\alpha x)\left(1 - \sigma(\alpha x)\right)$. The documentation's
# surrogate chapter derives all seven. Here they are side by side at the default $\alpha = 2$.
#
# The legend has seven entries but the plots show six curves: at $\alpha = 2$ SoftSign and
# SuperSpike are the same function. SoftSign's derivative is
# $g'(x) = \frac{\alpha}{2(1 + \alpha |x|)^2}$ and SuperSpike's is
# $g'(x) = \frac{1}{(1 + \alpha |x|)^2}$, that is SoftSign's times $2/\alpha$, and their
# primitives differ by the same factor. At $\alpha = 2$ the factor is 1, and SuperSpike's curve,
# drawn later, hides SoftSign's.

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
# Every derivative should be the derivative of its primitive. We let autograd differentiate each
# primitive and compare (away from the two kinks of `PiecewiseQuadratic`, where the derivative
# jumps). We also read off the peak $g'(0)$: the largest gradient a neuron exactly at the
# threshold passes on.

# %%
for sg in surrogate.SURROGATES:
    for a in (0.5, 2.0, 8.0):
        xs = torch.linspace(-3, 3, 601, dtype=torch.float64)
        xs = xs[(xs.abs() - 1 / a).abs() > 1e-3].requires_grad_()   # skip |x| = 1/alpha
        (auto,) = torch.autograd.grad(sg.primitive(xs, a).sum(), xs)
        torch.testing.assert_close(auto, sg.derivative(xs.detach(), a))
    peak = sg.derivative(torch.zeros(1), 2.0).item()
    print(f"{sg.index} {sg.name:<18} g'(0) = {peak:.3f} at alpha = 2")
print("CHECK ok: each surrogate derivative equals autograd's derivative of its primitive")

# %% [markdown]
# ## The sharpness $\alpha$
#
# A larger $\alpha$ makes $g$ closer to the step and $g'$ taller and narrower: the gradient is
# large for neurons right at the threshold and tiny for everything else. A smaller $\alpha$
# spreads a weak gradient over a wide range of potentials. The plots show ATan; all surrogates
# behave this way except SuperSpike, whose peak is $g'(0) = 1$ for every $\alpha$: a larger
# $\alpha$ only makes its $g'$ narrower, and its $g$, which rises from 0 to $2/\alpha$, flattens
# towards zero instead of approaching the step.

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
# ## Where the surrogate enters a neuron layer
#
# In a neuron layer the surrogate replaces $\partial S / \partial H$. For a single LIF step from
# rest ($V_{t-1} = V_r = 0$) the charge is $H = X / \tau$, so the gradient of the spike
# with respect to the input is $g'(X/\tau - V_{th}) / \tau$. Let us check that against the
# layer's backward pass.

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
# ## How $\alpha$ changes learning
#
# Now a small experiment. A two-layer spiking network (64 inputs, 64 LIF neurons, 10 LIF output
# neurons) learns the 8x8 digits for a fixed number of steps, once per value of $\alpha$, from
# the same initial weights and the same batches. The input image is fed as a constant current
# for `T = 4` steps, and the class scores are the output firing rates.
#
# At the start every output neuron is silent, so the loss sits at $\ln 10 \approx 2.303$, and
# only the surrogate can tell the silent neurons which way to move. The curves show the
# trade-off: a small $\alpha$ gives every neuron a weak, blurry gradient and learns slowly; a
# large $\alpha$ gives a sharp gradient only to the few neurons near the threshold, and the
# neurons far from it hardly learn. In this setting a middle value learns fastest.

# %%
digits = load_dataset("digits")
x_train, y_train = digits.train_x.flatten(1), digits.train_y   # [N, 64], [N]
steps = 40 if FAST else 150
batch = 64 if FAST else 128
T = 4


def train(alpha, surrogate_function="ATan", steps=steps):
    torch.manual_seed(0)                                  # same initial weights for every run
    net = nn.Sequential(
        nn.Linear(64, 64),
        spikecore.MultiStepLIFNode(tau=2.0, surrogate_function=surrogate_function,
                                   alpha=alpha, detach_reset=True),
        nn.Linear(64, 10),
        spikecore.MultiStepLIFNode(tau=2.0, surrogate_function=surrogate_function,
                                   alpha=alpha, detach_reset=True),
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    batches = torch.Generator().manual_seed(0)            # same batches for every run
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(y_train), (batch,), generator=batches)
        x_seq = x_train[idx].expand(T, -1, -1)            # [T, batch, 64]: constant input
        spikecore.reset_net(net)
        rate = net(x_seq).mean(0)                         # firing rate of each output neuron
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
# The middle of the range should beat both ends, and training should clearly move away from the
# initial $\ln 10$:

# %%
middle = min(final[1.0], final[4.0])
assert middle < 1.0, final
assert middle < final[0.25] and middle < final[64.0], final
print("CHECK ok: a moderate alpha learns faster than a very small or very large one")

# %% [markdown]
# ## All seven at the default $\alpha$
#
# The same experiment with each surrogate at $\alpha = 2$. Most of them behave alike; SoftSign
# and SuperSpike, the same function at this $\alpha$, train to identical losses. Watch
# `PiecewiseQuadratic`: its derivative is exactly zero for $|x| > 1/\alpha$, so a neuron whose
# potential stays more than $1/\alpha$ below the threshold receives no gradient at all. If every
# output neuron starts there, the network cannot get going and the loss stays at $\ln 10$.
# Surrogates with tails that never reach zero do not have that problem; a smaller $\alpha$ (a
# wider support) is the remedy for the compact ones.

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
assert per_surrogate["SoftSign"] == per_surrogate["SuperSpike"]   # one function at alpha = 2

# %% [markdown]
# ## Summary
#
# - The forward pass keeps the exact step; the backward pass uses the derivative $g'$ of a
#   smooth step $g$, evaluated at $x = H - V_{th}$.
# - $\alpha$ trades the width of the gradient against its height: too small learns slowly,
#   too large leaves most neurons without a gradient.
# - Surrogates whose derivative is zero outside a window can stall a layer that starts far from
#   its threshold.
#
# The next tutorial follows the surrogate through time: backpropagation through time, by hand.

# %%
print("CHECK ok: tutorial 02 finished")
