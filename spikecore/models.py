"""Ready-made spiking classifiers for the training job.

Every model maps a time-major input ``[T, B, C, H, W]`` to output spikes ``[T, B, classes]``;
the trainer reads out the mean over ``T`` (the firing rate) as class scores.

Neurons are picked from :data:`NEURONS` by name. Each entry is a factory
``(surrogate) -> module``; to offer a new neuron type add one line there.
"""
import math
from typing import Callable, Dict, Sequence

import torch
from torch import nn

from .nodes import MultiStepIFNode, MultiStepLIFNode
from .plif import MultiStepParametricLIFNode

__all__ = ["NEURONS", "MODELS", "SeqToANN", "build_model", "mlp", "conv"]

# name -> factory(surrogate name, alpha) returning a multi-step node
NEURONS: Dict[str, Callable[[str, float], nn.Module]] = {
    "lif": lambda sg, alpha: MultiStepLIFNode(tau=2.0, surrogate_function=sg, alpha=alpha,
                                              detach_reset=True),
    "if": lambda sg, alpha: MultiStepIFNode(surrogate_function=sg, alpha=alpha,
                                            detach_reset=True),
    "plif": lambda sg, alpha: MultiStepParametricLIFNode(init_tau=2.0, surrogate_function=sg,
                                                         alpha=alpha, detach_reset=True),
}


class SeqToANN(nn.Module):
    """Apply stateless layers to a sequence ``[T, B, ...]`` by folding ``T`` into the batch.

    An input that is the same at every step, such as the view that direct encoding makes
    (:func:`spikecore.data.direct_encode`, time stride 0), goes through the layers once, as
    ``[B, ...]``, and the result is expanded over ``T`` again (a view, no copy): the layers
    do ``1/T`` of the work and autograd sums the gradient over the steps. This assumes that the
    layers map each sample on its own and deterministically. Dropout and batch normalisation in
    training mode do not (one dropout mask would serve every step; the batch statistics would
    count each sample once instead of ``T`` times), so the shortcut stops before the first of
    them: the layers before it run once per sample, that layer and the ones after it see all
    ``T * B`` rows as usual (a convolution followed by batch normalisation: the convolution
    runs once). When the shortcut stops inside a ``Sequential``, its layers are called one by
    one, so hooks registered on that container itself do not run. ``reuse_static=False`` turns
    the shortcut off.
    """

    def __init__(self, *layers: nn.Module, reuse_static: bool = True):
        super().__init__()
        self.layers = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
        self.reuse_static = reuse_static

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reuse_static and x.dim() > 1 and x.shape[0] > 1 and x.stride(0) == 0:
            once, rest = self._split()
            if once:
                y = x[0]
                if rest:
                    for layer in once:
                        y = layer(y)
                else:   # all of them: through the container, as without the shortcut
                    y = self.layers(y)
                return _fold(rest, y.unsqueeze(0).expand(x.shape[0], *y.shape))
        return _fold([self.layers], x)

    def _split(self):
        """``(once, rest)``: the leading layers that may run once per sample, then the others
        (from the first dropout or batch normalisation in training mode on)."""
        layers = list(self.layers) if isinstance(self.layers, nn.Sequential) else [self.layers]
        for i, layer in enumerate(layers):
            if _couples_samples(layer):
                return layers[:i], layers[i:]
        return layers, []


def _fold(layers, x: torch.Tensor) -> torch.Tensor:
    """The modules ``layers`` applied in turn to ``x`` ``[T, B, ...]`` with ``T`` folded into
    the batch (none: ``x`` itself)."""
    if not layers:
        return x
    y = x.flatten(0, 1)
    for layer in layers:
        y = layer(y)
    return y.unflatten(0, x.shape[:2])


_COUPLING = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


def _couples_samples(layers: nn.Module) -> bool:
    """Whether ``layers`` hold a module in training mode whose output is random (dropout) or
    depends on the other samples of the batch (batch normalisation)."""
    return any(m.training and isinstance(m, _COUPLING) for m in layers.modules())


def _node(neuron: str, surrogate: str, alpha: float) -> nn.Module:
    try:
        return NEURONS[neuron](surrogate, alpha)
    except KeyError:
        raise ValueError(f"unknown neuron {neuron!r}; choose from {', '.join(NEURONS)}") from None


def mlp(in_shape: Sequence[int], num_classes: int, hidden: int = 128, neuron: str = "lif",
        surrogate: str = "ATan", alpha: float = 2.0) -> nn.Module:
    """Flatten → Linear → spiking → Linear → spiking."""
    return nn.Sequential(
        nn.Flatten(2),
        SeqToANN(nn.Linear(math.prod(in_shape), hidden)),
        _node(neuron, surrogate, alpha),
        SeqToANN(nn.Linear(hidden, num_classes)),
        _node(neuron, surrogate, alpha),
    )


def conv(in_shape: Sequence[int], num_classes: int, hidden: int = 16, neuron: str = "lif",
         surrogate: str = "ATan", alpha: float = 2.0) -> nn.Module:
    """Two blocks of Conv-BN-spiking-MaxPool (``hidden`` and ``2*hidden`` channels), then
    Linear → spiking. Works for any image side divisible by 4 (8x8 digits, 28x28 MNIST)."""
    c, h, w = in_shape
    if h % 4 or w % 4:
        raise ValueError(f"the conv model needs image sides divisible by 4, got {h}x{w}")
    c1, c2 = hidden, 2 * hidden
    return nn.Sequential(
        SeqToANN(nn.Conv2d(c, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1)),
        _node(neuron, surrogate, alpha),
        SeqToANN(nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1, bias=False),
                 nn.BatchNorm2d(c2)),
        _node(neuron, surrogate, alpha),
        SeqToANN(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * (h // 4) * (w // 4),
                                                          num_classes)),
        _node(neuron, surrogate, alpha),
    )


MODELS = {"mlp": mlp, "conv": conv}


def build_model(name: str, in_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Build the model ``name`` (``'mlp'`` or ``'conv'``); ``hidden=None`` keeps its default."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    if kwargs.get("hidden") is None:
        kwargs.pop("hidden", None)
    return MODELS[name](tuple(in_shape), num_classes, **kwargs)
