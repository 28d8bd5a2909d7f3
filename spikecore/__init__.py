"""spikecore: fused surrogate-gradient BPTT kernels for spiking neural networks.

Quick start::

    import torch, spikecore
    lif = spikecore.MultiStepLIFNode(tau=2.0)
    spikes = lif(torch.rand(8, 32, 100, requires_grad=True))   # [T, batch, features]

See :mod:`spikecore.neuron` for the full kernel API and :mod:`spikecore.surrogate` for the
surrogate gradients.
"""
from . import backends, cpu_backend, checkpoint, ops, optim, reference, surrogate  # noqa: F401
from .cuda_backend import cuda_available, cuda_unavailable_reason  # noqa: F401
from .config import NeuronConfig  # noqa: F401
from .nodes import BaseNode, IFNode, LIFNode, MultiStepIFNode, MultiStepLIFNode  # noqa: F401
from .plif import MultiStepParametricLIFNode, ParametricLIFNode  # noqa: F401
from .utils import detach_net, reset_net  # noqa: F401

__version__ = "0.1.0"

__all__ = ["BaseNode", "IFNode", "LIFNode", "MultiStepIFNode", "MultiStepLIFNode",
           "ParametricLIFNode", "MultiStepParametricLIFNode",
           "NeuronConfig", "openmp_enabled", "cpu_available", "cuda_available",
           "cuda_unavailable_reason", "backends", "reference",
           "surrogate", "neuron", "ops", "optim", "checkpoint", "reset_net", "detach_net"]


def cpu_available() -> bool:
    """True when the compiled CPU backend (Cython/OpenMP) is importable."""
    return backends.available("cpu")


def openmp_enabled() -> bool:
    """True when the CPU backend was built with OpenMP (False: serial build or not built)."""
    if not cpu_available():
        return False
    from . import _cpu_kernels
    return bool(_cpu_kernels.openmp_enabled())


from . import neuron  # noqa: E402,F401  (after the helpers above; imports the API)
