"""Adam for small networks: PyTorch's fused Adam with a short path through each step.

A training step of a small spiking network on the CPU takes about a millisecond, and
``torch.optim.Adam(fused=True).step()`` spends a tenth of it before and after its one fused
kernel: a profiler scope, hook lists, per-step state checks, grouping the tensors by device
and dtype. :class:`Adam` is that optimiser with a shorter route for the common case.

When a step has no closure and no step hooks are registered, every parameter of a group has a
gradient and its state already exists, and the group's tensors are CPU tensors of one
floating-point dtype, :meth:`Adam.step` calls the same kernel, ``torch._fused_adam_``, with the
same arguments that ``torch.optim.Adam`` would pass, so the result is bit for bit the same.
Anything else (the first step, which creates the state; a parameter without a gradient; amsgrad;
``capturable``; a gradient scaler's ``grad_scale``; hooks; ``torch.compile``; parameters on a
GPU, where this route has not been measured; a PyTorch without this kernel or without the hook
registries looked at here) takes the inherited step. The state and ``state_dict`` are those of
``torch.optim.Adam``, so checkpoints move freely between the two.
"""
import torch
from torch.optim import optimizer as _optimizer

__all__ = ["Adam"]

# hooks registered for every optimiser (register_optimizer_step_pre_hook / _post_hook)
_global_optimizer_pre_hooks = getattr(_optimizer, "_global_optimizer_pre_hooks", None)
_global_optimizer_post_hooks = getattr(_optimizer, "_global_optimizer_post_hooks", None)

_FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _probe_fused_kernel():
    """``torch._fused_adam_`` if this PyTorch has it and takes the arguments used here (tried
    once, on one-element CPU tensors), else ``None``: every step then takes the inherited
    route."""
    kernel = getattr(torch, "_fused_adam_", None)
    if kernel is None:
        return None
    param, grad, exp_avg, exp_avg_sq = (torch.zeros(1) for _ in range(4))
    try:
        kernel([param], [grad], [exp_avg], [exp_avg_sq], [], [torch.ones(())], amsgrad=False,
               lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False,
               grad_scale=None, found_inf=None)
    except (RuntimeError, TypeError, NotImplementedError):
        return None
    return kernel


_FUSED = _probe_fused_kernel()


class Adam(torch.optim.Adam):
    """``torch.optim.Adam(params, lr, fused=True, ...)`` with a shorter step (see the module).

    Args:
        params: parameters or parameter groups, as for :class:`torch.optim.Adam`.
        lr: step size.
        kwargs: the other arguments of :class:`torch.optim.Adam` (``betas``, ``eps``,
            ``weight_decay``, ``amsgrad``, ``maximize``); ``fused`` is always True.
    """

    def __init__(self, params, lr: float = 1e-3, **kwargs):
        if kwargs.pop("fused", True) is not True or kwargs.get("foreach"):
            raise ValueError("spikecore.optim.Adam is always fused; use torch.optim.Adam for "
                             "foreach or for-loop implementations")
        super().__init__(params, lr=lr, fused=True, **kwargs)

    def step(self, closure=None):
        """One Adam step; returns the closure's loss (``None`` without a closure)."""
        if (closure is not None or _FUSED is None or _global_optimizer_pre_hooks is None
                or _global_optimizer_post_hooks is None or torch.compiler.is_compiling()
                or self._optimizer_step_pre_hooks
                or self._optimizer_step_post_hooks or _global_optimizer_pre_hooks
                or _global_optimizer_post_hooks or getattr(self, "grad_scale", None) is not None
                or getattr(self, "found_inf", None) is not None):
            return _inherited_step(self, closure)
        calls = []
        for group in self.param_groups:
            if not group["params"]:   # nothing to update (the inherited step skips it too)
                continue
            args = self._fused_args(group)
            if args is None:
                return _inherited_step(self, closure)
            calls.append(args)
        with torch.no_grad():
            for args, kwargs in calls:
                torch._foreach_add_(args[5], 1)
                _FUSED(*args, **kwargs)
        return None

    def _fused_args(self, group):
        """The positional and keyword arguments of ``torch._fused_adam_`` for ``group``, or
        ``None`` where the inherited step must run."""
        if (group["amsgrad"] or group["differentiable"] or group["capturable"]
                or group.get("decoupled_weight_decay", False)):   # (absent in older torch)
            return None
        params = group["params"]
        device, dtype = params[0].device, params[0].dtype
        if dtype not in _FLOATS or device.type != "cpu":
            return None
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        state = self.state
        for p in params:
            g = p.grad
            s = state.get(p)
            if g is None or not s:
                return None
            if (g.layout is not torch.strided or p.dtype != dtype or g.dtype != dtype
                    or p.device != device or g.device != device):
                return None
            grads.append(g)
            exp_avgs.append(s["exp_avg"])
            exp_avg_sqs.append(s["exp_avg_sq"])
            steps.append(s["step"])
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.device.type != "cpu":
            return None
        beta1, beta2 = group["betas"]
        return ((params, grads, exp_avgs, exp_avg_sqs, [], steps),
                dict(amsgrad=False, lr=lr, beta1=float(beta1), beta2=float(beta2),
                     weight_decay=group["weight_decay"], eps=group["eps"],
                     maximize=group["maximize"], grad_scale=None, found_inf=None))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (``set_to_none=False``: fill them with zeros instead)."""
        if not set_to_none:
            return super().zero_grad(set_to_none=False)
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None


# torch.optim.Optimizer wraps the step of each optimiser class it meets (once per class) in a
# profiler scope that also runs the step hooks. Here only the inherited step, the route taken
# whenever a hook is registered, is wrapped so; the marker keeps the wrapper off the short one.
Adam.step.hooked = True
_adam_step = torch.optim.Adam.step   # already wrapped once a torch.optim.Adam has been made
_inherited_step = torch.optim.Optimizer.profile_hook_step(
    _adam_step.__wrapped__ if getattr(_adam_step, "hooked", False) else _adam_step)
