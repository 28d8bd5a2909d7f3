"""Surrogate gradients: the smooth stand-ins for the derivative of the Heaviside step.

A spiking neuron fires ``S = Θ(H - V_threshold)``. Θ has derivative zero almost everywhere, so
backpropagation through it would teach nothing. Surrogate-gradient training keeps Θ in the
forward pass and uses the derivative ``g'(x; α)`` of a smooth *primitive* ``g`` (a sigmoid-like
function that tends to Θ as α grows; SuperSpike's is that shape scaled by 2/α) in the backward
pass, with ``x = H - V_threshold``.

This module is the Python side of that idea: each surrogate's primitive and derivative as plain
PyTorch functions (for plots, teaching and the reference backend), plus the name/index table the
kernels use. The compiled kernels evaluate the same derivatives in ``include/spikecore_math.h``.

The index order is part of the public API (``grad_surrogate_function_index``): 0 and 1 are the
original ``ATan`` and ``Sigmoid``; the rest extend them.
"""
import math
import numbers
from dataclasses import dataclass
from typing import Callable, Union

import torch

__all__ = [
    "Surrogate", "SURROGATES", "NAMES", "resolve", "get",
    "ATan", "Sigmoid", "PiecewiseQuadratic", "SoftSign", "Erf", "SuperSpike", "PiecewiseExp",
]


@dataclass(frozen=True)
class Surrogate:
    """One surrogate: its API index and name, its primitive ``g`` and derivative ``g'``.

    Both functions take a tensor ``x = H - V_threshold`` and the sharpness ``alpha > 0``.
    """

    index: int
    name: str
    primitive: Callable[[torch.Tensor, float], torch.Tensor]
    derivative: Callable[[torch.Tensor, float], torch.Tensor]

    def __call__(self, x: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
        """The derivative g'(x; alpha), which is what backpropagation uses."""
        return self.derivative(x, alpha)


# --- 0: arctangent ---------------------------------------------------------------------------
def _atan_g(x, alpha):
    return torch.atan((math.pi / 2) * alpha * x) / math.pi + 0.5


def _atan_dg(x, alpha):
    z = (math.pi / 2) * alpha * x
    return (alpha / 2) / (1 + z * z)


# --- 1: logistic sigmoid ---------------------------------------------------------------------
def _sigmoid_g(x, alpha):
    return torch.sigmoid(alpha * x)


def _sigmoid_dg(x, alpha):
    sig = torch.sigmoid(alpha * x)
    return alpha * sig * (1 - sig)


# --- 2: piecewise quadratic (triangle-shaped derivative) -------------------------------------
def _pwq_g(x, alpha):
    inner = -(alpha * alpha / 2) * x.abs() * x + alpha * x + 0.5
    return torch.where(x > 1 / alpha, torch.ones_like(x),
                       torch.where(x < -1 / alpha, torch.zeros_like(x), inner))


def _pwq_dg(x, alpha):
    return torch.clamp(alpha - alpha * alpha * x.abs(), min=0)


# --- 3: soft sign ----------------------------------------------------------------------------
def _softsign_g(x, alpha):
    return 0.5 * (alpha * x / (1 + alpha * x.abs()) + 1)


def _softsign_dg(x, alpha):
    d = 1 + alpha * x.abs()
    return alpha / (2 * d * d)


# --- 4: Gauss error function -----------------------------------------------------------------
def _erf_g(x, alpha):
    return 0.5 * (1 + torch.erf(alpha * x))


def _erf_dg(x, alpha):
    z = alpha * x
    return (alpha / math.sqrt(math.pi)) * torch.exp(-z * z)


# --- 5: SuperSpike (fast sigmoid) ------------------------------------------------------------
def _superspike_g(x, alpha):
    # The antiderivative of 1/(1+α|x|)² that vanishes at -∞; it rises from 0 to 2/α.
    return x / (1 + alpha * x.abs()) + 1 / alpha


def _superspike_dg(x, alpha):
    d = 1 + alpha * x.abs()
    return 1 / (d * d)


# --- 6: piecewise exponential (Laplace) ------------------------------------------------------
def _pwexp_g(x, alpha):
    e = 0.5 * torch.exp(-alpha * x.abs())
    return torch.where(x < 0, e, 1 - e)


def _pwexp_dg(x, alpha):
    return (alpha / 2) * torch.exp(-alpha * x.abs())


ATan = Surrogate(0, "ATan", _atan_g, _atan_dg)
Sigmoid = Surrogate(1, "Sigmoid", _sigmoid_g, _sigmoid_dg)
PiecewiseQuadratic = Surrogate(2, "PiecewiseQuadratic", _pwq_g, _pwq_dg)
SoftSign = Surrogate(3, "SoftSign", _softsign_g, _softsign_dg)
Erf = Surrogate(4, "Erf", _erf_g, _erf_dg)
SuperSpike = Surrogate(5, "SuperSpike", _superspike_g, _superspike_dg)
PiecewiseExp = Surrogate(6, "PiecewiseExp", _pwexp_g, _pwexp_dg)

#: All surrogates, position == API index.
SURROGATES = (ATan, Sigmoid, PiecewiseQuadratic, SoftSign, Erf, SuperSpike, PiecewiseExp)
#: Their names, position == API index.
NAMES = tuple(s.name for s in SURROGATES)


def resolve(surrogate: Union[str, int, Surrogate]) -> int:
    """Turn a surrogate name (``'ATan'``), index (``0``) or object into its API index.

    Raises:
        ValueError: the name or index is unknown; the message lists the valid ones.
        TypeError: ``surrogate`` is neither a str, an int nor a Surrogate.
    """
    valid = ", ".join(f"{i}={n!r}" for i, n in enumerate(NAMES))
    if isinstance(surrogate, Surrogate):
        return surrogate.index
    if isinstance(surrogate, bool):
        raise TypeError(f"surrogate must be a name or an index ({valid}), got a bool")
    if isinstance(surrogate, str):
        if surrogate in NAMES:
            return NAMES.index(surrogate)
        raise ValueError(f"unknown surrogate function {surrogate!r}; valid names: {valid}")
    if isinstance(surrogate, numbers.Integral):   # numpy integers too
        if 0 <= surrogate < len(SURROGATES):
            return int(surrogate)
        raise ValueError(f"unknown surrogate function index {surrogate}; valid indices: {valid}")
    raise TypeError(f"surrogate must be a name (str) or an index (int) out of {valid}, "
                    f"got {type(surrogate).__name__}")


def get(surrogate: Union[str, int, Surrogate]) -> Surrogate:
    """The :class:`Surrogate` for a name, index or object."""
    return SURROGATES[resolve(surrogate)]
