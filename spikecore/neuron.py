"""The ``spikingjelly.cext.neuron`` API in one module: kernel functions, autograd Functions and
neuron nodes, with soft reset and the IF family added. Replace
``from spikingjelly.cext import neuron`` with ``from spikecore import neuron``."""
from .autograd import IFMultiStep, IFStep, LIFMultiStep, LIFStep, NeuronFunction  # noqa: F401
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .nodes import BaseNode, IFNode, LIFNode, MultiStepIFNode, MultiStepLIFNode  # noqa: F401
from .plif import MultiStepParametricLIFNode, ParametricLIFNode  # noqa: F401

__all__ = list(_functional_all) + [
    "LIFStep", "LIFMultiStep", "IFStep", "IFMultiStep", "NeuronFunction",
    "BaseNode", "LIFNode", "MultiStepLIFNode", "IFNode", "MultiStepIFNode",
    "ParametricLIFNode", "MultiStepParametricLIFNode",
]
