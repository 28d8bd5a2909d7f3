"""Small helpers for training spiking networks."""
from torch import nn

from .nodes import BaseNode

__all__ = ["reset_net", "detach_net", "spiking_layers"]


def _is_spiking(module: nn.Module) -> bool:
    # A spikecore node, or any module from the spikecore package with its own reset().
    if isinstance(module, BaseNode):
        return True
    return (callable(getattr(module, "reset", None))
            and type(module).__module__.startswith("spikecore."))


def spiking_layers(model: nn.Module):
    """``(name, module)`` of every spiking neuron layer in ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if _is_spiking(m)]


def reset_net(model: nn.Module) -> nn.Module:
    """Reset the membrane potential of every spiking layer in ``model``; returns ``model``.

    Call it before each batch: the nodes keep ``v`` between calls, and a potential left over
    from the previous batch would both leak into the next one and hold on to its graph.
    """
    for _, m in spiking_layers(model):
        m.reset()
    return model


def detach_net(model: nn.Module) -> nn.Module:
    """Detach the membrane potential of every spiking layer in ``model`` from the autograd
    graph (its value stays); returns ``model``.

    Truncated BPTT: split a long sequence into chunks, and call it after each chunk's backward
    so that the next chunk starts from the same state but back-propagates no further.
    """
    for _, m in spiking_layers(model):
        detach = getattr(m, "detach", None)
        if callable(detach):
            detach()
    return model
