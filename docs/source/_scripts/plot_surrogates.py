"""Draw the figures of the spikecore docs into a folder (default: ../_generated).

Every curve comes from the library itself: the surrogate primitives g and derivatives g' from
``spikecore.surrogate`` and the neuron traces from ``spikecore.reference``, so a figure cannot
disagree with the code it illustrates. Text in the figures is English or math only, so the same
PNG serves both language trees. Run by ``docs/source/conf.py`` at the start of every build.

    python docs/source/_scripts/plot_surrogates.py [OUT_DIR]
"""
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from spikecore import reference, surrogate  # noqa: E402
from spikecore.config import NeuronConfig  # noqa: E402

ALPHAS = (1.0, 2.0, 4.0)
DPI = 110


def _style(ax, title):
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="0.8", lw=0.8, zorder=0)
    ax.axvline(0, color="0.8", lw=0.8, zorder=0)
    ax.set_xlabel(r"$x = H - V_{th}$")
    ax.grid(alpha=0.25)


def plot_one(sg, out):
    """Primitive g (with the Heaviside step) and derivative g' of one surrogate."""
    x = torch.linspace(-2.5, 2.5, 1001, dtype=torch.float64)
    fig, (ax_g, ax_d) = plt.subplots(1, 2, figsize=(8.0, 3.0), constrained_layout=True)
    ax_g.plot(x, (x >= 0).double(), color="k", ls="--", lw=1, label=r"$\Theta(x)$")
    for alpha in ALPHAS:
        ax_g.plot(x, sg.primitive(x, alpha), label=rf"$\alpha={alpha:g}$")
        ax_d.plot(x, sg.derivative(x, alpha), label=rf"$\alpha={alpha:g}$")
    _style(ax_g, rf"{sg.name}: primitive $g(x)$")
    _style(ax_d, rf"{sg.name}: derivative $g'(x)$")
    ax_g.legend(fontsize=8, loc="upper left")
    ax_d.legend(fontsize=8, loc="upper right")
    fig.savefig(os.path.join(out, f"surrogate_{sg.name.lower()}.png"), dpi=DPI)
    plt.close(fig)


def plot_all(out, alpha=2.0):
    """The seven derivatives side by side at the default alpha."""
    x = torch.linspace(-2.5, 2.5, 1001, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(7.0, 3.4), constrained_layout=True)
    for sg in surrogate.SURROGATES:
        ax.plot(x, sg.derivative(x, alpha), label=f"{sg.index} {sg.name}")
    _style(ax, rf"all surrogate derivatives $g'(x)$, $\alpha={alpha:g}$")
    ax.legend(fontsize=8, ncol=2)
    fig.savefig(os.path.join(out, "surrogates_all.png"), dpi=DPI)
    plt.close(fig)


def plot_neuron(out):
    """One LIF neuron driven by the same input, with hard and with soft reset."""
    T = 40
    gen = torch.Generator().manual_seed(0)
    x = (1.1 + 0.7 * torch.randn(T, 1, generator=gen, dtype=torch.float64)).clamp(min=0)
    fig, axes = plt.subplots(2, 1, figsize=(7.5, 4.4), sharex=True, constrained_layout=True)
    for ax, (title, v_reset) in zip(axes, (("hard reset, $V_r = 0$", 0.0),
                                           ("soft reset ($V_r$ = None)", None))):
        cfg = NeuronConfig.build("LIF", 1.0, v_reset, reciprocal_tau=0.5)
        v0 = torch.zeros(1, dtype=torch.float64)
        spike, _, h, v = reference.fptt(x, v0, cfg)
        t = torch.arange(T)
        ax.plot(t, h[:, 0], color="tab:orange", marker=".", ms=3, lw=1, label=r"$H_t$ (charged)")
        ax.plot(t, v[:, 0], color="tab:blue", marker=".", ms=3, lw=1, label=r"$V_t$ (after reset)")
        ax.axhline(1.0, color="k", ls="--", lw=0.8, label=r"$V_{th}$")
        fired = spike[:, 0] > 0
        ax.plot(t[fired], h[fired, 0], "v", color="tab:red", ms=5, label=r"$S_t = 1$")
        ax.set_title(f"LIF, $\\tau = 2$, {title}", fontsize=10)
        ax.grid(alpha=0.25)
        ax.set_ylim(-0.15, 2.3)
        ax.legend(fontsize=7, ncol=4, loc="upper left")
    axes[-1].set_xlabel("time step $t$")
    fig.savefig(os.path.join(out, "neuron_trace.png"), dpi=DPI)
    plt.close(fig)


def main(out):
    os.makedirs(out, exist_ok=True)
    for sg in surrogate.SURROGATES:
        plot_one(sg, out)
    plot_all(out)
    plot_neuron(out)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "_generated"))
