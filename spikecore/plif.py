"""Parametric LIF: a LIF neuron whose time constant is learned.

The layer learns one scalar w and uses 1/τ = k = sigmoid(w), which keeps τ > 1 whatever w
becomes; w starts at -ln(init_tau - 1) so that τ = init_tau at first. The charge is the LIF's
with k in place of 1/τ, so its derivative with respect to k is (see the ParametricLIF page of
the docs for the derivation)::

    dH[t]/dk = X[t] - (V[t-1] - V_r) = (H[t] - V[t-1]) / k     (decayed input)
    dH[t]/dk = -(V[t-1] - V_r)                                   (detach_input=True)
    dL/dw    = k (1 - k) · Σ_t Σ_i dL/dH[t, i] · dH[t, i]/dk

The fused backward kernels (CPU and CUDA) compute that sum in the same pass as BPTT, each
neuron summing its own terms over time; no two threads ever add into the same place.
"""
import math

import torch
from torch import nn

from . import dispatch
from .config import NeuronConfig
from .nodes import BaseNode

__all__ = ["ParametricLIFFunction", "ParametricLIFNode", "MultiStepParametricLIFNode"]


class ParametricLIFFunction(torch.autograd.Function):
    """``apply(x, v, w, cfg, multi_step, backend) -> (spike, v_next)`` with 1/τ = sigmoid(w).

    ``cfg`` is a LIF :class:`~spikecore.config.NeuronConfig`; its ``reciprocal_tau`` is replaced
    by sigmoid(w). Saves H, the initial potential and w.
    """

    @staticmethod
    def forward(ctx, x, v, w, cfg, multi_step, backend):
        cfg = NeuronConfig.build("LIF", cfg.v_threshold, cfg.v_reset, float(torch.sigmoid(w)),
                                 cfg.detach_input, cfg.alpha, cfg.surrogate, cfg.detach_reset)
        res = dispatch.forward(x, v, cfg, multi_step=multi_step, backend=backend, save_h=True,
                               names=("x_seq" if multi_step else "x", "v"))
        ctx.save_for_backward(res.h_seq, v, w)
        ctx.cfg, ctx.multi_step, ctx.backend = cfg, multi_step, backend
        return res.spike, res.v_next

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        h_seq, v, w = ctx.saved_tensors
        grad_x, grad_v, grad_k = dispatch.backward_plif(
            grad_spike, grad_v_next, ctx.cfg, h_seq=h_seq, v_init=v, multi_step=ctx.multi_step,
            backend=ctx.backend)
        k = torch.sigmoid(w.detach().double())
        grad_w = (grad_k.to(k.device) * k * (1 - k)).to(w.dtype).reshape(w.shape)
        return grad_x, grad_v, grad_w, None, None, None


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
        if isinstance(init_tau, bool) or not isinstance(init_tau, (int, float)):
            raise TypeError(f"init_tau must be a real number, got {type(init_tau).__name__}")
        if not (math.isfinite(init_tau) and init_tau > 1):
            raise ValueError(f"init_tau must be a finite number > 1, got {init_tau}")
        self.init_tau = init_tau
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
        return NeuronConfig.build("LIF", self.v_threshold, self.v_reset, 1.0 / self.init_tau,
                                  self.detach_input, self.alpha, self.surrogate_function,
                                  self.detach_reset)

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
        if torch.is_grad_enabled() and (x.requires_grad or v.requires_grad or self.w.requires_grad):
            spike, self.v = ParametricLIFFunction.apply(x, v, self.w, cfg, self.multi_step,
                                                        self.backend)
            return spike
        cfg = NeuronConfig.build("LIF", cfg.v_threshold, cfg.v_reset, float(torch.sigmoid(self.w)),
                                 cfg.detach_input, cfg.alpha, cfg.surrogate, cfg.detach_reset)
        res = dispatch.forward(x, v, cfg, multi_step=self.multi_step, backend=self.backend,
                               names=("dv_seq" if self.multi_step else "dv", "v"))
        self.v = res.v_next
        return res.spike

    def extra_repr(self):
        return (f"init_tau={self.init_tau}, tau={self.tau:.4g}, detach_input={self.detach_input}, "
                + super().extra_repr())


class MultiStepParametricLIFNode(ParametricLIFNode):
    """Parametric LIF neuron over a whole sequence ``[T, *]`` per call."""

    multi_step = True

    def forward(self, dv_seq: torch.Tensor) -> torch.Tensor:
        """``dv_seq`` ``[T, *]``; returns spikes ``[T, *]``, ``v`` becomes V[T-1]."""
        return self._run(dv_seq)
