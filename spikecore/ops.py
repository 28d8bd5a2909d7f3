"""The neuron kernels as ``torch.library`` custom operators, for ``torch.compile`` and export.

``torch.compile`` cannot look inside the Cython or CUDA kernels, and a plain
``torch.autograd.Function`` that calls them is traced line by line (NeuronConfig objects,
backend look-ups) with graph breaks where tracing gives up. Registered as custom operators the
kernels are opaque nodes of the graph instead: Dynamo records one call, AOTAutograd takes the
backward from :func:`torch.library.register_autograd`, and Inductor calls the kernel as it is.
Each operator takes tensors and plain scalars only and returns fresh tensors (nothing aliases an
input, nothing is mutated).

``spikecore::neuron_forward(x, v, v_init, reciprocal_tau_tensor, charge_mode, hard_reset,
v_threshold, v_reset, reciprocal_tau, alpha, surrogate, detach_reset, multi_step, backend,
save_h, save_v) -> (spike, v_next, h_seq, v_seq)``

    ``x`` is ``[T, *]`` (``multi_step``) or one step ``[*]``. ``v`` is the potential before the
    first step, or ``None``: then every neuron starts at the scalar ``v_init`` (a node's fresh
    state), made inside the operator. ``charge_mode`` is 0 IF, 1 LIF, 2 LIF with
    ``detach_input``; ``hard_reset=False`` selects soft reset (``v_reset`` is then ignored);
    ``surrogate`` is the API index; ``backend`` is a backend name or ``""`` (by device).
    ``h_seq`` (``save_h``, what the backward needs) and ``v_seq`` (``save_v``, the potential
    after each step) are empty tensors unless asked for. ``h_seq`` has the kernel's compute
    dtype: float32 for float16/bfloat16 inputs on a backend without native half kernels (the
    CPU), the input dtype otherwise (CUDA). Neither is differentiable.

    ``reciprocal_tau_tensor`` is the extension point for a learnable time constant: ``None``
    for IF/LIF (the float ``reciprocal_tau`` is used), or a 0-d tensor k = 1/τ that replaces it;
    the gradient then also flows to k (through ``spikecore::neuron_backward_plif``).

``spikecore::neuron_backward(grad_spike, grad_v_next, h_seq, <scalars>) -> (grad_x, grad_v)``
    BPTT from the saved H (the training route of :mod:`spikecore.autograd`).

``spikecore::neuron_backward_plif(grad_spike, grad_v_next, h_seq, v, v_init, k, <scalars>)``
    Returns ``(grad_x, grad_v, grad_reciprocal_tau)``: the same plus dL/dk summed over neurons
    and steps, for a learnable k.

:func:`neuron` is the Python entry point the nodes use: in eager mode it keeps the original route
(:class:`~spikecore.autograd.NeuronFunction`, or
:class:`~spikecore.autograd.ParametricNeuronFunction` for a learnable k, when a gradient is
needed; the forward-only kernel otherwise); while Dynamo traces
(``torch.compiler.is_compiling()``) it calls the operators.
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import dispatch
from .autograd import NeuronFunction, ParametricNeuronFunction, first_order
from .config import CHARGE_IF, CHARGE_LIF, CHARGE_LIF_DETACH_INPUT, NeuronConfig

__all__ = ["neuron", "neuron_forward", "neuron_backward", "neuron_backward_plif",
           "config_scalars", "OP_SCALAR_NAMES"]

_HALF = (torch.float16, torch.bfloat16)


# --- scalars <-> NeuronConfig -----------------------------------------------------------------
#: the operators' scalar parameters after the tensors, in order (``v_reset`` is V_r: the
#: config's ``v_rest``)
OP_SCALAR_NAMES = ("charge_mode", "hard_reset", "v_threshold", "v_reset", "reciprocal_tau",
                   "alpha", "surrogate", "detach_reset")
_OP_K = OP_SCALAR_NAMES.index("reciprocal_tau")


def config_scalars(cfg: NeuronConfig) -> tuple:
    """The scalar arguments of the operators for ``cfg``, named in order by
    :data:`OP_SCALAR_NAMES`."""
    return tuple(getattr(cfg, "v_rest" if name == "v_reset" else name)
                 for name in OP_SCALAR_NAMES)


@functools.lru_cache(maxsize=256)
def _config(charge_mode, hard_reset, v_threshold, v_reset, reciprocal_tau, alpha, surrogate,
            detach_reset) -> NeuronConfig:
    neuron_name, detach_input = {CHARGE_IF: ("IF", False), CHARGE_LIF: ("LIF", False),
                                 CHARGE_LIF_DETACH_INPUT: ("LIF", True)}[charge_mode]
    return NeuronConfig.build(neuron_name, v_threshold, v_reset if hard_reset else None,
                              reciprocal_tau if neuron_name == "LIF" else None, detach_input,
                              alpha, surrogate, detach_reset)


def _step_shape(x, multi_step):
    return dispatch.layout(x.shape, multi_step)[1]


def _compute_dtype(dtype, device, backend):
    """The dtype the kernel computes (and saves H) in, for inputs of ``dtype`` on ``device``."""
    if dtype not in _HALF:
        return dtype
    try:
        impl = dispatch.resolve_backend(backend or None, device)
    except (RuntimeError, ValueError):   # not built here: assume what the backend would do
        return dtype if device.type == "cuda" else torch.float32
    return dtype if dtype in impl.native_dtypes else torch.float32


def _fresh(t, *inputs):
    """``t``, copied if it shares memory with one of ``inputs`` (custom ops may not alias)."""
    if t.numel() == 0:
        return t
    ptr = t.untyped_storage().data_ptr()
    for i in inputs:
        if i is not None and i.numel() and i.untyped_storage().data_ptr() == ptr:
            return t.clone()
    return t


def _with_k(scalars, k):
    """The scalars with reciprocal_tau replaced by the value of the tensor k (if given)."""
    if k is None:
        return scalars
    return scalars[:_OP_K] + (float(k),) + scalars[_OP_K + 1:]


# --- forward --------------------------------------------------------------------------------
@torch.library.custom_op("spikecore::neuron_forward", mutates_args=())
def neuron_forward(x: Tensor, v: Optional[Tensor], v_init: float,
                   reciprocal_tau_tensor: Optional[Tensor], charge_mode: int, hard_reset: bool,
                   v_threshold: float, v_reset: float, reciprocal_tau: float, alpha: float,
                   surrogate: int, detach_reset: bool, multi_step: bool, backend: str,
                   save_h: bool, save_v: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    scalars = _with_k((charge_mode, hard_reset, v_threshold, v_reset, reciprocal_tau, alpha,
                       surrogate, detach_reset), reciprocal_tau_tensor)
    cfg = _config(*scalars)
    if multi_step and x.dim() == 0:
        raise ValueError("x_seq must have a leading time dimension [T, *], got a 0-d tensor")
    v0 = v if v is not None else torch.full(_step_shape(x, multi_step), v_init, dtype=x.dtype,
                                            device=x.device)
    res = dispatch.forward(x, v0, cfg, multi_step=multi_step, backend=backend or None,
                           save_h=save_h, save_v=save_v,
                           names=("x_seq" if multi_step else "x", "v"))
    empty = x.new_empty((0,))
    return (_fresh(res.spike, x, v), _fresh(res.v_next, x, v),
            empty if res.h_seq is None else _fresh(res.h_seq, x, v),
            empty.clone() if res.v_seq is None else _fresh(res.v_seq, x, v))


@neuron_forward.register_fake
def _neuron_forward_fake(x, v, v_init, reciprocal_tau_tensor, charge_mode, hard_reset,
                         v_threshold, v_reset, reciprocal_tau, alpha, surrogate, detach_reset,
                         multi_step, backend, save_h, save_v):
    spike = x.new_empty(x.shape)
    v_next = x.new_empty(_step_shape(x, multi_step))
    h_seq = (x.new_empty(x.shape, dtype=_compute_dtype(x.dtype, x.device, backend)) if save_h
             else x.new_empty((0,)))
    v_seq = x.new_empty(x.shape) if save_v else x.new_empty((0,))
    return spike, v_next, h_seq, v_seq


def _forward_setup_context(ctx, inputs, output):
    (v, v_init, k, *scalars), (multi_step, backend, save_h) = inputs[1:12], inputs[12:15]
    _, _, h_seq, v_seq = output
    ctx.mark_non_differentiable(h_seq, v_seq)
    # Only H for IF/LIF; a learnable k also needs the initial potential (V[-1]) and k itself.
    ctx.save_for_backward(h_seq, *(() if k is None else (v, k)))
    ctx.scalars, ctx.multi_step, ctx.backend = tuple(scalars), multi_step, backend
    ctx.out_dtype = output[0].dtype
    ctx.v_init, ctx.v_given, ctx.k_given, ctx.save_h = v_init, v is not None, k is not None, save_h


def _forward_backward(ctx, grad_spike, grad_v_next, _grad_h, _grad_v_seq):
    if not ctx.save_h:
        raise RuntimeError("spikecore::neuron_forward ran with save_h=False, so it kept nothing "
                           "for backward; call it with save_h=True when a gradient is needed")
    h_seq = ctx.saved_tensors[0]
    if grad_spike is None:
        grad_spike = torch.zeros(h_seq.shape, dtype=ctx.out_dtype, device=h_seq.device)
    if grad_v_next is None:
        grad_v_next = grad_spike.new_zeros(_step_shape(grad_spike, ctx.multi_step))
    if ctx.k_given:
        _, v, k = ctx.saved_tensors
        grad_x, grad_v, grad_k = torch.ops.spikecore.neuron_backward_plif(
            grad_spike, grad_v_next, h_seq, v, ctx.v_init, k, *ctx.scalars, ctx.multi_step,
            ctx.backend)
    else:
        grad_x, grad_v = torch.ops.spikecore.neuron_backward(
            grad_spike, grad_v_next, h_seq, *ctx.scalars, ctx.multi_step, ctx.backend)
        grad_k = None
    grad_x, grad_v, grad_k = first_order(grad_x, grad_v if ctx.v_given else None, grad_k)
    return (grad_x, grad_v, None, grad_k) + (None,) * 12


# register_autograd below, once the backward operators exist


# --- backward -------------------------------------------------------------------------------
@torch.library.custom_op("spikecore::neuron_backward", mutates_args=())
def neuron_backward(grad_spike: Tensor, grad_v_next: Tensor, h_seq: Tensor, charge_mode: int,
                    hard_reset: bool, v_threshold: float, v_reset: float,
                    reciprocal_tau: float, alpha: float, surrogate: int, detach_reset: bool,
                    multi_step: bool, backend: str) -> Tuple[Tensor, Tensor]:
    cfg = _config(charge_mode, hard_reset, v_threshold, v_reset, reciprocal_tau, alpha,
                  surrogate, detach_reset)
    grad_x, grad_v = dispatch.backward(grad_spike, grad_v_next, cfg, h_seq=h_seq,
                                       multi_step=multi_step, backend=backend or None)
    inputs = (grad_spike, grad_v_next, h_seq)
    return _fresh(grad_x, *inputs), _fresh(grad_v, *inputs)


@neuron_backward.register_fake
def _neuron_backward_fake(grad_spike, grad_v_next, h_seq, charge_mode, hard_reset, v_threshold,
                          v_reset, reciprocal_tau, alpha, surrogate, detach_reset, multi_step,
                          backend):
    return (grad_spike.new_empty(grad_spike.shape),
            grad_spike.new_empty(_step_shape(grad_spike, multi_step)))


@torch.library.custom_op("spikecore::neuron_backward_plif", mutates_args=())
def neuron_backward_plif(grad_spike: Tensor, grad_v_next: Tensor, h_seq: Tensor,
                         v: Optional[Tensor], v_init: float, reciprocal_tau_tensor: Tensor,
                         charge_mode: int, hard_reset: bool, v_threshold: float, v_reset: float,
                         reciprocal_tau: float, alpha: float, surrogate: int, detach_reset: bool,
                         multi_step: bool, backend: str) -> Tuple[Tensor, Tensor, Tensor]:
    k = reciprocal_tau_tensor
    cfg = _config(*_with_k((charge_mode, hard_reset, v_threshold, v_reset, reciprocal_tau,
                            alpha, surrogate, detach_reset), k))
    v0 = v if v is not None else torch.full(_step_shape(grad_spike, multi_step), v_init,
                                            dtype=grad_spike.dtype, device=grad_spike.device)
    grad_x, grad_v, grad_k = dispatch.backward_plif(
        grad_spike, grad_v_next, cfg, h_seq=h_seq, v_init=v0, multi_step=multi_step,
        backend=backend or None)
    inputs = (grad_spike, grad_v_next, h_seq, v, k)
    grad_k = grad_k.to(device=k.device, dtype=k.dtype).reshape(k.shape)
    return _fresh(grad_x, *inputs), _fresh(grad_v, *inputs), _fresh(grad_k, *inputs)


@neuron_backward_plif.register_fake
def _neuron_backward_plif_fake(grad_spike, grad_v_next, h_seq, v, v_init, reciprocal_tau_tensor,
                               *scalars_and_flags):
    multi_step = scalars_and_flags[-2]
    return (grad_spike.new_empty(grad_spike.shape),
            grad_spike.new_empty(_step_shape(grad_spike, multi_step)),
            reciprocal_tau_tensor.new_empty(reciprocal_tau_tensor.shape))


neuron_forward.register_autograd(_forward_backward, setup_context=_forward_setup_context)


# --- the entry point of the nodes -------------------------------------------------------------
def neuron(x: Tensor, v, cfg: NeuronConfig, *, multi_step: bool = True, backend=None,
           reciprocal_tau: Optional[Tensor] = None, save_v: bool = False, h_dtype=None,
           names=("x_seq", "v")):
    """Run the neuron on ``x`` from the potential ``v`` (a tensor, or a float every neuron
    starts at). Returns ``(spike, v_next, v_seq)``; ``v_seq`` is ``None`` unless ``save_v``.

    A gradient is computed when grad mode is on and ``x``, ``v`` or ``reciprocal_tau`` (a 0-d
    tensor replacing ``cfg.reciprocal_tau``, for a learnable τ) requires one; then only H is
    saved (plus the initial potential and k for a learnable τ). Otherwise the forward-only
    kernel runs and nothing is saved. ``h_dtype=torch.bfloat16`` keeps that H in bfloat16 (eager
    IF/LIF on the CPU; not under torch.compile or with a learnable τ).
    """
    v_tensor = v if isinstance(v, torch.Tensor) else None
    compiling = torch.compiler.is_compiling()
    if h_dtype is not None and (reciprocal_tau is not None or compiling):
        raise ValueError("keeping H in bfloat16 (h_dtype) is supported for IF/LIF nodes in eager "
                         "mode only, not under torch.compile or with a learnable time constant")
    need_grad = torch.is_grad_enabled() and (
        x.requires_grad or (v_tensor is not None and v_tensor.requires_grad)
        or (reciprocal_tau is not None and reciprocal_tau.requires_grad))
    if not compiling:
        # Eager: the autograd Functions (far fewer Python calls than the operators).
        if v_tensor is None and float(v) != cfg.v_rest:
            if multi_step and x.dim() == 0:
                raise ValueError(f"{names[0]} must have a leading time dimension [T, *], "
                                 "got a 0-d tensor")
            v_tensor = torch.full(_step_shape(x, multi_step), float(v), dtype=x.dtype,
                                  device=x.device)
        # (v_tensor None: every neuron starts at rest, which the kernels do without a tensor)
        if reciprocal_tau is not None:   # a learnable 1/tau
            if need_grad:
                out = ParametricNeuronFunction.apply(x, v_tensor, reciprocal_tau, cfg,
                                                     multi_step, backend, save_v)
                return out[0], out[1], (out[2] if save_v else None)
            cfg = cfg.with_reciprocal_tau(float(reciprocal_tau))
        elif need_grad:
            if not save_v and h_dtype is None:   # (each argument of apply costs ~0.15 us)
                spike, v_next = NeuronFunction.apply(x, v_tensor, cfg, multi_step, backend)
                return spike, v_next, None
            out = NeuronFunction.apply(x, v_tensor, cfg, multi_step, backend, save_v, h_dtype)
            return out[0], out[1], (out[2] if save_v else None)
        res = dispatch.forward(x, v_tensor, cfg, multi_step=multi_step, backend=backend,
                               save_v=save_v, names=names)
        return res.spike, res.v_next, res.v_seq
    if backend is not None and not isinstance(backend, str):
        backend = backend.name
    spike, v_next, _, v_seq = torch.ops.spikecore.neuron_forward(
        x, v_tensor, 0.0 if v_tensor is not None else float(v), reciprocal_tau,
        *config_scalars(cfg), multi_step, backend or "", need_grad, save_v)
    return spike, v_next, (v_seq if save_v else None)
