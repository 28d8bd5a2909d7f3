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
# # 4. A first spiking network
#
# Time to classify something. We train a two-layer spiking network on scikit-learn's 8x8
# handwritten digits (1797 images, shipped with scikit-learn, no download) with a training loop
# of about fifteen lines, look at its accuracy and at the spikes inside it, and then run the same
# job through spikecore's ready-made trainer `spikecore.train.fit`.

# %%
import os
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

import spikecore
from spikecore.data import direct_encode, load_dataset, poisson_encode

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"04_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


torch.manual_seed(0)

# %% [markdown]
# ## The data
#
# `load_dataset("digits")` returns images as float tensors `[N, 1, 8, 8]` scaled to $[0, 1]$ and
# labels `[N]`, already split into a training and a test set (a fixed, stratified split).

# %%
digits = load_dataset("digits")
print("train", tuple(digits.train_x.shape), "test", tuple(digits.test_x.shape))
fig, axes = plt.subplots(1, 10, figsize=(10, 1.4))
for ax, img, label in zip(axes, digits.train_x, digits.train_y):
    ax.imshow(img[0].numpy(), cmap="gray_r")
    ax.set_title(int(label))
    ax.axis("off")
show(fig, "samples")

# %% [markdown]
# ## From images to input over time
#
# A spiking network runs for `T` time steps, so each image has to become a sequence
# `[T, batch, ...]` (time first, as all spikecore layers expect). Two common encodings:
#
# - **direct**: the image itself is the input current at every step (`direct_encode`);
# - **Poisson**: at every step each pixel spikes with a probability equal to its intensity
#   (`poisson_encode`), so the input itself is made of spikes.
#
# We use the direct encoding, which learns faster on such small images.

# %%
T = 4 if FAST else 8
img = digits.train_x[:1]                                   # [1, 1, 8, 8]
print("direct:", tuple(direct_encode(img, T).shape))
poisson = poisson_encode(img, T, torch.Generator().manual_seed(0))
fig, axes = plt.subplots(1, T + 1, figsize=(1.3 * (T + 1), 1.6))
axes[0].imshow(img[0, 0].numpy(), cmap="gray_r")
axes[0].set_title("image")
for t in range(T):
    axes[t + 1].imshow(poisson[t, 0, 0].numpy(), cmap="gray_r")
    axes[t + 1].set_title(f"t = {t}")
for ax in axes:
    ax.axis("off")
show(fig, "poisson")

# %% [markdown]
# ## The network
#
# Linear layers and spiking layers alternate. `nn.Linear` acts on the last dimension, so it
# works on `[T, batch, features]` directly, and `nn.Flatten(2)` turns `[T, batch, 1, 8, 8]`
# into `[T, batch, 64]`. `MultiStepLIFNode` runs the whole sequence through the fused kernel.
# `detach_reset=True` leaves the reset out of the backward pass, a common choice that makes
# training a little more stable.
#
# The prediction is read from the output spikes: the firing rate of each of the ten output
# neurons, averaged over time, scaled by 5 and fed to the cross-entropy loss.
#
# With direct encoding every step sees the same image, so the first `nn.Linear` computes the
# same `[batch, hidden]` result `T` times. Wrapped as `spikecore.models.SeqToANN(nn.Linear(64,
# hidden))` it notices an input that is the same at every step (the view `direct_encode`
# returns) and runs once per sample; the models of `spikecore train` are built that way. Here
# the plain layer keeps the network easy to read.

# %%
hidden = 64 if FAST else 128
epochs = 3 if FAST else 12
net = nn.Sequential(
    nn.Flatten(2),
    nn.Linear(64, hidden),
    spikecore.MultiStepLIFNode(tau=2.0, detach_reset=True),
    nn.Linear(hidden, 10),
    spikecore.MultiStepLIFNode(tau=2.0, detach_reset=True),
)
print(net)

# %% [markdown]
# ## Training
#
# Two things distinguish this loop from an ordinary PyTorch loop:
#
# - `spikecore.reset_net(net)` before every batch: the neuron layers keep their potential
#   between calls, and a new batch must start from rest;
# - the output is a sequence, and `.mean(0)` averages it over time into firing rates.
#
# Evaluation runs under `torch.no_grad()`; the neuron layers then use a forward-only kernel that
# stores nothing for the backward pass.

# %%
def evaluate(net, x, y):
    with torch.no_grad():
        spikecore.reset_net(net)
        rate = net(direct_encode(x, T)).mean(0)
    return (rate.argmax(1) == y).float().mean().item()


opt = torch.optim.Adam(net.parameters(), lr=1e-2)
history = []
start = time.perf_counter()
for epoch in range(1, epochs + 1):
    order = torch.randperm(len(digits.train_y))
    losses = []
    for i in range(0, len(order), 64):
        batch = order[i:i + 64]
        x_seq = direct_encode(digits.train_x[batch], T)          # [T, B, 1, 8, 8]
        spikecore.reset_net(net)
        rate = net(x_seq).mean(0)                                # [B, 10] firing rates
        loss = F.cross_entropy(5.0 * rate, digits.train_y[batch])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    acc = evaluate(net, digits.test_x, digits.test_y)
    history.append((epoch, sum(losses) / len(losses), acc))
    print(f"epoch {epoch:2d}  train loss {history[-1][1]:.3f}  test accuracy {acc:.1%}")
print(f"{epochs} epochs in {time.perf_counter() - start:.1f} s")

# %%
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
ax1.plot([h[0] for h in history], [h[1] for h in history], "o-")
ax1.set(xlabel="epoch", ylabel="cross-entropy", title="training loss")
ax2.plot([h[0] for h in history], [100 * h[2] for h in history], "o-")
ax2.axhline(10, color="gray", ls="--", lw=1, label="chance")
ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="test accuracy")
ax2.legend()
for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
fig.tight_layout()
show(fig, "curves")

# %% [markdown]
# ## Inside the network: spike rasters
#
# Forward hooks record what each spiking layer emits. For one test image we draw a raster of the
# hidden layer and of the output layer: one row per neuron, one column per time step, black where
# the neuron fired. The predicted class is the output neuron that fires the most; the title of
# the bar chart on the right compares it with the label.

# %%
recorded = {}
hooks = [module.register_forward_hook(
             lambda m, inp, out, name=name: recorded.__setitem__(name, out.detach()))
         for name, module in net.named_modules() if isinstance(module, spikecore.BaseNode)]
sample = 0
with torch.no_grad():
    spikecore.reset_net(net)
    net(direct_encode(digits.test_x[sample:sample + 1], T))
for h in hooks:
    h.remove()
hidden_spikes, output_spikes = recorded["2"][:, 0], recorded["4"][:, 0]   # [T, neurons]

fig, axes = plt.subplots(1, 3, figsize=(13, 3.5), gridspec_kw={"width_ratios": [3, 2, 2]})
for ax, spikes, title in [(axes[0], hidden_spikes, "hidden layer"),
                          (axes[1], output_spikes, "output layer")]:
    ax.imshow(spikes.T.numpy(), aspect="auto", cmap="gray_r", vmin=0, vmax=1,
              interpolation="nearest", origin="lower")
    ax.set(xlabel="time step", ylabel="neuron", title=title)
axes[1].set_yticks(range(10))
axes[2].bar(range(10), output_spikes.mean(0).numpy())
axes[2].set(xticks=range(10), xlabel="class", ylabel="firing rate",
            title=f"label {int(digits.test_y[sample])}, "
                  f"predicted {int(output_spikes.mean(0).argmax())}")
fig.tight_layout()
show(fig, "raster")
print("hidden firing rate:", round(hidden_spikes.mean().item(), 3),
      "| output firing rate:", round(output_spikes.mean().item(), 3))

# %% [markdown]
# Which digits get confused with which? A confusion matrix over the test set:

# %%
with torch.no_grad():
    spikecore.reset_net(net)
    predicted = net(direct_encode(digits.test_x, T)).mean(0).argmax(1)
confusion = torch.zeros(10, 10, dtype=torch.long)
confusion.index_put_((digits.test_y, predicted), torch.ones_like(predicted), accumulate=True)
fig, ax = plt.subplots(figsize=(4.5, 4))
ax.imshow(confusion.numpy(), cmap="Blues")
for i in range(10):
    for j in range(10):
        if confusion[i, j]:
            ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=7)
ax.set(xlabel="predicted", ylabel="true", xticks=range(10), yticks=range(10),
       title="confusion matrix")
show(fig, "confusion")

test_acc = history[-1][2]
assert test_acc >= (0.6 if FAST else 0.9), test_acc
print(f"CHECK ok: hand-written loop reaches test accuracy {test_acc:.1%} (chance is 10%)")

# %% [markdown]
# ## Less memory: checkpointing a stateful network
#
# For long sequences the activations autograd keeps can fill the memory. Activation
# checkpointing trades time for memory: a region's activations are dropped after the forward
# pass, and the region runs a second time during the backward pass to get them back. That
# second run is where spiking layers differ from ordinary ones: each call reads the potential
# $V$ a layer kept and writes the next one, so by the backward pass $V$ is what the first run
# left, and a plain recomputation would start from the wrong potential. The gradients would be
# wrong without any error, so spikecore's layers refuse to run during a backward pass, and
# `spikecore.checkpoint.checkpoint` restores their state for the second run. Below, the whole
# network is one checkpointed region: its gradients equal those of the plain run bit for bit.

# %%
from torch.utils.checkpoint import checkpoint as torch_checkpoint
from spikecore.checkpoint import checkpoint

x_seq, target = direct_encode(digits.train_x[:64], T), digits.train_y[:64]


def weight_grads(run):
    # the gradients of the weights for one batch, the forward run by `run`
    net.zero_grad()
    spikecore.reset_net(net)
    F.cross_entropy(5.0 * run(x_seq).mean(0), target).backward()
    return [p.grad.clone() for p in net.parameters()]


plain = weight_grads(net)
checked = weight_grads(lambda x: checkpoint(net, x))
assert all(torch.equal(a, b) for a, b in zip(plain, checked))
print("CHECK ok: spikecore.checkpoint gives the gradients of the plain run, bit for bit")
try:
    weight_grads(lambda x: torch_checkpoint(net, x, use_reentrant=False))
    refused = None
except RuntimeError as err:
    refused = str(err).split(":")[0]
assert refused is not None
print("torch.utils.checkpoint alone:", refused)

# %% [markdown]
# ## The same with `spikecore.train.fit`
#
# `fit` is the loop behind the `spikecore train` command: it builds a model (`"mlp"` is the
# network above, `"conv"` a small convolutional one), encodes the data, trains with Adam and a
# cosine step-size schedule, and returns the trained model with its history. With `out_dir` it
# also writes a checkpoint, metrics and plots. The call below (outside the fast mode) trains the
# same way as `spikecore train --epochs 10 --batch-size 64 -T 8 --hidden 128`. The first two
# options are needed because the command defaults to 15 epochs with batches of 32; `-T 8` and
# `--hidden 128` only spell out its defaults. The command also writes its files, into
# `runs/<timestamp>` unless `--out` is given.
# The same call works unchanged under `torchrun`, see the distributed tutorial.

# %%
from spikecore.train import fit

result = fit("mlp", "digits", epochs=2 if FAST else 10, batch_size=64, timesteps=T, hidden=hidden,
             quiet=True)
for row in result.history:
    print(f"epoch {row['epoch']:2d}  train loss {row['train_loss']:.3f}  "
          f"test accuracy {row['test_acc']:.1%}")
assert result.test_accuracy >= (0.6 if FAST else 0.9), result.test_accuracy
print(f"CHECK ok: spikecore.train.fit reaches test accuracy {result.test_accuracy:.1%}")

# %% [markdown]
# ## Summary
#
# - A spiking classifier is an ordinary `nn.Sequential` of linear and spiking layers that maps
#   `[T, batch, ...]` to output spikes; the firing rates are the class scores.
# - Reset the network before every batch.
# - A few epochs on two CPU cores take seconds and reach well above 90% on the digits.
# - To save memory on long sequences, checkpoint with `spikecore.checkpoint.checkpoint`, which
#   restores the layers' state for the recomputation.
#
# How fast are the spiking layers themselves, and how fast could they be? The next tutorial
# measures them.

# %%
print("CHECK ok: tutorial 04 finished")
