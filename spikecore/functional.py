r"""The kernel functions of the ``spikingjelly.cext.neuron`` API, on every backend.

These are the *teaching path*: each returns exactly the quantities of one equation set.

* ``*_forward`` / ``*_fptt``: one step / ``T`` steps of

  .. math::
      H_t = f(X_t, V_{t-1}),\quad S_t = \Theta(H_t - V_{th}),\quad
      V_t = \begin{cases} S_t V_{reset} + (1 - S_t) H_t & \text{hard reset} \\
                          H_t - S_t V_{th} & \text{soft reset} \end{cases}

  returning ``(spike, v_next)``; for ``*_fptt`` ``spike`` is ``[T, *]`` and ``v_next`` is
  :math:`V_{T-1}`.
* ``*_with_grad``: the same, also returning ``grad_s_to_h`` :math:`=\partial S_t/\partial H_t`
  :math:`= g'(H_t - V_{th})` and ``grad_v_to_h`` :math:`=\partial V_t/\partial H_t`.
* ``*_backward`` / ``*_bptt``: from :math:`\partial L/\partial S_t`, :math:`\partial L/\partial
  V_t` (of the last step) and the two local gradients, return ``(grad_x, grad_v)`` with

  .. math::
      \frac{\partial L}{\partial H_t} = \frac{\partial L}{\partial S_t}\frac{\partial S_t}
      {\partial H_t} + \frac{\partial L}{\partial V_t}\frac{\partial V_t}{\partial H_t},\quad
      \frac{\partial L}{\partial X_t} = \frac{\partial L}{\partial H_t}\frac{\partial H_t}
      {\partial X_t},\quad
      \frac{\partial L}{\partial V_{t-1}} = \frac{\partial L}{\partial H_t}\frac{\partial H_t}
      {\partial V_{t-1}}.

The ``*_template`` functions are the generic entry points: their extra positional or keyword
arguments ``(reciprocal_tau, detach_input)`` choose the LIF charge; without them the neuron is
IF. The named ``LIF_*`` and ``IF_*`` functions fix the neuron. ``v_reset=None`` selects soft
reset everywhere, and every function takes a keyword-only ``backend`` (``None`` = by device,
``'cpu'``, ``'cuda'`` or ``'reference'``).

Surrogates are chosen by ``grad_surrogate_function_index`` (see :mod:`spikecore.surrogate`):
0 ATan, 1 Sigmoid, 2 PiecewiseQuadratic, 3 SoftSign, 4 Erf, 5 SuperSpike, 6 PiecewiseExp.
"""
from . import dispatch
from .config import NeuronConfig

__all__ = [
    "hard_reset_forward_template", "hard_reset_fptt_template",
    "soft_reset_forward_template", "soft_reset_fptt_template",
    "hard_reset_forward_with_grad_template", "hard_reset_fptt_with_grad_template",
    "soft_reset_forward_with_grad_template", "soft_reset_fptt_with_grad_template",
    "backward_template", "bptt_template",
    "LIF_hard_reset_forward", "LIF_hard_reset_fptt",
    "LIF_hard_reset_forward_with_grad", "LIF_hard_reset_fptt_with_grad",
    "LIF_soft_reset_forward", "LIF_soft_reset_fptt",
    "LIF_soft_reset_forward_with_grad", "LIF_soft_reset_fptt_with_grad",
    "LIF_backward", "LIF_bptt",
    "IF_hard_reset_forward", "IF_hard_reset_fptt",
    "IF_hard_reset_forward_with_grad", "IF_hard_reset_fptt_with_grad",
    "IF_soft_reset_forward", "IF_soft_reset_fptt",
    "IF_soft_reset_forward_with_grad", "IF_soft_reset_fptt_with_grad",
    "IF_backward", "IF_bptt",
]

_EXTRA = ("reciprocal_tau", "detach_input")


def _neuron_args(func, args, kwargs):
    """Split a template's ``*args, **kwargs`` into (neuron kwargs for NeuronConfig, backend)."""
    kwargs = dict(kwargs)
    backend = kwargs.pop("backend", None)
    if len(args) > len(_EXTRA):
        raise TypeError(f"{func}() takes at most {len(_EXTRA)} extra arguments "
                        f"{_EXTRA}, got {len(args)}")
    extra = dict(zip(_EXTRA, args))
    for key, value in kwargs.items():
        if key not in _EXTRA:
            raise TypeError(f"{func}() got an unexpected keyword argument {key!r}; the neuron is "
                            f"chosen by {_EXTRA} (LIF) or nothing (IF)")
        if key in extra:
            raise TypeError(f"{func}() got multiple values for argument {key!r}")
        extra[key] = value
    if "reciprocal_tau" in extra:
        return dict(neuron="LIF", reciprocal_tau=extra["reciprocal_tau"],
                    detach_input=extra.get("detach_input", False)), backend
    if "detach_input" in extra:
        raise TypeError(f"{func}(): detach_input applies to the LIF neuron only; "
                        "pass reciprocal_tau as well")
    return dict(neuron="IF"), backend


def _fwd(func, x, v, v_threshold, v_reset, args, kwargs, multi_step, alpha=2.0,
         detach_reset=False, index=0, with_grad=False):
    neuron, backend = _neuron_args(func, args, kwargs)
    cfg = NeuronConfig.build(v_threshold=v_threshold, v_reset=v_reset, alpha=alpha,
                             surrogate=index, detach_reset=detach_reset, **neuron)
    names = ("x_seq" if multi_step else "x", "v")
    r = dispatch.forward(x, v, cfg, multi_step=multi_step, backend=backend,
                         with_grad=with_grad, names=names)
    return (r.spike, r.v_next, r.grad_s_to_h, r.grad_v_to_h) if with_grad else (r.spike, r.v_next)


def _bwd(func, grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, args, kwargs, multi_step):
    neuron, backend = _neuron_args(func, args, kwargs)
    cfg = NeuronConfig.build(v_threshold=1.0, v_reset=0.0, **neuron)
    names = ("grad_spike_seq" if multi_step else "grad_spike", "grad_v_next")
    return dispatch.backward(grad_spike, grad_v_next, cfg, grad_s_to_h=grad_s_to_h,
                             grad_v_to_h=grad_v_to_h, multi_step=multi_step, backend=backend,
                             names=names)


# --- the ten generic templates ---------------------------------------------------------------
def hard_reset_forward_template(x, v, v_threshold, v_reset, *args, **kwargs):
    """One step with hard reset (``v_reset=None``: soft). Returns ``(spike, v_next)``."""
    return _fwd("hard_reset_forward_template", x, v, v_threshold, v_reset, args, kwargs, False)


def hard_reset_fptt_template(x_seq, v, v_threshold, v_reset, *args, **kwargs):
    """``T`` steps with hard reset. Returns ``(spike_seq, v_next)``, ``v_next`` = V[T-1]."""
    return _fwd("hard_reset_fptt_template", x_seq, v, v_threshold, v_reset, args, kwargs, True)


def soft_reset_forward_template(x, v, v_threshold, *args, **kwargs):
    """One step with soft reset V = H - S·V_th. Returns ``(spike, v_next)``."""
    return _fwd("soft_reset_forward_template", x, v, v_threshold, None, args, kwargs, False)


def soft_reset_fptt_template(x_seq, v, v_threshold, *args, **kwargs):
    """``T`` steps with soft reset. Returns ``(spike_seq, v_next)``."""
    return _fwd("soft_reset_fptt_template", x_seq, v, v_threshold, None, args, kwargs, True)


def hard_reset_forward_with_grad_template(x, v, v_threshold, v_reset, alpha, detach_reset,
                                          grad_surrogate_function_index, *args, **kwargs):
    """One hard-reset step; returns ``(spike, v_next, grad_s_to_h, grad_v_to_h)`` with
    grad_v_to_h = 1 - S + (V_reset - H)·grad_s_to_h (1 - S when ``detach_reset``)."""
    return _fwd("hard_reset_forward_with_grad_template", x, v, v_threshold, v_reset, args,
                kwargs, False, alpha, detach_reset, grad_surrogate_function_index, True)


def hard_reset_fptt_with_grad_template(x_seq, v, v_threshold, v_reset, alpha, detach_reset,
                                       grad_surrogate_function_index, *args, **kwargs):
    """The multi-step :func:`hard_reset_forward_with_grad_template`; gradients are ``[T, *]``."""
    return _fwd("hard_reset_fptt_with_grad_template", x_seq, v, v_threshold, v_reset, args,
                kwargs, True, alpha, detach_reset, grad_surrogate_function_index, True)


def soft_reset_forward_with_grad_template(x, v, v_threshold, alpha, detach_reset,
                                          grad_surrogate_function_index, *args, **kwargs):
    """One soft-reset step; returns ``(spike, v_next, grad_s_to_h, grad_v_to_h)`` with
    grad_v_to_h = 1 - V_th·grad_s_to_h (1 when ``detach_reset``)."""
    return _fwd("soft_reset_forward_with_grad_template", x, v, v_threshold, None, args,
                kwargs, False, alpha, detach_reset, grad_surrogate_function_index, True)


def soft_reset_fptt_with_grad_template(x_seq, v, v_threshold, alpha, detach_reset,
                                       grad_surrogate_function_index, *args, **kwargs):
    """The multi-step :func:`soft_reset_forward_with_grad_template`."""
    return _fwd("soft_reset_fptt_with_grad_template", x_seq, v, v_threshold, None, args,
                kwargs, True, alpha, detach_reset, grad_surrogate_function_index, True)


def backward_template(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, *args, **kwargs):
    """Backward of one step. Returns ``(grad_x, grad_v)`` = (dL/dX[t], dL/dV[t-1])."""
    return _bwd("backward_template", grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, args,
                kwargs, False)


def bptt_template(grad_spike_seq, grad_v_next, grad_s_to_h, grad_v_to_h, *args, **kwargs):
    """Backward through ``T`` steps. Returns ``(grad_x_seq, grad_v)``, grad_v = dL/dV[-1]."""
    return _bwd("bptt_template", grad_spike_seq, grad_v_next, grad_s_to_h, grad_v_to_h, args,
                kwargs, True)


# --- LIF: H = V + (X - (V - V_reset))/tau, or V + X - (V - V_reset)/tau with detach_input ----
def LIF_hard_reset_forward(x, v, v_threshold, v_reset, reciprocal_tau, detach_input, *,
                           backend=None):
    """One LIF step with hard reset. Returns ``(spike, v_next)``."""
    return hard_reset_forward_template(x, v, v_threshold, v_reset, reciprocal_tau, detach_input,
                                       backend=backend)


def LIF_hard_reset_fptt(x_seq, v, v_threshold, v_reset, reciprocal_tau, detach_input, *,
                        backend=None):
    """``T`` LIF steps with hard reset. Returns ``(spike_seq, v_next)``."""
    return hard_reset_fptt_template(x_seq, v, v_threshold, v_reset, reciprocal_tau, detach_input,
                                    backend=backend)


def LIF_hard_reset_forward_with_grad(x, v, v_threshold, v_reset, alpha, detach_reset,
                                     grad_surrogate_function_index, reciprocal_tau, detach_input,
                                     *, backend=None):
    """One LIF hard-reset step with ``(spike, v_next, grad_s_to_h, grad_v_to_h)``."""
    return hard_reset_forward_with_grad_template(
        x, v, v_threshold, v_reset, alpha, detach_reset, grad_surrogate_function_index,
        reciprocal_tau, detach_input, backend=backend)


def LIF_hard_reset_fptt_with_grad(x_seq, v, v_threshold, v_reset, alpha, detach_reset,
                                  grad_surrogate_function_index, reciprocal_tau, detach_input,
                                  *, backend=None):
    """``T`` LIF hard-reset steps with ``(spike_seq, v_next, grad_s_to_h, grad_v_to_h)``."""
    return hard_reset_fptt_with_grad_template(
        x_seq, v, v_threshold, v_reset, alpha, detach_reset, grad_surrogate_function_index,
        reciprocal_tau, detach_input, backend=backend)


def LIF_soft_reset_forward(x, v, v_threshold, reciprocal_tau, detach_input, *, backend=None):
    """One LIF step with soft reset. Returns ``(spike, v_next)``."""
    return soft_reset_forward_template(x, v, v_threshold, reciprocal_tau, detach_input,
                                       backend=backend)


def LIF_soft_reset_fptt(x_seq, v, v_threshold, reciprocal_tau, detach_input, *, backend=None):
    """``T`` LIF steps with soft reset. Returns ``(spike_seq, v_next)``."""
    return soft_reset_fptt_template(x_seq, v, v_threshold, reciprocal_tau, detach_input,
                                    backend=backend)


def LIF_soft_reset_forward_with_grad(x, v, v_threshold, alpha, detach_reset,
                                     grad_surrogate_function_index, reciprocal_tau, detach_input,
                                     *, backend=None):
    """One LIF soft-reset step with ``(spike, v_next, grad_s_to_h, grad_v_to_h)``."""
    return soft_reset_forward_with_grad_template(
        x, v, v_threshold, alpha, detach_reset, grad_surrogate_function_index,
        reciprocal_tau, detach_input, backend=backend)


def LIF_soft_reset_fptt_with_grad(x_seq, v, v_threshold, alpha, detach_reset,
                                  grad_surrogate_function_index, reciprocal_tau, detach_input,
                                  *, backend=None):
    """``T`` LIF soft-reset steps with ``(spike_seq, v_next, grad_s_to_h, grad_v_to_h)``."""
    return soft_reset_fptt_with_grad_template(
        x_seq, v, v_threshold, alpha, detach_reset, grad_surrogate_function_index,
        reciprocal_tau, detach_input, backend=backend)


def LIF_backward(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau,
                 detach_input, *, backend=None):
    """Backward of one LIF step: dH/dX = 1/τ (1 with detach_input), dH/dV = 1 - 1/τ."""
    return backward_template(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau,
                             detach_input, backend=backend)


def LIF_bptt(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau, detach_input,
             *, backend=None):
    """Backward through ``T`` LIF steps; ``grad_spike`` is ``[T, *]``."""
    return bptt_template(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, reciprocal_tau,
                         detach_input, backend=backend)


# --- IF: H = V + X ---------------------------------------------------------------------------
def IF_hard_reset_forward(x, v, v_threshold, v_reset, *, backend=None):
    """One IF step with hard reset. Returns ``(spike, v_next)``."""
    return hard_reset_forward_template(x, v, v_threshold, v_reset, backend=backend)


def IF_hard_reset_fptt(x_seq, v, v_threshold, v_reset, *, backend=None):
    """``T`` IF steps with hard reset. Returns ``(spike_seq, v_next)``."""
    return hard_reset_fptt_template(x_seq, v, v_threshold, v_reset, backend=backend)


def IF_hard_reset_forward_with_grad(x, v, v_threshold, v_reset, alpha, detach_reset,
                                    grad_surrogate_function_index, *, backend=None):
    """One IF hard-reset step with ``(spike, v_next, grad_s_to_h, grad_v_to_h)``."""
    return hard_reset_forward_with_grad_template(
        x, v, v_threshold, v_reset, alpha, detach_reset, grad_surrogate_function_index,
        backend=backend)


def IF_hard_reset_fptt_with_grad(x_seq, v, v_threshold, v_reset, alpha, detach_reset,
                                 grad_surrogate_function_index, *, backend=None):
    """``T`` IF hard-reset steps with ``(spike_seq, v_next, grad_s_to_h, grad_v_to_h)``."""
    return hard_reset_fptt_with_grad_template(
        x_seq, v, v_threshold, v_reset, alpha, detach_reset, grad_surrogate_function_index,
        backend=backend)


def IF_soft_reset_forward(x, v, v_threshold, *, backend=None):
    """One IF step with soft reset. Returns ``(spike, v_next)``."""
    return soft_reset_forward_template(x, v, v_threshold, backend=backend)


def IF_soft_reset_fptt(x_seq, v, v_threshold, *, backend=None):
    """``T`` IF steps with soft reset. Returns ``(spike_seq, v_next)``."""
    return soft_reset_fptt_template(x_seq, v, v_threshold, backend=backend)


def IF_soft_reset_forward_with_grad(x, v, v_threshold, alpha, detach_reset,
                                    grad_surrogate_function_index, *, backend=None):
    """One IF soft-reset step with ``(spike, v_next, grad_s_to_h, grad_v_to_h)``."""
    return soft_reset_forward_with_grad_template(
        x, v, v_threshold, alpha, detach_reset, grad_surrogate_function_index, backend=backend)


def IF_soft_reset_fptt_with_grad(x_seq, v, v_threshold, alpha, detach_reset,
                                 grad_surrogate_function_index, *, backend=None):
    """``T`` IF soft-reset steps with ``(spike_seq, v_next, grad_s_to_h, grad_v_to_h)``."""
    return soft_reset_fptt_with_grad_template(
        x_seq, v, v_threshold, alpha, detach_reset, grad_surrogate_function_index,
        backend=backend)


def IF_backward(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, *, backend=None):
    """Backward of one IF step: dH/dX = dH/dV = 1."""
    return backward_template(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, backend=backend)


def IF_bptt(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, *, backend=None):
    """Backward through ``T`` IF steps; ``grad_spike`` is ``[T, *]``."""
    return bptt_template(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, backend=backend)
