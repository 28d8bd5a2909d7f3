"""Small helpers for training spiking networks."""
from torch import nn

from .nodes import BaseNode

__all__ = ["reset_net", "detach_net", "spiking_layers"]


def _is_spiking(module: nn.Module) -> bool:
    # A spikecore node, or any module of a spikecore class with a reset() method. (Looked up on
    # the class: a missing attribute of an nn.Module instance raises and catches an
    # AttributeError, a microsecond or two for every layer of the model on every reset_net.)
    if isinstance(module, BaseNode):
        return True
    cls = type(module)
    return cls.__module__.startswith("spikecore.") and callable(getattr(cls, "reset", None))


def spiking_layers(model: nn.Module):
    """``(name, module)`` of every spiking neuron layer in ``model``, in registration order."""
    return [(name, m) for name, m in model.named_modules() if _is_spiking(m)]


def reset_net(model: nn.Module) -> nn.Module:
    """Reset the membrane potential of every spiking layer in ``model``; returns ``model``.

    Call it before each batch: the nodes keep ``v`` between calls, and a potential left over
    from the previous batch would both leak into the next one and hold on to its graph.
    """
    for m in model.modules():   # (spiking_layers without the names: called every batch)
        if _is_spiking(m):
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
