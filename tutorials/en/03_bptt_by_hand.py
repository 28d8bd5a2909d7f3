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
# # 3. Backpropagation through time by hand
#
# A layer of LIF neurons is a recurrent computation: the potential $V_t$ of one step is the
# input of the next. To train it we need $\partial L / \partial X_t$ for every step, and the
# chain rule has to walk backwards through time, from the last step to the first. This is
# backpropagation through time (BPTT).
#
# spikecore exposes every piece of it as a teaching function. In this tutorial we compute the
# gradients four ways and check that they agree:
#
# 1. a Python loop over time calling the one-step functions `LIF_hard_reset_forward_with_grad`
#    and `LIF_backward`;
# 2. the same backward written out in plain PyTorch arithmetic, one equation per line;
# 3. the multi-step functions `LIF_hard_reset_fptt_with_grad` and `LIF_bptt`;
# 4. `torch.autograd`, differentiating a forward pass built from ordinary tensor operations.

# %%
import os

import matplotlib.pyplot as plt
import torch

import spikecore
from spikecore import neuron, reference, surrogate

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"03_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)
f64 = dict(dtype=torch.float64)   # double precision for every tensor: the comparisons can be tight

# %% [markdown]
# ## The problem
#
# Take `N` LIF neurons over `T` steps with hard reset, starting from a potential $V_{-1}$. As a
# loss we use a weighted sum of all spikes plus a weighted sum of the final potentials,
#
# $$
# L = \sum_{t} \sum_{n} w_{t,n} S_{t,n} + \sum_{n} u_n V_{T-1,n}
# $$
#
# so that the gradients arriving from the loss are simply $\partial L / \partial S_t = w_t$ and
# $\partial L / \partial V_{T-1} = u$. Any other loss would only change these two inputs of the
# backward pass.

# %%
T, N = 8, 6
x_seq = 0.9 + 0.8 * torch.randn(T, N, **f64)   # inputs around the threshold: some steps fire
v_init = 0.3 * torch.rand(N, **f64)            # V[-1], the potential before the first step
w = torch.randn(T, N, **f64)                   # dL/dS[t]
u = torch.randn(N, **f64)                      # dL/dV[T-1]

v_th, v_reset, alpha, tau = 1.0, 0.0, 2.0, 2.0
p = dict(v_threshold=v_th, v_reset=v_reset, alpha=alpha, detach_reset=False,
         grad_surrogate_function_index=0, reciprocal_tau=1 / tau, detach_input=False)

# %% [markdown]
# ## Forward, one step at a time
#
# `LIF_hard_reset_forward_with_grad` runs one step (charge, fire, reset) and also returns the
# two local derivatives the backward pass needs, with $g'$ the ATan surrogate:
#
# $$
# \frac{\partial S_t}{\partial H_t} = g'(H_t - V_{th}), \qquad
# \frac{\partial V_t}{\partial H_t} = 1 - S_t + (V_r - H_t)\,\frac{\partial S_t}{\partial H_t}
# $$
#
# The second one follows from the hard reset $V_t = S_t V_r + (1 - S_t) H_t$: $H_t$ acts
# directly through $(1 - S_t) H_t$ and indirectly through the spike $S_t$. We run the loop and,
# next to it, compute $H_t$ ourselves to check both local derivatives against their formulas.

# %%
v = v_init
spikes, ds_dh, dv_dh = [], [], []
for t in range(T):
    h = v + (x_seq[t] - (v - v_reset)) / tau                  # our own charge, for the check
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
# ## Backward, one step at a time
#
# One step of the backward pass takes $\partial L / \partial S_t$ and the gradient
# $\partial L / \partial V_t$ that comes back from the future, and returns the gradient for the
# step's input and for the potential before the step:
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
# For the LIF charge used here (`detach_input=False`, the default)
# $\partial H_t / \partial X_t = 1/\tau$; with `detach_input=True`, where the input is added
# unscaled, it is 1. In both cases $\partial H_t / \partial V_{t-1} = 1 - 1/\tau$. That is why
# `LIF_backward` takes $1/\tau$ and `detach_input` as its last two arguments. The loop starts at
# the last step with $\partial L / \partial V_{T-1} = u$ and hands
# $\partial L / \partial V_{t-1}$ on to the step before. We call `LIF_backward` and, in the same
# loop, evaluate the three equations ourselves.

# %%
grad_x_loop = torch.zeros(T, N, **f64)
grad_v = u                                   # dL/dV[T-1]
grad_v_manual = u
for t in reversed(range(T)):
    grad_x_loop[t], grad_v = neuron.LIF_backward(w[t], grad_v, ds_dh[t], dv_dh[t], 1 / tau, False)
    # the same step in plain arithmetic
    grad_h = w[t] * ds_dh[t] + grad_v_manual * dv_dh[t]
    grad_x_manual = grad_h * (1 / tau)
    grad_v_manual = grad_h * (1 - 1 / tau)
    torch.testing.assert_close(grad_x_loop[t], grad_x_manual)
torch.testing.assert_close(grad_v, grad_v_manual)
grad_v_init_loop = grad_v                    # dL/dV[-1]
print("CHECK ok: LIF_backward equals the three backward equations, step by step")

# %% [markdown]
# ## The same in one call each
#
# The multi-step functions do both loops inside the kernel: `LIF_hard_reset_fptt_with_grad`
# returns the spikes of all steps, the last potential and the two local derivatives as `[T, N]`
# tensors; `LIF_bptt` runs the backward loop from $t = T-1$ down to $0$.

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
# ## Against torch.autograd
#
# Finally an independent check. `spikecore.reference.fptt_autograd` builds the same forward pass
# from differentiable PyTorch operations, with a step function whose backward is the surrogate,
# and lets autograd derive every gradient. We also write a forward pass of our own in plain
# PyTorch: the spike is `step + (g - g.detach())`, whose value is exactly the step (the bracket
# is zero) and whose gradient is $g'$, because `step` and `g.detach()` carry no gradient.

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
# The neuron layer `MultiStepLIFNode` takes a faster route to the same numbers: its forward pass
# keeps one `[T, N]` tensor, $H$ (or, for a small layer on the CPU, the input $X$, from which the
# backward pass first recomputes $H$), and its backward pass recomputes $S$ and both local
# derivatives from $H$. Its gradients must match too.

# %%
lif = spikecore.MultiStepLIFNode(tau=tau, v_threshold=v_th, v_reset=v_reset,
                                 surrogate_function="ATan", alpha=alpha)
x = x_seq.clone().requires_grad_()
lif.v = v_init.clone().requires_grad_()     # start from V[-1] instead of rest
v0 = lif.v
loss = (w * lif(x)).sum() + (u * lif.v).sum()
loss.backward()
torch.testing.assert_close(x.grad, grad_x_seq)
torch.testing.assert_close(v0.grad, grad_v_init)
print("CHECK ok: MultiStepLIFNode's backward equals LIF_bptt")

# %% [markdown]
# ## Every reset variant
#
# The same comparison for soft reset (`v_reset=None`), for `detach_reset=True` (the reset is
# left out of the backward pass, so $\partial V_t / \partial H_t$ loses its surrogate term) and
# for `detach_input=True`, through `LIF_hard_reset_fptt_with_grad`,
# `LIF_soft_reset_fptt_with_grad` and `LIF_bptt`. `LIF_bptt` must be given the same
# `detach_input` as the forward pass, because $\partial H_t / \partial X_t$ depends on it.

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
# ## How far back does the gradient reach?
#
# Put the whole loss on the spikes of the last step, $L = \sum_n S_{T-1,n}$, and look at
# $|\partial L / \partial X_t|$ for earlier steps. Each step back multiplies the gradient by
# $\frac{\partial V_t}{\partial H_t}\left(1 - \frac{1}{\tau}\right)$, so a strong leak (small
# $\tau$) forgets quickly, while a slow leak carries the gradient over many steps.
#
# The calls below pass `detach_reset=True` (the sixth argument), as the networks of the next
# tutorials do. With a hard reset $\partial V_t / \partial H_t$ is then $1 - S_t$: the factor is
# $1 - 1/\tau$ at every step without a spike and 0 at a spike, so a neuron's gradient stops at
# its last spike before $T-1$. The inputs here are mostly below the threshold and spikes are rare
# (about one per neuron in 40 steps at $\tau = 1.5$, none at $\tau = 16$), so in this plot the
# leak does most of the forgetting.

# %%
T_long = 20 if FAST else 40
x_long = 0.6 + 0.3 * torch.randn(T_long, 256, **f64)
fig, ax = plt.subplots(figsize=(7, 4))
for tau_k in (1.5, 2.0, 4.0, 16.0):
    _, _, ds, dv = neuron.LIF_hard_reset_fptt_with_grad(
        x_long, torch.zeros(256, **f64), v_th, v_reset, alpha, True, 0, 1 / tau_k, False)
    grad_out = torch.zeros(T_long, 256, **f64)
    grad_out[-1] = 1.0                                   # dL/dS: only the last step counts
    gx, _ = neuron.LIF_bptt(grad_out, torch.zeros(256, **f64), ds, dv, 1 / tau_k, False)
    ax.semilogy(range(T_long), gx.abs().mean(1).clamp(min=1e-20), "o-", ms=3,
                label=f"tau = {tau_k}")
ax.set(xlabel="time step t", ylabel="mean |dL/dX[t]|",
       title="gradient of the last step's spikes, back in time")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "reach")

# %% [markdown]
# A picture of the gradients we checked above: $\partial L / \partial X_t$ of each neuron and
# step, from `LIF_bptt`.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
im = ax.imshow(grad_x_seq.T.numpy(), aspect="auto", cmap="coolwarm")
ax.set(xlabel="time step t", ylabel="neuron", title="dL/dX from LIF_bptt")
fig.colorbar(im)
show(fig, "grad_x")

# %% [markdown]
# ## Summary
#
# - BPTT for a spiking layer is a loop from the last step to the first that carries one number
#   per neuron, $\partial L / \partial V_t$.
# - Each step needs only two local derivatives, $\partial S_t / \partial H_t$ (the surrogate)
#   and $\partial V_t / \partial H_t$ (from the reset), plus the constants
#   $\partial H_t / \partial X_t$ and $\partial H_t / \partial V_{t-1}$ of the charge.
# - spikecore's teaching functions, its fused layer and torch.autograd all give the same
#   gradients.

# %%
print("CHECK ok: tutorial 03 finished")
