"""The scalar arguments are passed by position: the Python side's named orderings
(``config.KERNEL_ARG_NAMES`` for the compiled kernels, ``ops.OP_SCALAR_NAMES`` for the custom
operators) must be the order the kernels and operators declare, or a reordering on one side
would swap, say, the threshold and V_r without any error."""
import inspect

import pytest
import torch

from spikecore import ops
from spikecore.config import KERNEL_ARG_NAMES
from helpers import make_cfg

#: the kernels' own names for the config's fields
_KERNEL_SPELLING = {"charge_mode": "mode", "hard_reset": "hard", "surrogate": "sg_index",
                    "v_rest": "v_reset"}
_EXPECTED = [_KERNEL_SPELLING.get(name, name) for name in KERNEL_ARG_NAMES]
_ENTRY_POINTS = ("forward", "backward", "backward_plif")


def _scalars_before(fn, last):
    """The eight parameter names of ``fn`` that come before ``last``."""
    names = list(inspect.signature(fn).parameters)
    end = names.index(last)
    return names[end - len(KERNEL_ARG_NAMES):end]


@pytest.mark.parametrize("entry", _ENTRY_POINTS + ("backward_from_input",
                                                    "backward_plif_from_input"))
def test_cpu_kernels_take_the_config_order(entry):
    from spikecore import _cpu_kernels as kernels
    assert _scalars_before(getattr(kernels, entry), "n_threads") == _EXPECTED


@pytest.mark.parametrize("entry", _ENTRY_POINTS)
def test_cuda_wrapper_takes_the_config_order(cuda_host, entry):
    # the wrapper the package ships, compiled against the host emulation of the kernels
    assert _scalars_before(getattr(cuda_host, entry), "device") == _EXPECTED


def test_kernel_args_follow_the_names():
    cfg = make_cfg(neuron="LIF", v_reset=-0.25, tau=4.0, surrogate_index=3, alpha=1.5,
                   detach_reset=True, detach_input=True)
    values = dict(zip(KERNEL_ARG_NAMES, cfg.kernel_args))
    assert values == {"charge_mode": cfg.charge_mode, "hard_reset": True, "detach_reset": True,
                      "surrogate": 3, "v_threshold": cfg.v_threshold, "v_rest": -0.25,
                      "reciprocal_tau": 0.25, "alpha": 1.5}
    replaced = dict(zip(KERNEL_ARG_NAMES, cfg.kernel_args_with_k(0.125)))
    assert replaced == {**values, "reciprocal_tau": 0.125}


@pytest.mark.parametrize("op", ["neuron_forward", "neuron_backward", "neuron_backward_plif"])
def test_operators_take_the_scalar_order(op):
    names = [a.name for a in getattr(torch.ops.spikecore, op).default._schema.arguments]
    start = names.index("charge_mode")
    assert tuple(names[start:start + len(ops.OP_SCALAR_NAMES)]) == ops.OP_SCALAR_NAMES


def test_config_scalars_follow_the_names():
    cfg = make_cfg(neuron="LIF", v_reset=None, tau=2.0, surrogate_index=5, alpha=3.0)
    values = dict(zip(ops.OP_SCALAR_NAMES, ops.config_scalars(cfg)))
    assert values == {"charge_mode": cfg.charge_mode, "hard_reset": False,
                      "v_threshold": cfg.v_threshold, "v_reset": 0.0, "reciprocal_tau": 0.5,
                      "alpha": 3.0, "surrogate": 5, "detach_reset": cfg.detach_reset}
