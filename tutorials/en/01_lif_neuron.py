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
# # 1. One LIF neuron by hand
#
# A spiking neuron keeps one number between time steps, its membrane potential. At every step it
# does three things: it **charges** (the input current moves the potential), it **fires** (it
# emits a spike when the potential reaches the threshold) and it **resets** (after a spike the
# potential is pulled down). In this tutorial we write those three equations ourselves in a few
# lines of PyTorch, simulate a handful of neurons, look at their potentials and spikes, and then
# check that spikecore's fused kernels and neuron layers compute exactly the same thing.
#
# Everything runs on a laptop CPU in seconds.

# %%
import os

import matplotlib.pyplot as plt
import torch

import spikecore
from spikecore import neuron

# The test suite sets SPIKECORE_TUTORIAL_FAST=1 to run a shorter version of each tutorial,
# and SPIKECORE_TUTORIAL_FIGDIR to keep the figures.
FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"01_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
print(f"spikecore {spikecore.__version__}, torch {torch.__version__}, fast mode: {FAST}")

# %% [markdown]
# ## The three equations
#
# Write $X_t$ for the input at step $t$, $V_{t-1}$ for the potential before the step, $H_t$ for
# the potential after charging, $S_t$ for the spike (0 or 1) and $V_t$ for the potential after
# the reset. The leaky integrate-and-fire (LIF) neuron with time constant $\tau$ charges as
#
# $$
# H_t = V_{t-1} + \frac{1}{\tau}\left(X_t - (V_{t-1} - V_r)\right)
# $$
#
# so without input the potential decays towards the resting value $V_r$ (`v_reset`), and with a
# constant input $X$ it approaches $V_r + X$. It fires when the charged potential reaches
# the threshold $V_{th}$, where $\Theta$ is the Heaviside step with $\Theta(0) = 1$:
#
# $$
# S_t = \Theta(H_t - V_{th})
# $$
#
# After a spike, a **hard reset** puts the potential back to $V_r$, while a **soft reset**
# subtracts the threshold and keeps whatever was above it:
#
# $$
# V_t = S_t V_r + (1 - S_t) H_t
# $$
#
# $$
# V_t = H_t - S_t V_{th}
# $$
#
# In spikecore a soft reset is chosen with `v_reset=None`; the charge then uses 0 as the resting
# value. Here are the equations as Python functions, one line each.

# %%
tau, v_th, v_reset = 4.0, 1.0, 0.0


def charge(x, v, v_rest):
    # leaky integration towards v_rest + x
    return v + (x - (v - v_rest)) * (1.0 / tau)


def fire(h):
    # Heaviside step: a potential exactly at the threshold fires
    return (h >= v_th).to(h.dtype)


def hard_reset(h, s):
    return s * v_reset + (1 - s) * h


def soft_reset(h, s):
    return h - s * v_th


# %% [markdown]
# ## Simulating three neurons
#
# We drive three neurons for `T` steps: the first with a constant current just below the
# threshold, the second with a constant current above it, the third with a noisy current. The
# loop over time is the whole simulation; we keep $H_t$, $S_t$ and $V_t$ of every step.

# %%
T = 60
x_seq = torch.stack([torch.full((T,), 0.95),
                     torch.full((T,), 1.6),
                     1.3 + 0.6 * torch.randn(T)], dim=1)   # [T, 3 neurons]


def simulate(x_seq, reset, v_rest):
    v = torch.full(x_seq.shape[1:], v_rest)   # every neuron starts at rest
    hs, ss, vs = [], [], []
    for x in x_seq:                           # one time step per iteration
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
# ## Potential and spikes
#
# In the plots each step draws two points: the line rises (or falls) from $V_{t-1}$ to the
# charged $H_t$, then drops straight down to $V_t$ when the neuron fires. Red ticks on top mark
# the spikes. The first neuron never fires: its potential creeps towards $0.95$ and stays below
# the threshold, however long we wait. With a hard reset every spike throws away the part of
# $H_t$ above the threshold; with a soft reset that remainder is kept and counts towards the next
# spike. So the soft-reset neuron fires at least as often as the hard-reset one, and more often
# for some inputs: in the counts printed above the two agree for both constant currents, and
# under the noisy current the soft-reset neuron fires once more.


# %%
def sawtooth(h, v):
    # the trace V[-1] -> H[0] -> V[0] -> H[1] -> ... drawn over time
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
# ## The same neurons in spikecore
#
# spikecore's kernel functions run exactly these equations, fused into one loop over time
# written in Cython (or CUDA on a GPU). `LIF_hard_reset_fptt` takes the whole sequence
# `[T, *]`, the potential before the first step, $V_{th}$, $V_r$, $1/\tau$ and the
# `detach_input` flag (explained below) and returns the spikes and the last potential. The
# forward pass does the same floating-point operations in the same order as our Python
# functions, so the results are not just close but identical.

# %%
v0 = torch.zeros(3)
spikes, v_last = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, False)
assert torch.equal(spikes, s_hard) and torch.equal(v_last, v_hard[-1])
spikes, v_last = neuron.LIF_soft_reset_fptt(x_seq, v0, v_th, 1.0 / tau, False)
assert torch.equal(spikes, s_soft) and torch.equal(v_last, v_soft[-1])

# one step at a time: the single-step function, called in our own loop
v = v0
for t in range(T):
    s, v = neuron.LIF_hard_reset_forward(x_seq[t], v, v_th, v_reset, 1.0 / tau, False)
    assert torch.equal(s, s_hard[t]) and torch.equal(v, v_hard[t])
print("CHECK ok: kernel functions equal the hand-written neuron (hard and soft reset)")

# %% [markdown]
# The neuron layers wrap the same kernels in a `torch.nn.Module` that keeps the potential in
# `self.v` between calls. `MultiStepLIFNode` takes a whole sequence, `LIFNode` one step per call.
# Both must be reset with `reset()` before an unrelated input, otherwise the potential left over
# from the previous input carries on.

# %%
multi = spikecore.MultiStepLIFNode(tau=tau, v_threshold=v_th, v_reset=v_reset)
assert torch.equal(multi(x_seq), s_hard)
assert torch.equal(multi.v, v_hard[-1])

single = spikecore.LIFNode(tau=tau, v_threshold=v_th, v_reset=None)   # soft reset
steps = torch.stack([single(x_seq[t]) for t in range(T)])
assert torch.equal(steps, s_soft)

multi.reset()
single.reset()
print("after reset():", multi.v, single.v)
print("CHECK ok: LIFNode and MultiStepLIFNode equal the hand-written neuron")

# %% [markdown]
# ## Firing rate against input current
#
# How often does a neuron fire under a constant input? We run one neuron per input value, a
# few hundred of them side by side in one call, and count spikes. Four neurons are compared:
# LIF and IF (the integrate-and-fire neuron, $H_t = V_{t-1} + X_t$, which never leaks), each
# with a hard and a soft reset.
#
# - The LIF neuron is silent below $X = V_{th}$: its potential converges to $X$ and never reaches
#   the threshold. Above it, the rate grows with the current.
# - The IF neuron with a soft reset is the ideal rate coder: its rate is $\min(X / V_{th}, 1)$.
#   Every unit of input is eventually spent on a spike, up to one spike per step: above
#   $X = V_{th}$ it fires at every step, and the remainder piles up in the potential.
# - The IF neuron with a hard reset loses the remainder at each spike, so its rate is a
#   staircase: it needs $\lceil V_{th} / X \rceil$ steps per spike.

# %%
T_long = 100 if FAST else 400
current = torch.linspace(0.0, 2.5, 251)
x_const = current.expand(T_long, -1).contiguous()     # [T_long, 251]: one neuron per current
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
# The three observations, checked in numbers:

# %%
below = current < 0.99
assert rates["LIF, hard reset"][below].sum() == 0 and rates["LIF, soft reset"][below].sum() == 0
assert rates["LIF, hard reset"][current > 1.2].min() > 0
ideal = (current / v_th).clamp(max=1.0)
assert (rates["IF, soft reset"] - ideal).abs().max() <= 1.0 / T_long + 1e-6
ratio = v_th / current[1:]                    # current[0] = 0 never fires
# where the ratio is a whole number, rounding decides whether k inputs sum to the threshold
clear = (ratio - ratio.round()).abs() > 1e-3
assert torch.allclose(rates["IF, hard reset"][1:][clear], 1 / torch.ceil(ratio[clear]),
                      atol=1.0 / T_long)
print("CHECK ok: firing rates follow the LIF threshold, the IF soft-reset line and staircase")

# %% [markdown]
# ## What `detach_input` changes
#
# With `detach_input=True` the input is added without the $1/\tau$ factor,
# $H_t = V_{t-1} + X_t - \frac{1}{\tau}(V_{t-1} - V_r)$: the leak still acts on the
# potential, but the input is not scaled down. The same current then drives the neuron $\tau$
# times harder.
#
# Despite its name, the flag detaches nothing from the autograd graph: it selects a different
# charge equation, and the gradient follows that equation ($\partial H_t / \partial X_t = 1$
# instead of $1/\tau$). The name comes from the original `spikingjelly.cext` API that spikecore
# reproduces; later SpikingJelly versions call the same switch `decay_input`, with the opposite
# meaning: `detach_input=True` is SpikingJelly's `decay_input=False`.

# %%
s_decay, _ = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, False)
s_plain, _ = neuron.LIF_hard_reset_fptt(x_seq, v0, v_th, v_reset, 1.0 / tau, True)
print("spikes per neuron, detach_input=False:", s_decay.sum(0).tolist())
print("spikes per neuron, detach_input=True: ", s_plain.sum(0).tolist())
assert (s_plain.sum(0) >= s_decay.sum(0)).all()

# %% [markdown]
# ## Summary
#
# - A spiking neuron is three equations per step: charge, fire, reset.
# - A hard reset forgets what was above the threshold, a soft reset keeps it.
# - spikecore's kernels and layers compute bit for bit what our few lines of Python compute,
#   only in one fused loop.
#
# The spike is a step function, so its derivative is zero almost everywhere. The next tutorial
# shows how training gets around that with surrogate gradients.

# %%
print("CHECK ok: tutorial 01 finished")
