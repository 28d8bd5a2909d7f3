"""Neuron layers (``torch.nn.Module``) that keep the membrane potential between calls.

Single-step nodes (:class:`IFNode`, :class:`LIFNode`) take one time step ``[*]`` per call;
multi-step nodes (:class:`MultiStepIFNode`, :class:`MultiStepLIFNode`) take a whole time-major
sequence ``[T, *]``. All return spikes of the input's shape and dtype and leave the potential
after the last step in ``self.v``.

``self.v`` starts as the float ``v_reset`` (0.0 under soft reset, ``v_reset=None``); the first
call broadcasts it to the input's shape, and :meth:`BaseNode.reset` puts it back. Call
``reset()`` between independent samples.

When a gradient is needed (grad mode on and the input or ``v`` requires grad) a node runs
:class:`spikecore.autograd.NeuronFunction`, which saves only H; otherwise (``torch.no_grad()``,
inference) it runs the forward-only kernel, which saves nothing.
"""
import math

import torch
from torch import nn

from . import dispatch
from . import surrogate as _surrogate
from .autograd import NeuronFunction
from .config import NeuronConfig

__all__ = ["BaseNode", "IFNode", "MultiStepIFNode", "LIFNode", "MultiStepLIFNode"]


class BaseNode(nn.Module):
    """Common state and parameters of spiking neuron layers.

    Args:
        v_threshold: firing threshold θ.
        v_reset: potential after a spike (hard reset); ``None`` selects soft reset V ← H - θ·S.
        surrogate_function: surrogate name (``'ATan'``, ``'Sigmoid'``, ``'PiecewiseQuadratic'``,
            ``'SoftSign'``, ``'Erf'``, ``'SuperSpike'``, ``'PiecewiseExp'``) or index.
        alpha: sharpness α > 0 of the surrogate.
        detach_reset: cut the reset out of the backward graph (dV/dH without the spike path).
        backend: ``None`` (by device), ``'cpu'``, ``'cuda'`` or ``'reference'``.
    """

    neuron = "IF"
    multi_step = False
    #: attributes that make up the kernels' NeuronConfig (cached until one of them changes)
    _config_attrs = ("v_threshold", "v_reset", "surrogate_function", "alpha", "detach_reset")

    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate_function="ATan", alpha=2.0,
                 detach_reset=False, *, backend=None):
        super().__init__()
        self.v_threshold = v_threshold
        self.v_reset = v_reset
        self.surrogate_function = _surrogate.NAMES[_surrogate.resolve(surrogate_function)]
        self.alpha = alpha
        self.detach_reset = detach_reset
        self.backend = backend
        self._config_cache = (None, None)
        self.config()  # validate now, not at the first forward
        self.reset()

    @property
    def grad_surrogate_function_index(self) -> int:
        """The API index of ``surrogate_function``."""
        return _surrogate.resolve(self.surrogate_function)

    def _build_config(self) -> NeuronConfig:
        return NeuronConfig.build(self.neuron, self.v_threshold, self.v_reset, None, False,
                                  self.alpha, self.surrogate_function, self.detach_reset)

    def config(self) -> NeuronConfig:
        """The validated scalar parameters the kernels receive (rebuilt after any change)."""
        key = tuple(getattr(self, name) for name in self._config_attrs)
        cached_key, cfg = self._config_cache
        if key != cached_key:
            cfg = self._build_config()
            self._config_cache = (key, cfg)
        return cfg

    def reset(self):
        """Forget the state: ``v`` becomes ``v_reset`` again (0.0 under soft reset)."""
        self.v = 0.0 if self.v_reset is None else self.v_reset

    def extra_repr(self):
        return (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"surrogate_function={self.surrogate_function!r}, alpha={self.alpha}, "
                f"detach_reset={self.detach_reset}, backend={self.backend!r}")

    def _run(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor input, "
                            f"got {type(x).__name__}")
        v = self.v
        if not isinstance(v, torch.Tensor):
            if self.multi_step and x.dim() == 0:
                raise ValueError(f"{type(self).__name__} expects a [T, *] input, got a 0-d tensor")
            v = torch.full(x.shape[1:] if self.multi_step else x.shape, float(v),
                           dtype=x.dtype, device=x.device)
        cfg = self.config()
        if torch.is_grad_enabled() and (x.requires_grad or v.requires_grad):
            spike, self.v = NeuronFunction.apply(x, v, cfg, self.multi_step, self.backend)
        else:
            res = dispatch.forward(x, v, cfg, multi_step=self.multi_step, backend=self.backend,
                                   names=("dv_seq" if self.multi_step else "dv", "v"))
            spike, self.v = res.spike, res.v_next
        return spike

    def forward(self, dv: torch.Tensor) -> torch.Tensor:
        """One step: ``dv`` ``[*]`` is the input current X[t]; returns S[t] and updates ``v``."""
        return self._run(dv)


class IFNode(BaseNode):
    """Integrate-and-fire neuron, one step per call: H = V + X."""


class MultiStepIFNode(IFNode):
    """Integrate-and-fire neuron over a whole sequence ``[T, *]`` per call."""

    multi_step = True

    def forward(self, dv_seq: torch.Tensor) -> torch.Tensor:
        """``dv_seq`` ``[T, *]``; returns spikes ``[T, *]``, ``v`` becomes V[T-1]."""
        return self._run(dv_seq)


class LIFNode(BaseNode):
    """Leaky integrate-and-fire neuron, one step per call.

    H = V + (X - (V - V_reset))/τ, or with ``detach_input=True`` H = V + X - (V - V_reset)/τ
    (the input is added without decay). Under soft reset V_reset is 0 in the charge.

    Args:
        tau: membrane time constant τ > 0.
        detach_input: add the input undecayed (see above).
        Others: as :class:`BaseNode`.
    """

    neuron = "LIF"
    _config_attrs = BaseNode._config_attrs + ("tau", "detach_input")

    def __init__(self, tau=100.0, detach_input=False, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="ATan", alpha=2.0, detach_reset=False, *, backend=None):
        if isinstance(tau, bool) or not isinstance(tau, (int, float)):
            raise TypeError(f"tau must be a real number, got {type(tau).__name__}")
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a finite number > 0, got {tau}")
        self.tau = tau
        self.detach_input = detach_input
        super().__init__(v_threshold, v_reset, surrogate_function, alpha, detach_reset,
                         backend=backend)

    def _build_config(self) -> NeuronConfig:
        return NeuronConfig.build("LIF", self.v_threshold, self.v_reset, 1.0 / self.tau,
                                  self.detach_input, self.alpha, self.surrogate_function,
                                  self.detach_reset)

    def extra_repr(self):
        return f"tau={self.tau}, detach_input={self.detach_input}, " + super().extra_repr()


class MultiStepLIFNode(LIFNode):
    """Leaky integrate-and-fire neuron over a whole sequence ``[T, *]`` per call."""

    multi_step = True

    def forward(self, dv_seq: torch.Tensor) -> torch.Tensor:
        """``dv_seq`` ``[T, *]``; returns spikes ``[T, *]``, ``v`` becomes V[T-1]."""
        return self._run(dv_seq)
