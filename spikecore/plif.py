"""Parametric LIF: a LIF neuron whose time constant is learned.

The layer learns one scalar w and uses 1/τ = k = sigmoid(w), which keeps τ > 1 whatever w
becomes; w starts at -ln(init_tau - 1) so that τ = init_tau at first. The charge is the LIF's
with k in place of 1/τ, so its derivative with respect to k is (see the ParametricLIF page of
the docs for the derivation)::

    dH[t]/dk = X[t] - (V[t-1] - V_r) = (H[t] - V[t-1]) / k     (decayed input)
    dH[t]/dk = -(V[t-1] - V_r)                                   (detach_input=True)
    dL/dw    = k (1 - k) · Σ_t Σ_i dL/dH[t, i] · dH[t, i]/dk

The fused backward kernels (CPU and CUDA) compute dL/dk in the same pass as BPTT, each neuron
summing its own terms over time, so no two threads ever add into the same place. k = sigmoid(w)
reaches them as a tensor, through :class:`~spikecore.autograd.PlannedParametricNeuronFunction`
(the node's plan) or :class:`~spikecore.autograd.ParametricNeuronFunction` in eager mode and the
custom operator of :mod:`spikecore.ops` under ``torch.compile``, and autograd through the sigmoid
gives dL/dw.
"""
import math

import torch
from torch import nn

from .config import NeuronConfig, check_tau
from .nodes import BaseNode

__all__ = ["ParametricLIFNode", "MultiStepParametricLIFNode"]


class ParametricLIFNode(BaseNode):
    """LIF neuron with a learnable time constant, one step per call.

    Args:
        init_tau: τ at initialisation (> 1); the layer learns w with 1/τ = sigmoid(w).
        detach_input: add the input undecayed, H = V + X - (V - V_reset)/τ.
        Others: as :class:`~spikecore.nodes.BaseNode`.
    """

    neuron = "LIF"
    _config_attrs = BaseNode._config_attrs + ("init_tau", "detach_input")

    def __init__(self, init_tau=2.0, detach_input=False, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="ATan", alpha=2.0, detach_reset=False, *, backend=None):
        self.init_tau = check_tau("init_tau", init_tau, above=1.0)
        self.detach_input = detach_input
        super().__init__(v_threshold, v_reset, surrogate_function, alpha, detach_reset,
                         backend=backend)
        self.w = nn.Parameter(torch.tensor(-math.log(init_tau - 1.0)))

    @property
    def tau(self) -> float:
        """The current time constant 1/sigmoid(w)."""
        return 1.0 / float(torch.sigmoid(self.w.detach()))

    def _build_config(self) -> NeuronConfig:
        # 1/τ here only validates; every call uses sigmoid(w) of that moment
        return NeuronConfig.build("LIF", self.v_threshold, self.v_reset,
                                  1.0 / check_tau("init_tau", self.init_tau, above=1.0),
                                  self.detach_input, self.alpha, self.surrogate_function,
                                  self.detach_reset)

    def _reciprocal_tau_tensor(self):
        # k = sigmoid(w) enters the kernels as a tensor; autograd through the sigmoid turns the
        # fused dL/dk into dL/dw = k (1 - k) dL/dk
        return torch.sigmoid(self.w)

    def extra_repr(self):
        return (f"init_tau={self.init_tau}, tau={self.tau:.4g}, detach_input={self.detach_input}, "
                + super().extra_repr())


class MultiStepParametricLIFNode(ParametricLIFNode):
    """Parametric LIF neuron over a whole sequence ``[T, *]`` per call.

    Args:
        store_v_seq: also keep the potential after every step, ``[T, *]``, in ``self.v_seq``.
        Others: as :class:`ParametricLIFNode`.
    """

    multi_step = True

    def __init__(self, init_tau=2.0, detach_input=False, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="ATan", alpha=2.0, detach_reset=False, *, backend=None,
                 store_v_seq=False):
        super().__init__(init_tau, detach_input, v_threshold, v_reset, surrogate_function, alpha,
                         detach_reset, backend=backend)
        self.store_v_seq = store_v_seq

    def forward(self, dv_seq: torch.Tensor) -> torch.Tensor:
        """``dv_seq`` ``[T, *]``; returns spikes ``[T, *]``, ``v`` becomes V[T-1]."""
        return self._run(dv_seq)
