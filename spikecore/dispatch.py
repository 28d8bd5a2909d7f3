"""Between the public API and a backend: validate, make contiguous, pick the backend.

Every public function and autograd Function funnels through :func:`forward` and
:func:`backward` here, or through a :class:`~spikecore.backends.Plan` that :func:`plan` made
after the same checks (the nodes' route for repeated calls). They

* check that each argument is a floating-point tensor on the same device, with the same dtype
  and a matching shape, raising an error that names the argument;
* make every tensor C-contiguous (copying only when needed), so any strides (transposed,
  sliced, broadcast) work; shapes stay as given and the backend reads a sequence ``[T, *]`` (a
  single step ``[*]``) as ``[T, N]`` itself, which saves a reshape and a view back per tensor
  (about a microsecond each in PyTorch, the same order as a small kernel);
* run float16/bfloat16 in float32 where a backend has no native half kernel, and cast results
  back to the input dtype (a state that is not given then starts from the resting potential as
  the input's dtype holds it, as on a backend with half kernels: see ``_rest_upcast``);
* choose the backend from the device (or the name given) through :mod:`spikecore.backends`.
"""
from typing import NamedTuple, Optional

import torch

from . import backends

__all__ = ["ForwardResult", "forward", "plan", "backward", "backward_saved", "backward_plif",
           "resolve_backend"]

_HALF = (torch.float16, torch.bfloat16)
_SUPPORTED = (torch.float32, torch.float64) + _HALF


class ForwardResult(NamedTuple):
    spike: torch.Tensor
    v_next: torch.Tensor
    h_seq: Optional[torch.Tensor]        # in the compute dtype (float32 for half inputs)
    v_seq: Optional[torch.Tensor]
    grad_s_to_h: Optional[torch.Tensor]
    grad_v_to_h: Optional[torch.Tensor]


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in _SUPPORTED:
        raise TypeError(f"{name} must be a floating-point tensor (float32, float64, float16 or "
                        f"bfloat16), got {t.dtype}")
    if t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got layout {t.layout}; convert it "
                        "with .to_dense()")


def _check_like(name, t, ref_name, ref, shape, same_dtype=True):
    _check_tensor(name, t)
    if t.device != ref.device:
        raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                         "move them to the same device")
    if same_dtype and t.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {t.dtype} but {ref_name} has dtype {ref.dtype}; "
                        "they must match")
    if t.shape != shape:   # torch.Size is a tuple
        raise ValueError(f"{name} must have shape {tuple(shape)} to match {ref_name}, "
                         f"got {tuple(t.shape)}")


def layout(shape, multi_step):
    """``(T, state shape)`` of a sequence ``[T, *]``, or ``(1, shape)`` for a single step. The
    state shape is a plain tuple: PyTorch allocates from one faster than from a torch.Size
    (``new_empty``: about 1.0 against 1.4 us)."""
    return (shape[0], tuple(shape[1:])) if multi_step else (1, tuple(shape))


def _to_caller(dtype, computed, *tensors):
    """``tensors`` (None stays None) in the caller's ``dtype``; as they are when the kernel
    ``computed`` in it."""
    if computed == dtype:
        return tensors
    return tuple(None if t is None else t.to(dtype) for t in tensors)


def _rest_upcast(caller, computed, v_rest, shape, device):
    """The state ``None`` (not given) stands for when a call computes in a wider dtype than the
    caller's: ``None`` again (the backend starts at ``v_rest`` itself), unless the caller's
    dtype cannot hold ``v_rest`` exactly. Then the state a fresh node of that dtype holds,
    ``torch.full(shape, v_rest, dtype=caller)``, in the compute dtype: so a 16-bit call starts
    from the same potential with the state given or not, on every backend and route."""
    if caller == computed or backends.holds_exactly(caller, v_rest):
        return None
    return torch.full(shape, v_rest, dtype=caller, device=device).to(computed)


def resolve_backend(backend, device: torch.device):
    """The backend object for a call on ``device`` (``backend`` may be None, a name or one)."""
    if backend is None:
        return backends.for_device(device)
    chosen = backend if isinstance(backend, backends.Backend) else backends.lookup(backend)
    if chosen.device_type is not None and chosen.device_type != device.type:
        raise ValueError(f"backend {chosen.name!r} runs on {chosen.device_type} tensors, but "
                         f"the inputs are on {device}")
    # the device first: CPU tensors sent to a CUDA backend are a mistake on any machine
    return chosen if chosen is backend else backends.get(backend)


def _check_readable(impl, name, t):
    """Native kernels read memory through raw pointers, which a torch.func transform's wrapped
    tensors do not have."""
    if impl.reads_memory and backends.transform_wrapped(t):
        raise TypeError(f"{name} is a tensor inside a torch.func transform (vmap, grad, ...), "
                        f"whose memory the {impl.name!r} backend's kernels cannot read; call "
                        "spikecore outside the transform, or use backend='reference' (PyTorch "
                        "operations, which vmap can batch)")


def _compute_dtype(backend, name, dtype):
    if dtype in backend.native_dtypes:
        return dtype
    if dtype in _HALF:
        return torch.float32
    raise TypeError(f"{name} has dtype {dtype}, which the {backend.name!r} backend does not "
                    f"support; supported: {', '.join(str(d) for d in backend.native_dtypes)}"
                    + (", float16, bfloat16" if torch.float32 in backend.native_dtypes else ""))


def _prepared(t, dtype):
    """``t`` C-contiguous in ``dtype``, in its own shape (copies only if needed)."""
    if t.dtype != dtype:
        t = t.to(dtype)
    return t if t.is_contiguous() else t.contiguous()


def _forward_inputs(x_seq, v, multi_step, backend, h_dtype, names):
    """Validate the inputs of a forward call: ``(impl, dtype, steps, step_shape)``."""
    x_name, v_name = names
    _check_tensor(x_name, x_seq)
    if multi_step and x_seq.dim() == 0:
        raise ValueError(f"{x_name} must have a leading time dimension [T, *], got a 0-d tensor")
    steps, step_shape = layout(x_seq.shape, multi_step)
    if v is not None:
        _check_like(v_name, v, x_name, x_seq, step_shape)
    impl = resolve_backend(backend, x_seq.device)
    _check_readable(impl, x_name, x_seq)
    if v is not None:
        _check_readable(impl, v_name, v)
    dtype = _compute_dtype(impl, x_name, x_seq.dtype)
    if h_dtype is not None and (h_dtype not in impl.h_dtypes or dtype != torch.float32):
        raise ValueError(f"h_dtype={h_dtype} is not available here: the {impl.name!r} backend "
                         f"keeps H in {[str(d) for d in impl.h_dtypes] or 'its compute dtype only'}"
                         f", for float32 computation (this call computes in {dtype})")
    return impl, dtype, steps, step_shape


def _check_fits(cfg, dtype):
    """A parameter float32 cannot hold would turn into inf inside a float32 computation."""
    if dtype is not torch.float64 and cfg.outside_float32 is not None:
        raise ValueError(f"{cfg.outside_float32} is too large for float32, the dtype this "
                         "call computes in (only float64 inputs are computed in float64)")


def plan(x_seq, v, cfg, *, multi_step=True, backend=None, h_dtype=None,
         names=("x_seq", "v")) -> Optional[backends.Plan]:
    """Check a call as :func:`forward` does and return a :class:`~spikecore.backends.Plan` that
    runs it, and every later call whose tensors the plan :meth:`accepts
    <spikecore.backends.Plan.accepts>`, without checking again. Float16/bfloat16 calls on a
    backend without half kernels get the backend's :meth:`~spikecore.backends.Backend.cast_plan`
    around its float32 plan (a :class:`~spikecore.backends.CastPlan`); ``None`` for those whose
    fresh state :func:`forward` must fill (a V_r their dtype does not hold exactly), which only
    :func:`forward` runs.

    ``v`` is ``None`` for a fresh state (at rest): the plan then takes ``None`` only.
    """
    impl, dtype, steps, step_shape = _forward_inputs(x_seq, v, multi_step, backend, h_dtype,
                                                     names)
    _check_fits(cfg, dtype)
    if dtype == x_seq.dtype:
        return impl.plan(cfg, x_seq, v is not None, steps, step_shape, h_dtype)
    if v is None and not backends.holds_exactly(x_seq.dtype, cfg.v_rest):
        return None
    # the float32 plan reads only the shape, dtype and device of its example: no memory needed
    like = torch.empty((), dtype=dtype, device=x_seq.device).expand(x_seq.shape)
    inner = impl.plan(cfg, like, v is not None, steps, step_shape, h_dtype)
    return impl.cast_plan(inner, cfg, x_seq, v is not None, steps, step_shape, h_dtype)


def forward(x_seq, v, cfg, *, multi_step=True, backend=None, save_h=False, save_v=False,
            with_grad=False, h_dtype=None, names=("x_seq", "v")) -> ForwardResult:
    """Run the neuron forward on ``x_seq`` ``[T, *]`` (or ``x`` ``[*]`` if not multi_step).

    ``v`` is the potential before the first step, or ``None``: every neuron starts at rest
    (``cfg.v_rest``), as a fresh node does, without a tensor made only to hold that constant.

    ``h_dtype=torch.bfloat16`` keeps the saved H in bfloat16 (half the memory autograd holds and
    half the backward's reads of H; float32 computation on the CPU or reference backend only).
    """
    impl, dtype, steps, step_shape = _forward_inputs(x_seq, v, multi_step, backend, h_dtype,
                                                     names)
    _check_fits(cfg, dtype)
    v = (_rest_upcast(x_seq.dtype, dtype, cfg.v_rest, step_shape, x_seq.device) if v is None
         else _prepared(v, dtype))
    spike, v_next, h_seq, v_seq, gs2h, gv2h = impl.forward(
        _prepared(x_seq, dtype), v, cfg, steps, save_h=save_h, save_v=save_v,
        with_grad=with_grad, h_dtype=h_dtype, state_shape=step_shape)
    spike, v_next, v_seq, gs2h, gv2h = _to_caller(x_seq.dtype, dtype, spike, v_next, v_seq,
                                                  gs2h, gv2h)   # h_seq keeps its own dtype
    return ForwardResult(spike, v_next, h_seq, v_seq, gs2h, gv2h)


def _gradient_inputs(grad_spike_seq, grad_v_next, multi_step, backend, names):
    """Validate the incoming gradients of a backward call.

    Returns ``(impl, dtype, steps, step_shape, grad_spike, grad_v_next)``, the gradients
    contiguous in the compute dtype (``grad_v_next`` stays None, meaning zero).
    """
    gs_name, gv_name = names
    _check_tensor(gs_name, grad_spike_seq)
    if multi_step and grad_spike_seq.dim() == 0:
        raise ValueError(f"{gs_name} must have a leading time dimension [T, *], got a 0-d tensor")
    steps, step_shape = layout(grad_spike_seq.shape, multi_step)
    impl = resolve_backend(backend, grad_spike_seq.device)
    _check_readable(impl, gs_name, grad_spike_seq)
    dtype = _compute_dtype(impl, gs_name, grad_spike_seq.dtype)
    if grad_v_next is not None:
        _check_like(gv_name, grad_v_next, gs_name, grad_spike_seq, step_shape)
        _check_readable(impl, gv_name, grad_v_next)
        grad_v_next = _prepared(grad_v_next, dtype)
    return impl, dtype, steps, step_shape, _prepared(grad_spike_seq, dtype), grad_v_next


def backward(grad_spike_seq, grad_v_next, cfg, *, h_seq=None, grad_s_to_h=None,
             grad_v_to_h=None, multi_step=True, backend=None,
             names=("grad_spike_seq", "grad_v_next")):
    """BPTT through ``[T, *]`` steps (or one step). Give ``h_seq`` (training route) or both
    ``grad_s_to_h`` and ``grad_v_to_h`` (teaching route). Returns ``(grad_x_seq, grad_v)``."""
    impl, dtype, steps, step_shape, grad_spike, grad_v_last = _gradient_inputs(
        grad_spike_seq, grad_v_next, multi_step, backend, names)
    _check_fits(cfg, dtype)
    seq = dict(h_seq=h_seq, grad_s_to_h=grad_s_to_h, grad_v_to_h=grad_v_to_h)
    for name, t in seq.items():
        if t is None:
            continue
        # H is saved by the forward pass: float32 for half inputs, or kept in bfloat16
        _check_like(name, t, names[0], grad_spike_seq, grad_spike_seq.shape,
                    same_dtype=name != "h_seq")
        keep = name == "h_seq" and t.dtype in impl.h_dtypes
        seq[name] = _prepared(t, t.dtype if keep else dtype)
    if seq["h_seq"] is None and (seq["grad_s_to_h"] is None or seq["grad_v_to_h"] is None):
        raise ValueError("backward needs h_seq, or both grad_s_to_h and grad_v_to_h")
    if seq["h_seq"] is not None and (grad_s_to_h is not None or grad_v_to_h is not None):
        raise ValueError("backward takes h_seq or the pair grad_s_to_h, grad_v_to_h, not both "
                         "(they are two routes to the same gradients)")
    grad_x, grad_v = impl.backward(grad_spike, grad_v_last, cfg, steps, **seq,
                                   state_shape=step_shape)
    return _to_caller(grad_spike_seq.dtype, dtype, grad_x, grad_v)


def backward_saved(grad_spike_seq, grad_v_next, cfg, h_seq, *, multi_step, backend,
                   learnable_tau=False, v_init=None):
    """:func:`backward` from saved H, for the autograd Functions' backward only; with
    ``learnable_tau`` it is :func:`backward_plif` (``v_init``: V[-1] as the forward saved it, or
    None for a fresh state) and returns ``(grad_x, grad_v, dL/d(1/τ))``.

    There autograd has already matched the incoming gradients to the forward's outputs (shape,
    dtype, device) and ``h_seq`` and ``v_init`` are what that forward saved, so the checks of
    :func:`backward` are skipped; the tensors are still made contiguous (autograd passes
    expanded gradients, e.g. from ``sum()``) and computed in the backend's dtype.
    ``grad_v_next`` may be None (zero).
    """
    impl = resolve_backend(backend, grad_spike_seq.device)
    dtype = _compute_dtype(impl, "grad_spike_seq", grad_spike_seq.dtype)
    steps, step_shape = layout(grad_spike_seq.shape, multi_step)
    grad_spike = _prepared(grad_spike_seq, dtype)
    grad_v_next = None if grad_v_next is None else _prepared(grad_v_next, dtype)
    if not learnable_tau:
        grad_x, grad_v = impl.backward(grad_spike, grad_v_next, cfg, steps, h_seq=h_seq,
                                       state_shape=step_shape)
        return _to_caller(grad_spike_seq.dtype, dtype, grad_x, grad_v)
    return _backward_plif(impl, dtype, steps, step_shape, grad_spike_seq.dtype, grad_spike,
                          grad_v_next, h_seq, v_init, cfg)


def _backward_plif(impl, dtype, steps, step_shape, caller_dtype, grad_spike, grad_v_next, h_seq,
                   v_init, cfg):
    """The learnable-1/τ backward on prepared gradients: H and V[-1] (None: at rest) in the
    compute dtype, results back in the caller's."""
    v_init = (_rest_upcast(caller_dtype, dtype, cfg.v_rest, step_shape, grad_spike.device)
              if v_init is None else _prepared(v_init, dtype))
    grad_x, grad_v, grad_rtau = impl.backward_plif(
        grad_spike, grad_v_next, _prepared(h_seq, dtype), v_init, cfg, steps,
        state_shape=step_shape)
    return (*_to_caller(caller_dtype, dtype, grad_x, grad_v), grad_rtau)


def backward_plif(grad_spike_seq, grad_v_next, cfg, *, h_seq, v_init, multi_step=True,
                  backend=None):
    """BPTT from saved H for a learnable 1/τ (ParametricLIF). ``v_init`` is V[-1], the potential
    the forward pass started from, or ``None``: every neuron started at rest. Returns
    ``(grad_x_seq, grad_v, grad_reciprocal_tau)``, the last a 0-d float64 tensor: dL/d(1/τ)
    summed over neurons and time steps."""
    cfg.check_learnable_tau()
    impl, dtype, steps, step_shape, grad_spike, grad_v_last = _gradient_inputs(
        grad_spike_seq, grad_v_next, multi_step, backend, ("grad_spike_seq", "grad_v_next"))
    _check_fits(cfg, dtype)
    _check_like("h_seq", h_seq, "grad_spike_seq", grad_spike_seq, grad_spike_seq.shape,
                same_dtype=False)
    if v_init is not None:
        _check_like("v_init", v_init, "grad_spike_seq", grad_spike_seq, step_shape,
                    same_dtype=False)
    return _backward_plif(impl, dtype, steps, step_shape, grad_spike_seq.dtype, grad_spike,
                          grad_v_last, h_seq, v_init, cfg)
