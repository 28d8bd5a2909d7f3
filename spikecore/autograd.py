"""autograd Functions for IF/LIF neurons: fused forward, fused BPTT, and only H saved.

The forward kernel writes the spikes, the last potential and H[t] (the charged potential before
firing) and nothing else is kept for backward. The backward kernel recomputes from H what it
needs, S = Θ(H - θ), sg = g'(H - θ) and dV/dH, and runs the BPTT recursion::

    dL/dH[t]   = dL/dS[t]·sg[t] + dL/dV[t]·dV[t]/dH[t]
    dL/dX[t]   = dL/dH[t]·dH/dX
    dL/dV[t-1] = dL/dH[t]·dH/dV        (carried into step t-1)

with exactly the arithmetic of the teaching path (``*_fptt_with_grad`` + ``*_bptt``), so both
routes give identical gradients while this one keeps a single ``[T, N]`` tensor per layer.

``LIFStep``, ``LIFMultiStep``, ``IFStep`` and ``IFMultiStep`` take the forward arguments of the
original API; :class:`NeuronFunction` is the general form (any config, any backend) and
:class:`ParametricNeuronFunction` its form for a learnable τ. A node checks its first call and
makes a plan for calls like it; with a plan it runs :class:`PlannedNeuronFunction` or
:class:`PlannedParametricNeuronFunction`: the same computation without checking the tensors
again, and on the CPU a small layer saves its input instead of H (see
:class:`spikecore.backends.Plan`).
"""
import torch

from . import backends, dispatch
from .config import NeuronConfig, check_reciprocal_tau

__all__ = ["NeuronFunction", "PlannedNeuronFunction", "ParametricNeuronFunction",
           "PlannedParametricNeuronFunction", "LIFStep", "LIFMultiStep", "IFStep", "IFMultiStep"]


class _SecondOrderGuard(torch.autograd.Function):
    """The identity on a gradient that a fused backward returned under ``create_graph=True``,
    whose own backward raises. The kernels' BPTT is not differentiable: without this guard a
    second derivative through a spiking layer (a gradient penalty, meta-learning) would come
    out finite and silently miss the layer's terms."""

    @staticmethod
    def forward(ctx, grad):
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError(
            "spikecore's fused neuron backward cannot be differentiated again (a second "
            "derivative through a spiking layer); for higher-order gradients run the layer "
            "through plain PyTorch ops, spikecore.reference.fptt_autograd")


def first_order(*grads):
    """``grads`` as they are, or guarded against a second differentiation when the backward
    runs with ``create_graph=True`` (the only time autograd enables grad mode in a backward)."""
    if not torch.is_grad_enabled():
        return grads
    # The kernels' result has no graph; the guard's input must require grad for its output to
    # get the guard as grad_fn.
    return tuple(g if g is None else _SecondOrderGuard.apply(g.detach().requires_grad_())
                 for g in grads)


def _forward(ctx, x, v, cfg, multi_step, backend, save_v=False, h_dtype=None, also_save=()):
    res = dispatch.forward(x, v, cfg, multi_step=multi_step, backend=backend, save_h=True,
                           save_v=save_v, h_dtype=h_dtype,
                           names=("x_seq" if multi_step else "x", "v"))
    ctx.save_for_backward(res.h_seq, *also_save)
    ctx.cfg, ctx.multi_step, ctx.backend, ctx.v_given = cfg, multi_step, backend, v is not None
    # An output that does not reach the loss gets None, not a tensor of zeros: the usual
    # v_next of a fresh multi-step node, which the kernels then treat as zero without reading.
    ctx.set_materialize_grads(False)
    if save_v:  # the potential after each step: a record of the state, not differentiable
        ctx.mark_non_differentiable(res.v_seq)
        return res.spike, res.v_next, res.v_seq
    return res.spike, res.v_next


def _saved_and_grad_spike(ctx, grad_spike, grad_v_next):
    """The saved tensors (H first) and dL/dS, zeros when only the last potential reaches the
    loss. Call it only when some gradient came in."""
    saved = ctx.saved_tensors
    if grad_spike is None:
        grad_spike = torch.zeros_like(saved[0], dtype=grad_v_next.dtype)
    return saved, grad_spike


def _backward(ctx, grad_spike, grad_v_next):
    """``(grad_x, grad_v)``; ``grad_v`` is None when ``v`` was (a node's fresh state)."""
    if grad_spike is None and grad_v_next is None:
        return None, None
    (h_seq,), grad_spike = _saved_and_grad_spike(ctx, grad_spike, grad_v_next)
    grad_x, grad_v = dispatch.backward_saved(grad_spike, grad_v_next, ctx.cfg, h_seq,
                                             multi_step=ctx.multi_step, backend=ctx.backend)
    return first_order(grad_x, grad_v if ctx.v_given else None)


class NeuronFunction(torch.autograd.Function):
    """``apply(x, v, cfg, multi_step, backend) -> (spike, v_next)`` for any
    :class:`~spikecore.config.NeuronConfig`.

    ``v`` may be ``None``: every neuron then starts at rest (``cfg.v_rest``).

    ``apply(x, v, cfg, multi_step, backend, True)`` also returns ``v_seq``, the potential after
    each step (shaped like ``x``, not differentiable), as a third output. A last argument
    ``h_dtype=torch.bfloat16`` keeps the saved H in bfloat16 (see
    :func:`~spikecore.dispatch.forward`).
    """

    @staticmethod
    def forward(ctx, x, v, cfg, multi_step, backend, save_v=False, h_dtype=None):
        return _forward(ctx, x, v, cfg, multi_step, backend, save_v, h_dtype)

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next, *_grad_v_seq):
        # one None per non-tensor input; autograd drops the trailing ones that were omitted
        return (*_backward(ctx, grad_spike, grad_v_next), None, None, None, None, None)


def _direct_apply(function):
    """Class decorator: ``function.apply`` enters autograd's C++ ``apply`` directly, without the
    Python layer of :meth:`torch.autograd.Function.apply` (about 1.3 us of a node's call). That
    layer only matters under functorch transforms (``torch.func``, vmap) and for tensors a
    finished transform left wrapped; such calls still take it (x and v are checked; a plan's
    other arguments are a Plan and, for a learnable τ, k made in the same call)."""
    general = function.apply
    direct = super(torch.autograd.Function, function).apply
    wrapped = backends.transform_wrapped
    try:   # a private part of PyTorch: a version without it keeps the usual apply
        transforms_active = torch._C._are_functorch_transforms_active
    except AttributeError:
        return function

    def apply(x, v, *rest):
        if transforms_active() or wrapped(x) or (v is not None and wrapped(v)):
            return general(x, v, *rest)
        return direct(x, v, *rest)

    apply.__doc__ = general.__doc__
    function.apply = staticmethod(apply)
    return function


@_direct_apply
class PlannedNeuronFunction(torch.autograd.Function):
    """``apply(x, v, plan) -> (spike, v_next)``: :class:`NeuronFunction` for inputs that a
    :class:`~spikecore.backends.Plan` has accepted (see :func:`spikecore.dispatch.plan`), so
    neither direction checks its tensors again. ``v`` is ``None`` exactly when the plan is for a
    fresh state. The nodes run this one whenever they have a plan for the call.
    """

    @staticmethod
    def forward(ctx, x, v, plan):
        spike, v_next, saved = plan.train_forward(x, v)   # H, or the input (see Plan)
        ctx.save_for_backward(*saved)
        ctx.plan = plan
        ctx.set_materialize_grads(False)   # as in _forward
        return spike, v_next

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        if grad_spike is None and grad_v_next is None:
            return None, None, None
        saved = ctx.saved_tensors
        if grad_spike is None:   # (as _saved_and_grad_spike, written out on this hot path)
            grad_spike = torch.zeros_like(saved[0], dtype=grad_v_next.dtype)
        plan = ctx.plan
        grad_x, grad_v = plan.train_backward(grad_spike, grad_v_next, saved)
        return (*first_order(grad_x, grad_v if plan.v_given else None), None)


@_direct_apply
class PlannedParametricNeuronFunction(torch.autograd.Function):
    """``apply(x, v, k, plan) -> (spike, v_next)``: :class:`ParametricNeuronFunction` through a
    plan (see :class:`PlannedNeuronFunction`); the value of the 0-d tensor k = 1/τ is checked at
    every call and replaces the plan config's."""

    @staticmethod
    def forward(ctx, x, v, k, plan):
        k_value = check_reciprocal_tau(float(k))
        spike, v_next, saved = plan.train_forward_plif(x, v, k_value)   # (H or the input, v)
        ctx.save_for_backward(*saved, k)
        ctx.plan, ctx.k_value = plan, k_value
        ctx.set_materialize_grads(False)
        return spike, v_next

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        if grad_spike is None and grad_v_next is None:
            return None, None, None, None
        (seq, v, k), grad_spike = _saved_and_grad_spike(ctx, grad_spike, grad_v_next)
        grad_x, grad_v, grad_k = ctx.plan.train_backward_plif(
            grad_spike, grad_v_next, (seq, v), ctx.k_value)   # v None: at rest
        return (*first_order(grad_x, grad_v if ctx.plan.v_given else None,
                             _gradient_like(grad_k, k)), None)


def _gradient_like(grad_k, k):
    """dL/dk (a 0-d float64 sum) in the dtype, device and shape of k."""
    if grad_k.dtype != k.dtype or grad_k.device != k.device:
        grad_k = grad_k.to(device=k.device, dtype=k.dtype)
    return grad_k if grad_k.shape == k.shape else grad_k.reshape(k.shape)


class ParametricNeuronFunction(torch.autograd.Function):
    """``apply(x, v, k, cfg, multi_step, backend) -> (spike, v_next)`` with a learnable 1/τ: ``k``
    is a 0-d tensor whose value replaces ``cfg.reciprocal_tau`` (ParametricLIF nodes pass
    sigmoid(w)). The backward gives dL/dk as well, summed over neurons and steps in the same pass
    as BPTT (:func:`~spikecore.dispatch.backward_saved` with ``learnable_tau``), for which the
    initial potential is saved with H. ``v`` may be ``None`` (every neuron at rest, in the
    backward too); a seventh argument ``True`` also returns ``v_seq``, as for
    :class:`NeuronFunction`.
    """

    @staticmethod
    def forward(ctx, x, v, k, cfg, multi_step, backend, save_v=False):
        return _forward(ctx, x, v, cfg.with_reciprocal_tau(float(k)), multi_step, backend,
                        save_v, also_save=(v, k))

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next, *_grad_v_seq):
        if grad_spike is None and grad_v_next is None:
            return (None,) * 7
        (h_seq, v, k), grad_spike = _saved_and_grad_spike(ctx, grad_spike, grad_v_next)
        grad_x, grad_v, grad_k = dispatch.backward_saved(
            grad_spike, grad_v_next, ctx.cfg, h_seq, multi_step=ctx.multi_step,
            backend=ctx.backend, learnable_tau=True, v_init=v)   # v None: at rest
        return (*first_order(grad_x, grad_v if ctx.v_given else None,
                             _gradient_like(grad_k, k)), None, None, None, None)


class LIFStep(torch.autograd.Function):
    """One LIF step; ``apply(x, v, v_threshold, v_reset, alpha, detach_reset,
    grad_surrogate_function_index, reciprocal_tau, detach_input) -> (spike, v_next)``."""

    @staticmethod
    def forward(ctx, x, v, v_threshold, v_reset, alpha, detach_reset,
                grad_surrogate_function_index, reciprocal_tau, detach_input):
        cfg = NeuronConfig.build("LIF", v_threshold, v_reset, reciprocal_tau, detach_input, alpha,
                                 grad_surrogate_function_index, detach_reset)
        return _forward(ctx, x, v, cfg, False, None)

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        return (*_backward(ctx, grad_spike, grad_v_next),) + (None,) * 7


class LIFMultiStep(torch.autograd.Function):
    """``T`` LIF steps; ``apply(x_seq, v, v_threshold, v_reset, alpha, detach_reset,
    grad_surrogate_function_index, reciprocal_tau, detach_input) -> (spike_seq, v_next)``."""

    @staticmethod
    def forward(ctx, x_seq, v, v_threshold, v_reset, alpha, detach_reset,
                grad_surrogate_function_index, reciprocal_tau, detach_input):
        cfg = NeuronConfig.build("LIF", v_threshold, v_reset, reciprocal_tau, detach_input, alpha,
                                 grad_surrogate_function_index, detach_reset)
        return _forward(ctx, x_seq, v, cfg, True, None)

    @staticmethod
    def backward(ctx, grad_spike_seq, grad_v_next):
        return (*_backward(ctx, grad_spike_seq, grad_v_next),) + (None,) * 7


class IFStep(torch.autograd.Function):
    """One IF step; ``apply(x, v, v_threshold, v_reset, alpha, detach_reset,
    grad_surrogate_function_index) -> (spike, v_next)``."""

    @staticmethod
    def forward(ctx, x, v, v_threshold, v_reset, alpha, detach_reset,
                grad_surrogate_function_index):
        cfg = NeuronConfig.build("IF", v_threshold, v_reset, None, False, alpha,
                                 grad_surrogate_function_index, detach_reset)
        return _forward(ctx, x, v, cfg, False, None)

    @staticmethod
    def backward(ctx, grad_spike, grad_v_next):
        return (*_backward(ctx, grad_spike, grad_v_next),) + (None,) * 5


class IFMultiStep(torch.autograd.Function):
    """``T`` IF steps; ``apply(x_seq, v, v_threshold, v_reset, alpha, detach_reset,
    grad_surrogate_function_index) -> (spike_seq, v_next)``."""

    @staticmethod
    def forward(ctx, x_seq, v, v_threshold, v_reset, alpha, detach_reset,
                grad_surrogate_function_index):
        cfg = NeuronConfig.build("IF", v_threshold, v_reset, None, False, alpha,
                                 grad_surrogate_function_index, detach_reset)
        return _forward(ctx, x_seq, v, cfg, True, None)

    @staticmethod
    def backward(ctx, grad_spike_seq, grad_v_next):
        return (*_backward(ctx, grad_spike_seq, grad_v_next),) + (None,) * 5
