"""Neuron layers (``torch.nn.Module``) that keep the membrane potential between calls.

Single-step nodes (:class:`IFNode`, :class:`LIFNode`) take one time step ``[*]`` per call;
multi-step nodes (:class:`MultiStepIFNode`, :class:`MultiStepLIFNode`) take a whole time-major
sequence ``[T, *]``. All return spikes of the input's shape and dtype and leave the potential
after the last step in ``self.v``.

State. ``self.v`` starts as the float ``v_reset`` (0.0 under soft reset, ``v_reset=None``); the
first call broadcasts it to the input's shape (inside the kernel), after which ``v`` is a tensor
until :meth:`BaseNode.reset` puts the float back. Call ``reset()`` (or
:func:`spikecore.utils.reset_net`) between independent samples, and
:meth:`BaseNode.detach` (or :func:`spikecore.utils.detach_net`) to cut the graph behind ``v``
for truncated BPTT. ``v`` is a plain attribute, not a buffer: it is not in ``state_dict`` and
DistributedDataParallel does not broadcast it (each process keeps its own), yet ``.to()``,
``.cuda()``, ``.double()`` and ``.half()`` move and cast it with the parameters. Multi-step nodes
built with ``store_v_seq=True`` also keep the potential after every step, ``[T, *]``, in
``self.v_seq`` (a record of the state: it carries no gradient).

``state_dict`` holds what the module learns: parameters and buffers (none for IF/LIF, whose
constants are constructor arguments and shown by ``repr``; a learnable time constant would be a
parameter). The potential is transient state and never saved.

Routes. When a gradient is needed (grad mode on and the input or ``v`` requires grad) a node
runs :class:`spikecore.autograd.NeuronFunction`, which saves only H (on the CPU, small layers
save their input instead and the backward recomputes H; see :class:`spikecore.backends.Plan`);
otherwise
(``torch.no_grad()``, inference) it runs the forward-only kernel, which saves nothing. The first
call checks its tensors and makes a :class:`spikecore.backends.Plan` for calls like it
(:func:`spikecore.dispatch.plan`); that call and the later ones with tensors of the same shape,
dtype and device run through the plan (:class:`spikecore.autograd.PlannedNeuronFunction`, or
:class:`~spikecore.autograd.PlannedParametricNeuronFunction` for a learnable τ, when a gradient
is needed) and skip the checks, which are most of a small layer's time in Python. Under
``torch.compile`` the same kernels run as the custom operators of :mod:`spikecore.ops`, so a
network of nodes compiles without graph breaks. Under autocast the kernel receives the input in
the dtype autocast gave it (a stored ``v`` of another dtype is cast to it): half-precision
kernels on CUDA, float32 arithmetic on the CPU, spikes in the input's dtype either way.
"""
import torch
from torch import nn

from . import checkpoint as _checkpoint
from . import dispatch, ops
from .autograd import PlannedNeuronFunction, PlannedParametricNeuronFunction
from . import surrogate as _surrogate
from .config import NeuronConfig, check_reciprocal_tau, check_tau

__all__ = ["BaseNode", "IFNode", "MultiStepIFNode", "LIFNode", "MultiStepLIFNode"]

# a node's state: the potential V and, when kept, the potential after every step
_STATE = ("v", "v_seq")
#: attributes set as plain values without retiring the plan: the state, and the mode that
#: train()/eval() switch (every epoch's evaluation), which the plan does not depend on
_KEEP_PLAN = _STATE + ("training",)
_graph_task_id = _checkpoint.graph_task_id   # -1 outside a backward pass


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
        #: keep the potential after every step in ``v_seq`` (multi-step nodes)
        self.store_v_seq = False
        #: the dtype of the H saved for backward, None for the compute dtype; ``torch.bfloat16``
        #: halves the memory autograd keeps per layer (CPU, float32, eager IF/LIF)
        self.saved_h_dtype = None
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
        cfg = self.__dict__.get("_config")
        if cfg is None:
            cfg = self.__dict__["_config"] = self._build_config()
        return cfg

    def _initial_v(self) -> float:
        return 0.0 if self.v_reset is None else float(self.v_reset)

    def reset(self):
        """Forget the state: ``v`` becomes ``v_reset`` again (0.0 under soft reset)."""
        self.v = self._initial_v()
        self.v_seq = None

    def detach(self):
        """Cut the autograd graph behind ``v`` (truncated BPTT); the values stay. Returns self."""
        if isinstance(self.v, torch.Tensor):
            self.v = self.v.detach()
        return self

    def extra_repr(self):
        text = (f"v_threshold={self.v_threshold}, v_reset={self.v_reset}, "
                f"surrogate_function={self.surrogate_function!r}, alpha={self.alpha}, "
                f"detach_reset={self.detach_reset}, backend={self.backend!r}")
        if self.multi_step:
            text += f", store_v_seq={self.store_v_seq}"
        return text

    # -- the state follows the module ------------------------------------------------------
    def __setattr__(self, name, value):
        # The state is set on every call and every reset; nn.Module.__setattr__ would first look
        # it up among parameters, buffers and submodules (about a microsecond). It is none of
        # those: a plain attribute, as _apply and __getstate__ below expect. So is ``training``
        # (nn.Module keeps it in __dict__ too).
        if name in _KEEP_PLAN:
            self.__dict__[name] = value
            return
        super().__setattr__(name, value)
        # any other change (config, backend, saved_h_dtype, store_v_seq, ...) retires the plan
        self.__dict__["_plan"] = None
        if name in self._config_attrs:   # the cached config is out of date
            self.__dict__["_config"] = None

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .double(), .half(): move and cast the potential with the parameters
        super()._apply(fn, *args, **kwargs)
        for name in _STATE:
            t = self.__dict__.get(name)
            if isinstance(t, torch.Tensor):
                self.__dict__[name] = fn(t)
        return self

    def __getstate__(self):
        # copy.deepcopy and pickle: keep the values of the state, not the graph behind them
        state = super().__getstate__().copy()
        state["_plan"] = None   # made again on the next call
        for name in _STATE:
            t = state.get(name)
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                state[name] = t.detach()
        return state

    def _state_values(self):
        """The state (``v``, ``v_seq``) as a tuple, for :meth:`_load_state_values`
        (:mod:`spikecore.checkpoint` saves and restores it around a recomputation)."""
        state = self.__dict__
        return tuple(state.get(name) for name in _STATE)

    def _load_state_values(self, values):
        for name, value in zip(_STATE, values):
            self.__dict__[name] = value

    def _replicate_for_data_parallel(self):
        # DataParallel rebuilds its replicas on every call and scatters the batch, so a replica
        # starts from the fresh state on its own device rather than sharing this module's v.
        replica = super()._replicate_for_data_parallel()
        replica.v, replica.v_seq = self._initial_v(), None
        return replica

    # -- the kernels -------------------------------------------------------------------------
    def _reciprocal_tau_tensor(self):
        """A 0-d tensor k = 1/τ that replaces the config's float, for a learnable time constant
        (see :mod:`spikecore.ops`); ``None`` here."""
        return None

    def _run(self, x):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor input, "
                            f"got {type(x).__name__}")
        if self.multi_step and x.dim() == 0:
            raise ValueError(f"{type(self).__name__} expects a [T, *] input, got a 0-d tensor")
        compiling = torch.compiler.is_compiling()
        if not compiling and (_checkpoint.regions_open or _graph_task_id() != -1):
            _checkpoint.check_call(self)   # activation checkpointing (spikecore.checkpoint)
        state = self.__dict__   # v and v_seq: plain attributes (see __setattr__)
        v = state["v"]
        if (isinstance(v, torch.Tensor) and v.dtype != x.dtype
                and torch.is_autocast_enabled(x.device.type)):
            v = v.to(x.dtype)   # the state follows the dtype autocast chose for the input
        try:
            out = None if compiling else self._run_planned(x, v)
            if out is not None:
                state["v"] = out[1]
                return out[0]
            spike, v_next, v_seq = ops.neuron(
                x, v, self.config(), multi_step=self.multi_step, backend=self.backend,
                reciprocal_tau=self._reciprocal_tau_tensor(),
                save_v=self.multi_step and self.store_v_seq, h_dtype=self.saved_h_dtype,
                names=self._names())
        except ValueError as exc:
            step_shape = x.shape[1:] if self.multi_step else x.shape
            if isinstance(v, torch.Tensor) and v.shape != step_shape:
                # the usual cause: a batch of another size without a reset in between
                raise ValueError(
                    f"{type(self).__name__}: the input has neurons of shape {tuple(step_shape)}"
                    f" but the potential v left by the previous call has shape "
                    f"{tuple(v.shape)}; call reset() on the node (or spikecore.reset_net(model)"
                    ") before each new batch") from exc
            raise
        state["v"] = v_next
        if v_seq is not None:
            state["v_seq"] = v_seq
        return spike

    def _names(self):
        return ("dv_seq" if self.multi_step else "dv", "v")

    def _run_planned(self, x, v):
        """``(spike, v_next)`` through the node's :class:`~spikecore.backends.Plan`, made by the
        first call that can use one and kept while the calls stay alike (any change of the
        node's attributes retires it); ``None`` where the general route must run: while
        keeping ``v_seq``, for a fresh 16-bit state that must be filled in (a V_r the dtype
        does not hold; other 16-bit calls on the CPU get a plan that casts), from a float state
        other than the rest potential, or with a learnable τ and H kept in bfloat16 (which the
        general route refuses). (Under torch.compile the caller takes the general route.)"""
        plan = self.__dict__.get("_plan")
        if not isinstance(v, torch.Tensor):
            if v != (self.config() if plan is None else plan.cfg).v_rest:
                return None
            v = None
        if plan is None or not plan.accepts(x, v):
            if (self.store_v_seq and self.multi_step) or (
                    self.saved_h_dtype is not None and self._learns_tau()):
                return None
            plan = self.__dict__["_plan"] = dispatch.plan(
                x, v, self.config(), multi_step=self.multi_step, backend=self.backend,
                h_dtype=self.saved_h_dtype, names=self._names())
            if plan is None:
                return None
        k = self._reciprocal_tau_tensor()
        if torch.is_grad_enabled() and (x.requires_grad or (v is not None and v.requires_grad)
                                        or (k is not None and k.requires_grad)):
            if k is None:
                return PlannedNeuronFunction.apply(x, v, plan)
            return PlannedParametricNeuronFunction.apply(x, v, k, plan)
        k_value = None if k is None else check_reciprocal_tau(float(k))
        return plan.forward(x, v, save_h=False, reciprocal_tau=k_value)[:2]

    def _learns_tau(self):
        return type(self)._reciprocal_tau_tensor is not BaseNode._reciprocal_tau_tensor

    def forward(self, dv: torch.Tensor) -> torch.Tensor:
        """One step: ``dv`` ``[*]`` is the input current X[t]; returns S[t] and updates ``v``."""
        return self._run(dv)


class IFNode(BaseNode):
    """Integrate-and-fire neuron, one step per call: H = V + X."""


class MultiStepIFNode(IFNode):
    """Integrate-and-fire neuron over a whole sequence ``[T, *]`` per call.

    Args:
        store_v_seq: also keep the potential after every step, ``[T, *]``, in ``self.v_seq``.
        Others: as :class:`BaseNode`.
    """

    multi_step = True

    def __init__(self, v_threshold=1.0, v_reset=0.0, surrogate_function="ATan", alpha=2.0,
                 detach_reset=False, *, backend=None, store_v_seq=False):
        super().__init__(v_threshold, v_reset, surrogate_function, alpha, detach_reset,
                         backend=backend)
        self.store_v_seq = store_v_seq

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
        self.tau = check_tau("tau", tau)
        self.detach_input = detach_input
        super().__init__(v_threshold, v_reset, surrogate_function, alpha, detach_reset,
                         backend=backend)

    def _build_config(self) -> NeuronConfig:
        return NeuronConfig.build("LIF", self.v_threshold, self.v_reset,
                                  1.0 / check_tau("tau", self.tau),
                                  self.detach_input, self.alpha, self.surrogate_function,
                                  self.detach_reset)

    def extra_repr(self):
        return f"tau={self.tau}, detach_input={self.detach_input}, " + super().extra_repr()


class MultiStepLIFNode(LIFNode):
    """Leaky integrate-and-fire neuron over a whole sequence ``[T, *]`` per call.

    Args:
        store_v_seq: also keep the potential after every step, ``[T, *]``, in ``self.v_seq``.
        Others: as :class:`LIFNode`.
    """

    multi_step = True

    def __init__(self, tau=100.0, detach_input=False, v_threshold=1.0, v_reset=0.0,
                 surrogate_function="ATan", alpha=2.0, detach_reset=False, *, backend=None,
                 store_v_seq=False):
        super().__init__(tau, detach_input, v_threshold, v_reset, surrogate_function, alpha,
                         detach_reset, backend=backend)
        self.store_v_seq = store_v_seq

    def forward(self, dv_seq: torch.Tensor) -> torch.Tensor:
        """``dv_seq`` ``[T, *]``; returns spikes ``[T, *]``, ``v`` becomes V[T-1]."""
        return self._run(dv_seq)
