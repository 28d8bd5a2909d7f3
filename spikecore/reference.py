"""The executable specification: every kernel of spikecore written with plain PyTorch ops.

This module is deliberately simple: a Python loop over time, one PyTorch op per term of each
equation, in the same order as the compiled kernels (include/spikecore_math.h), so that the
forward pass is bit-identical to theirs. The tests compare every backend against it, and users
can run it with ``backend="reference"``.

Notation (per neuron, step t): X[t] input, V[t-1] potential before the step, H[t] charged
potential, S[t] spike, V[t] potential after reset; θ = v_threshold, V_r = v_reset (0 inside the
charge under soft reset), 1/τ = reciprocal_tau, g' the surrogate derivative::

    charge   H[t] = V[t-1] + X[t]                            (IF)
             H[t] = V[t-1] + (X[t] - (V[t-1] - V_r)) / τ     (LIF)
             H[t] = V[t-1] + X[t] - (V[t-1] - V_r) / τ       (LIF, detach_input=True)
    fire     S[t] = Θ(H[t] - θ),  Θ(0) = 1
    reset    V[t] = S[t] V_r + (1 - S[t]) H[t]               (hard)
             V[t] = H[t] - S[t] θ                            (soft)

Backward of one step, with sg = g'(H[t] - θ)::

    dL/dH[t]   = dL/dS[t] · sg + dL/dV[t] · dV[t]/dH[t]
    dL/dX[t]   = dL/dH[t] · dH/dX
    dL/dV[t-1] = dL/dH[t] · dH/dV

The functions take and return time-major tensors ``[T, *]``; :func:`fptt_autograd` builds the
same forward out of differentiable ops so that ``torch.autograd`` derives the gradients
independently of the hand-written backward.
"""
import torch

from . import surrogate as _surrogate
from .config import NeuronConfig

__all__ = [
    "charge", "fire", "reset", "surrogate_grad", "reset_grad",
    "fptt", "fptt_with_grad", "bptt", "bptt_from_h", "bptt_from_h_plif", "keep_spike_bf16",
    "fptt_autograd",
]


# --- one step, one equation per function -----------------------------------------------------
def charge(x: torch.Tensor, v: torch.Tensor, cfg: NeuronConfig,
           reciprocal_tau=None) -> torch.Tensor:
    """H[t] from X[t] and V[t-1]. ``reciprocal_tau`` (a tensor, e.g. a learnable sigmoid(w))
    replaces ``cfg.reciprocal_tau`` when given."""
    rtau = cfg.reciprocal_tau if reciprocal_tau is None else reciprocal_tau
    if cfg.neuron == "IF":
        return v + x
    if cfg.detach_input:
        return v + x - (v - cfg.v_rest) * rtau
    return v + (x - (v - cfg.v_rest)) * rtau


def fire(h: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    """S[t] = Θ(H[t] - θ) as a float tensor of 0 and 1 (a potential at θ fires)."""
    return (h >= cfg.v_threshold).to(h.dtype)


def reset(h: torch.Tensor, s: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    """V[t] after the spike: hard reset to V_r, or soft reset by subtracting θ."""
    if cfg.hard_reset:
        return s * cfg.v_reset + (1 - s) * h
    return h - s * cfg.v_threshold


def surrogate_grad(h: torch.Tensor, cfg: NeuronConfig) -> torch.Tensor:
    """dS/dH = g'(H - θ; α) for the configured surrogate."""
    return _surrogate.SURROGATES[cfg.surrogate].derivative(h - cfg.v_threshold, cfg.alpha)


def reset_grad(h, s, sg, cfg: NeuronConfig) -> torch.Tensor:
    """dV[t]/dH[t], through both the direct path and the spike (unless detach_reset)."""
    if cfg.hard_reset:
        if cfg.detach_reset:
            return 1 - s
        return 1 - s + (cfg.v_reset - h) * sg
    if cfg.detach_reset:
        return torch.ones_like(h)
    return 1 - cfg.v_threshold * sg


# --- many steps ------------------------------------------------------------------------------
def fptt(x_seq, v, cfg: NeuronConfig):
    """Forward through time. Returns ``(spike_seq, v_next, h_seq, v_seq)``."""
    spikes, hs, vs = [], [], []
    for x in x_seq:
        h = charge(x, v, cfg)
        s = fire(h, cfg)
        v = reset(h, s, cfg)
        spikes.append(s)
        hs.append(h)
        vs.append(v)
    return _stack(spikes, x_seq), v.clone(), _stack(hs, x_seq), _stack(vs, x_seq)


def fptt_with_grad(x_seq, v, cfg: NeuronConfig):
    """Forward through time, also returning the local gradients the teaching backward uses.

    Returns ``(spike_seq, v_next, grad_s_to_h, grad_v_to_h)``.
    """
    spike_seq, v_next, h_seq, _ = fptt(x_seq, v, cfg)
    grad_s_to_h = surrogate_grad(h_seq, cfg)
    grad_v_to_h = reset_grad(h_seq, spike_seq, grad_s_to_h, cfg)
    return spike_seq, v_next, grad_s_to_h, grad_v_to_h


def bptt(grad_spike_seq, grad_v_next, grad_s_to_h, grad_v_to_h, cfg: NeuronConfig):
    """Backpropagation through time from stored dS/dH and dV/dH.

    Returns ``(grad_x_seq, grad_v)``: dL/dX[t] for every t and dL/dV[-1].
    """
    grad_x = []
    grad_v = grad_v_next
    for t in range(grad_spike_seq.shape[0] - 1, -1, -1):
        grad_h = grad_spike_seq[t] * grad_s_to_h[t] + grad_v * grad_v_to_h[t]
        grad_x.append(grad_h * cfg.dh_dx)
        grad_v = grad_h * cfg.dh_dv
    grad_x.reverse()
    return _stack(grad_x, grad_spike_seq), grad_v.clone()


def bptt_from_h(grad_spike_seq, grad_v_next, h_seq, cfg: NeuronConfig):
    """The training route: recompute S, dS/dH and dV/dH from the saved H, then :func:`bptt`."""
    s = fire(h_seq, cfg)
    sg = surrogate_grad(h_seq, cfg)
    return bptt(grad_spike_seq, grad_v_next, sg, reset_grad(h_seq, s, sg, cfg), cfg)


def bptt_from_h_plif(grad_spike_seq, grad_v_next, h_seq, v_init, cfg: NeuronConfig):
    """:func:`bptt_from_h` for a learnable k = 1/τ, also returning dL/dk summed over neurons and
    time (a 0-d tensor)::

        dL/dk = Σ_t Σ_i dL/dH[t]·dH[t]/dk,   dH/dk = X - (V[t-1] - V_r) = (H - V[t-1])/k  (LIF)
                                             dH/dk = -(V[t-1] - V_r)           (detach_input)

    V[t-1] is the forward's potential after reset: rebuilt from H[t-1], and V[-1] = v_init.
    """
    s = fire(h_seq, cfg)
    sg = surrogate_grad(h_seq, cfg)
    dv_dh = reset_grad(h_seq, s, sg, cfg)
    v_prev = torch.cat([v_init.unsqueeze(0), reset(h_seq, s, cfg)[:-1]])
    if cfg.detach_input:
        dh_dk = -(v_prev - cfg.v_rest)
    else:
        dh_dk = (h_seq - v_prev) / cfg.reciprocal_tau
    grad_x, grad_k = [], torch.zeros((), dtype=torch.float64, device=h_seq.device)
    grad_v = grad_v_next
    for t in range(grad_spike_seq.shape[0] - 1, -1, -1):
        grad_h = grad_spike_seq[t] * sg[t] + grad_v * dv_dh[t]
        grad_k = grad_k + (grad_h * dh_dk[t]).double().sum()
        grad_x.append(grad_h * cfg.dh_dx)
        grad_v = grad_h * cfg.dh_dv
    grad_x.reverse()
    return _stack(grad_x, grad_spike_seq), grad_v.clone(), grad_k


def keep_spike_bf16(h_seq, spike_seq, cfg: NeuronConfig):
    """H rounded to bfloat16, moved by one unit in the last place wherever rounding would put
    it on the other side of the threshold than the H that decided the spike, so that S
    recomputed from the stored H is the S of the forward pass. A finite H that rounds to
    infinity is kept as the largest finite bfloat16 of its sign (infinity would make the
    backward's (V_r - H) g' a NaN), unless the spike needs the nudge to infinity."""
    q = h_seq.to(torch.bfloat16)
    overflowed = q.isinf() & h_seq.isfinite()
    q = torch.where(overflowed, torch.finfo(torch.bfloat16).max * q.sign(), q)
    fired = spike_seq != 0
    wrong = (q.to(h_seq.dtype) >= cfg.v_threshold) != fired
    toward = torch.where(fired, float("inf"), float("-inf")).to(torch.bfloat16)
    return torch.where(wrong, torch.nextafter(q, toward), q)


def _stack(items, like):
    if items:
        return torch.stack(items)
    return like.new_empty(like.shape)


# --- the same forward, differentiated by torch.autograd --------------------------------------
class _Heaviside(torch.autograd.Function):
    """Θ(x) forward; g'(x) times the incoming gradient backward."""

    @staticmethod
    def forward(ctx, x, surrogate_index, alpha):
        ctx.save_for_backward(x)
        ctx.surrogate_index, ctx.alpha = surrogate_index, alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        dg = _surrogate.SURROGATES[ctx.surrogate_index].derivative(x, ctx.alpha)
        return grad * dg, None, None


def fptt_autograd(x_seq, v, cfg: NeuronConfig, reciprocal_tau=None):
    """Forward through time built from differentiable ops; autograd yields the gradients.

    ``reciprocal_tau`` may be a tensor (a learnable 1/τ) replacing ``cfg.reciprocal_tau``.
    Returns ``(spike_seq, v_next)``, both attached to the autograd graph.
    """
    spikes = []
    for x in x_seq:
        h = charge(x, v, cfg, reciprocal_tau)
        s = _Heaviside.apply(h - cfg.v_threshold, cfg.surrogate, cfg.alpha)
        s_reset = s.detach() if cfg.detach_reset else s
        v = reset(h, s_reset, cfg)
        spikes.append(s)
    if not spikes:
        return x_seq * 0, v * 1
    return torch.stack(spikes), v
