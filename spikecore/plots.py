"""Figures of a training run (matplotlib, Agg: no display needed).

* ``curves.png``: loss and accuracy per epoch, train and test;
* ``spike_raster.png``: the spikes of one test sample in each spiking layer;
* ``firing_rate.png``: the mean firing rate of each spiking layer over a batch of test samples;
* ``membrane.png``: membrane-potential traces of a few neurons of each spiking layer.

Activity is recorded with forward hooks on the spiking layers; the potentials are rebuilt by
running each layer's recorded input through the reference kernel with H saved.
"""
import copy
import os
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import torch  # noqa: E402

from . import dispatch  # noqa: E402
from .utils import reset_net, spiking_layers  # noqa: E402

__all__ = ["record", "membrane_traces", "plot_curves", "plot_raster", "plot_rates",
           "plot_membrane", "save_all"]

MAX_RASTER_NEURONS = 256


def record(model, x: torch.Tensor) -> Dict[str, dict]:
    """Run ``model`` on ``x`` ``[T, B, ...]``; for each spiking layer return its input and
    output spikes, both ``[T, B, N]`` (N = neurons of the layer)."""
    seen, hooks = {}, []

    def hook(name):
        def fn(module, inputs, output):
            seen[name] = {"module": module,
                          "input": inputs[0].detach().flatten(2).cpu(),
                          "spikes": output.detach().flatten(2).cpu()}
        return fn

    for name, m in spiking_layers(model):
        hooks.append(m.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reset_net(model)
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return seen


def membrane_traces(node, x_seq: torch.Tensor) -> torch.Tensor:
    """The membrane potential of ``node`` driven by ``x_seq`` ``[T, N]`` from rest: ``[T, N]``.

    For spikecore IF/LIF nodes this is H[t], the potential after charging and before the
    fire/reset (it crosses the threshold where the neuron spikes). Other nodes are stepped one
    time step at a time on a copy and give ``v`` after each step."""
    if hasattr(node, "config"):
        cfg, k = node.config(), node._reciprocal_tau_tensor()
        if k is not None:   # a learnable time constant: its value now, not at initialisation
            cfg = cfg.with_reciprocal_tau(float(k.detach()))
        with torch.no_grad():
            return dispatch.forward(x_seq.cpu(), None, cfg, multi_step=True,
                                    backend="reference", save_h=True).h_seq
    step = copy.deepcopy(node).cpu()
    step.reset()
    out = []
    with torch.no_grad():
        for t in range(x_seq.shape[0]):
            step(x_seq[t:t + 1] if getattr(step, "multi_step", True) else x_seq[t])
            out.append(step.v.detach().reshape(-1).clone())
    return torch.stack(out)


def _short(name: str) -> str:
    return f"layer {name}" if name else "layer"


def plot_curves(history: List[dict], path: str):
    ep = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(ep, [h["test_loss"] for h in history], "o-", label="test")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax2.plot(ep, [100 * h["train_acc"] for h in history], "o-", label="train")
    ax2.plot(ep, [100 * h["test_acc"] for h in history], "o-", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax1, ax2):
        ax.legend()
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # whole epochs
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_raster(rec: Dict[str, dict], path: str, label=None):
    fig = Figure(figsize=(7, 2.2 * len(rec) + 0.5))
    axes = fig.subplots(len(rec), 1, squeeze=False)[:, 0]
    for ax, (name, r) in zip(axes, rec.items()):
        s = r["spikes"][:, 0, :MAX_RASTER_NEURONS]          # first sample
        t, n = torch.nonzero(s, as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), marker="|", s=30, color="k")
        ax.set(xlim=(-0.5, s.shape[0] - 0.5), ylim=(-0.5, s.shape[1] - 0.5),
               ylabel="neuron", title=f"{_short(name)} ({r['spikes'].shape[2]} neurons"
               + (f", first {MAX_RASTER_NEURONS}" if r["spikes"].shape[2] > MAX_RASTER_NEURONS
                  else "") + ")")
    axes[-1].set_xlabel("time step")
    if label is not None:
        fig.suptitle(f"spike raster of one test sample (class {label})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_rates(rec: Dict[str, dict], path: str):
    names = [_short(n) for n in rec]
    rates = [r["spikes"].mean().item() for r in rec.values()]
    fig = Figure(figsize=(max(4, 1.5 * len(rec)), 3.2))
    ax = fig.subplots()
    ax.bar(range(len(rates)), rates, color="tab:blue")
    ax.set_xticks(range(len(rates)), names, rotation=20)
    ax.set(ylabel="spikes / neuron / step", title="mean firing rate per layer")
    for i, r in enumerate(rates):
        ax.text(i, r, f"{r:.3f}", ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_membrane(rec: Dict[str, dict], path: str, neurons: int = 4):
    fig = Figure(figsize=(7, 2.2 * len(rec) + 0.5))
    axes = fig.subplots(len(rec), 1, squeeze=False)[:, 0]
    for ax, (name, r) in zip(axes, rec.items()):
        x, s = r["input"][:, 0], r["spikes"][:, 0]           # first sample, [T, N]
        # the neurons that fire on about half of the steps show charge, fire and reset best
        pick = torch.argsort((s.mean(0) - 0.5).abs(), stable=True)[:neurons]
        v = membrane_traces(r["module"], x[:, pick])
        steps = torch.arange(v.shape[0])
        for k, n in enumerate(pick.tolist()):
            line, = ax.plot(steps, v[:, k], "-o", ms=3, label=f"#{n}")
            fired = s[:, n] > 0
            ax.plot(steps[fired], v[fired, k], "x", color=line.get_color(), ms=7)
        thr = getattr(r["module"], "v_threshold", None)
        if isinstance(thr, (int, float)):
            ax.axhline(thr, color="gray", ls="--", lw=1)
        ax.set(ylabel="H", title=f"{_short(name)}: membrane potential before reset (x = spike)")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("time step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def save_all(model, history, ds, cfg, encode, out_dir, device, samples: int = 256):
    """Write the four figures of a run into ``out_dir``; returns their paths."""
    paths = {k: os.path.join(out_dir, f"{k}.png")
             for k in ("curves", "spike_raster", "firing_rate", "membrane")}
    plot_curves(history, paths["curves"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    x = encode(ds.test_x[:samples], cfg["timesteps"], gen).to(device)
    rec = record(model, x)
    if rec:
        plot_raster(rec, paths["spike_raster"], int(ds.test_y[0]))
        plot_rates(rec, paths["firing_rate"])
        plot_membrane(rec, paths["membrane"])
    return [p for p in paths.values() if os.path.exists(p)]
