"""The files of a training run (:func:`spikecore.train.fit`): the checkpoint written after
every epoch, and the metrics.

* ``checkpoint.pt`` holds the model and optimizer states, the history and the RNG states; it is
  written to a temporary file first and renamed, so a crash never leaves half of one, and it
  holds no numpy objects, so it loads with ``torch.load(..., weights_only=True)``;
* ``metrics.csv`` and ``metrics.json`` hold one row per epoch (:data:`COLUMNS`).
"""
import csv
import json
import os
import random
from typing import List

import numpy as np
import torch

__all__ = ["CHECKPOINT", "COLUMNS", "rng_state", "set_rng_state", "atomic_save", "checkpoint",
           "read_checkpoint", "write_metrics"]

CHECKPOINT = "checkpoint.pt"
_FORMAT = "spikecore-train/1"
COLUMNS = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time_s",
           "samples_per_s")


def rng_state() -> dict:
    """The RNG states of torch, Python and numpy (and CUDA when it is in use), in tensors and
    plain values. The data order and the Poisson draws need no state: each epoch makes its own
    from (seed, epoch, rank)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                       float(gauss))}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    random.setstate(_tuplify(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x):
    return tuple(_tuplify(i) for i in x) if isinstance(x, (list, tuple)) else x


def atomic_save(obj, path: str):
    """``torch.save(obj, path)`` through a temporary file and a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint(epoch: int, config: dict, model, optimizer, history: List[dict]) -> dict:
    """The contents of ``checkpoint.pt`` after ``epoch``."""
    return {"format": _FORMAT, "epoch": epoch, "config": config, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "history": history, "rng": rng_state()}


def read_checkpoint(path: str) -> dict:
    """What :func:`checkpoint` made, read back; ValueError, with the reason, for a file that
    cannot be read or is not a spikecore training checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read checkpoint {path}: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    if not isinstance(ckpt, dict) or ckpt.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a spikecore training checkpoint")
    return ckpt


def write_metrics(out_dir: str, history: List[dict]):
    """``metrics.json`` and ``metrics.csv`` in ``out_dir`` (each replaced whole)."""
    for name, write in (("metrics.json", lambda f: json.dump(history, f, indent=1)),
                        ("metrics.csv", lambda f: _csv(f, history))):
        path = os.path.join(out_dir, name)
        with open(path + ".tmp", "w", newline="") as f:
            write(f)
        os.replace(path + ".tmp", path)


def _csv(f, history):
    w = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(history)
