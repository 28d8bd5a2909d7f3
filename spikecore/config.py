"""The scalar parameters of a neuron, validated once and passed to every backend.

:class:`NeuronConfig` gathers what the kernels need besides tensors: the neuron model and its
charge, threshold, reset, surrogate and reset detaching. Building one checks every value and
raises an exception that names the offending argument.
"""
import dataclasses
import math
import numbers
from dataclasses import dataclass
from functools import cached_property
from typing import Optional

from . import surrogate as _surrogate

# Charge modes; the values match ``spikecore::ChargeMode`` in include/spikecore_math.h.
CHARGE_IF = 0
CHARGE_LIF = 1
CHARGE_LIF_DETACH_INPUT = 2

NEURONS = ("IF", "LIF")

#: the scalar arguments every compiled kernel takes, in their order (``NeuronConfig`` fields
#: and properties); pyx/cpu_kernels.pyx and cuda/cuda_kernels.pyx declare them so
KERNEL_ARG_NAMES = ("charge_mode", "hard_reset", "detach_reset", "surrogate", "v_threshold",
                    "v_rest", "reciprocal_tau", "alpha")
_KERNEL_K = KERNEL_ARG_NAMES.index("reciprocal_tau")
_FLOAT32_MAX = 3.4028234663852886e38


def _check_real(name, value, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):   # numpy scalars too
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


#: how errors name a learnable k = 1/τ (a ParametricLIF node's), which can reach 0 only by
#: underflow
_LEARNED_K = ("reciprocal_tau (k = sigmoid(w) of a ParametricLIF node, which underflows to 0 "
              "once w is below about -100 in float32)")


def check_reciprocal_tau(value) -> float:
    """``value`` as a float 1/τ, or an error if it is not a finite number > 0 (what a learnable
    time constant is checked with at every call)."""
    return _check_real(_LEARNED_K, value, positive=True)


def check_tau(name, value, above=0.0) -> float:
    """``value`` as a float τ, or an error naming ``name`` unless it is a finite number greater
    than ``above`` (a node checks its τ when built and again whenever it was changed)."""
    value = _check_real(name, value)
    if not value > above:
        raise ValueError(f"{name} must be a finite number > {above:g}, got {value}")
    return value


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


@dataclass(frozen=True)
class NeuronConfig:
    """Validated scalar parameters of one IF or LIF neuron layer.

    Attributes mirror the API's argument names. ``v_reset=None`` means soft reset.
    ``reciprocal_tau`` is 1/τ (unused by IF); ``surrogate`` is the API index.
    """

    neuron: str
    v_threshold: float
    v_reset: Optional[float]
    reciprocal_tau: float = 1.0
    detach_input: bool = False
    alpha: float = 2.0
    surrogate: int = 0
    detach_reset: bool = False

    @classmethod
    def build(cls, neuron, v_threshold, v_reset, reciprocal_tau=None, detach_input=False,
              alpha=2.0, surrogate=0, detach_reset=False):
        """Check every argument and return a config; the error names the bad argument."""
        if neuron not in NEURONS:
            raise ValueError(f"neuron must be one of {NEURONS}, got {neuron!r}")
        v_threshold = _check_real("v_threshold", v_threshold)
        if v_reset is not None:
            v_reset = _check_real("v_reset", v_reset)
        if neuron == "LIF":
            if reciprocal_tau is None:
                raise TypeError("the LIF neuron needs reciprocal_tau (1/tau)")
            reciprocal_tau = _check_real("reciprocal_tau", reciprocal_tau, positive=True)
            detach_input = _check_bool("detach_input", detach_input)
        else:
            reciprocal_tau, detach_input = 1.0, False
        alpha = _check_real("alpha", alpha, positive=True)
        return cls(neuron, v_threshold, v_reset, reciprocal_tau, detach_input, alpha,
                   _surrogate.resolve(surrogate), _check_bool("detach_reset", detach_reset))

    def with_reciprocal_tau(self, reciprocal_tau: float) -> "NeuronConfig":
        """This LIF config with another 1/τ, checked with :func:`check_reciprocal_tau`: the value
        a learnable time constant has at this call."""
        self.check_learnable_tau()
        return dataclasses.replace(self, reciprocal_tau=check_reciprocal_tau(reciprocal_tau))

    def check_learnable_tau(self):
        """Raise unless this config can take a learnable 1/τ: only the LIF charge has one."""
        if self.neuron != "LIF":
            raise ValueError(f"a learnable time constant needs a LIF neuron, got {self.neuron}")

    @cached_property
    def outside_float32(self) -> Optional[str]:
        """``'name=value'`` for the first parameter too large for float32, in which float32 and
        16-bit inputs are computed (it would become inf there), else ``None``."""
        for name in ("v_threshold", "v_reset", "reciprocal_tau", "alpha"):
            value = getattr(self, name)
            if value is not None and abs(value) > _FLOAT32_MAX:
                return f"{name}={value}"
        return None

    @cached_property
    def kernel_args(self) -> tuple:
        """The scalar arguments every compiled kernel takes, named in order by
        :data:`KERNEL_ARG_NAMES`. Computed once per config (a config is immutable)."""
        return tuple(getattr(self, name) for name in KERNEL_ARG_NAMES)

    def kernel_args_with_k(self, reciprocal_tau: float) -> tuple:
        """:attr:`kernel_args` with 1/τ replaced by ``reciprocal_tau`` (a learnable time
        constant's value at this call), without building a config."""
        args = self.kernel_args
        return args[:_KERNEL_K] + (reciprocal_tau,) + args[_KERNEL_K + 1:]

    @property
    def hard_reset(self) -> bool:
        return self.v_reset is not None

    @property
    def charge_mode(self) -> int:
        if self.neuron == "IF":
            return CHARGE_IF
        return CHARGE_LIF_DETACH_INPUT if self.detach_input else CHARGE_LIF

    @property
    def v_rest(self) -> float:
        """The V_r that enters the charge, which is v_reset, or 0 under soft reset."""
        return self.v_reset if self.v_reset is not None else 0.0

    @property
    def dh_dx(self) -> float:
        """∂H/∂X, which is 1/τ for LIF with decayed input, else 1."""
        return self.reciprocal_tau if self.charge_mode == CHARGE_LIF else 1.0

    @property
    def dh_dv(self) -> float:
        """∂H/∂V[t-1], which is 1 for IF and 1 - 1/τ for LIF."""
        return 1.0 if self.neuron == "IF" else 1.0 - self.reciprocal_tau
