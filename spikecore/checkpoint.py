"""Activation checkpointing for regions that contain spikecore nodes.

``torch.utils.checkpoint`` frees a region's activations after the forward pass and runs the
region again during the backward pass to get them back. A node's forward reads its state ``v``
and writes the new one, so by the time of that second run ``v`` holds what the first run left
behind: the recomputed activations start from the wrong potential, and the gradients come out
wrong without any error.

:func:`checkpoint` is ``torch.utils.checkpoint.checkpoint`` (non-reentrant) with two contexts
around the runs of the region: the first run records the state of every node as the region
found it (at the node's first call there); the second run starts every such node from that
state and puts the state the first run left back afterwards. The kernels are deterministic,
so the second run repeats the first one bit for bit, however often each node is called.

Under ``torch.compile`` the region is left out of the compiled graphs (a graph break) and runs
eagerly as described, so compiled and eager code give the same gradients.

A node called during a backward pass anywhere else (``torch.utils.checkpoint`` directly, or a
custom Function that reruns modules) raises a RuntimeError instead of computing from the wrong
state.
"""
import threading

import torch
import torch.utils.checkpoint as _torch_checkpoint

__all__ = ["checkpoint"]

_local = threading.local()   # .records: the open regions' {node: state}; .replays: a count
_lock = threading.Lock()
#: regions recording in any thread: while 0, a node's call needs no bookkeeping here
regions_open = 0
#: -1 outside a backward pass (a version of PyTorch without it never refuses a call)
graph_task_id = getattr(torch._C, "_current_graph_task_id", lambda: -1)


def checkpoint(function, *args, **kwargs):
    """``function(*args)`` under activation checkpointing, correct for spikecore nodes (see the
    module docstring). Keyword arguments go to ``torch.utils.checkpoint.checkpoint``, which
    this always runs with ``use_reentrant=False``; ``context_fn`` is taken by this function."""
    if kwargs.pop("use_reentrant", False):
        raise ValueError("spikecore.checkpoint runs torch.utils.checkpoint with "
                         "use_reentrant=False; the reentrant variant cannot restore node state")
    if "context_fn" in kwargs:
        raise ValueError("spikecore.checkpoint provides context_fn itself (it records and "
                         "restores the nodes' state)")
    if torch.compiler.is_compiling():
        # Dynamo cannot trace the state bookkeeping (its checkpoint operator takes no such
        # contexts): the region runs eagerly, between compiled graphs, with its usual semantics
        return torch.compiler.disable(checkpoint)(function, *args, **kwargs)
    entry = {}   # node -> its state when the region first called it

    def contexts():
        return _Record(entry), _Replay(entry)

    return _torch_checkpoint.checkpoint(function, *args, use_reentrant=False,
                                        context_fn=contexts, **kwargs)


def open_regions():
    """The {node: state} records of the regions open in this thread (innermost last)."""
    records = getattr(_local, "records", None)
    if records is None:
        records = _local.records = []
    return records


def replaying() -> bool:
    """True while this thread reruns a region of :func:`checkpoint` in a backward pass."""
    return getattr(_local, "replays", 0) > 0


class _Record:
    """Around the first run: nodes record their state at their first call (see
    ``BaseNode._run``)."""

    def __init__(self, entry):
        self.entry = entry

    def __enter__(self):
        global regions_open
        with _lock:
            regions_open += 1
        open_regions().append(self.entry)

    def __exit__(self, *exc):
        global regions_open
        open_regions().pop()
        with _lock:
            regions_open -= 1


class _Replay:
    """Around the second run: every recorded node starts from its recorded state; the state
    the first run left is put back afterwards."""

    def __init__(self, entry):
        self.entry = entry
        self.after_forward = {}

    def __enter__(self):
        for node, state in self.entry.items():
            self.after_forward[node] = node._state_values()
            node._load_state_values(state)
        _local.replays = getattr(_local, "replays", 0) + 1

    def __exit__(self, *exc):
        _local.replays -= 1
        for node, state in self.after_forward.items():
            node._load_state_values(state)


def check_call(node):
    """Called by a node before it runs (outside torch.compile) while a region is open or a
    backward pass runs (``regions_open``, ``graph_task_id``): records its state in this thread's
    open regions, and refuses to run inside a backward pass unless a region is being
    replayed."""
    records = getattr(_local, "records", None)
    if records:
        for entry in records:
            if node not in entry:
                entry[node] = node._state_values()
    if graph_task_id() != -1 and not replaying():
        raise RuntimeError(
            f"{type(node).__name__} was called during a backward pass, which is what "
            "torch.utils.checkpoint does when it recomputes a region: the node's state has "
            "moved on since the forward pass, so the recomputation would start from the wrong "
            "potential and give wrong gradients. Use spikecore.checkpoint.checkpoint(function, "
            "*args) instead, which restores the nodes' state for the recomputation.")
