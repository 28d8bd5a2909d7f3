"""Datasets and spike encoders for the training job.

Datasets are loaded whole into memory as ``(images, labels)`` tensors: images float32
``[N, 1, H, W]`` scaled to ``[0, 1]``, labels int64 ``[N]``.

* ``digits``: scikit-learn's bundled 8x8 digits (1797 samples, no download), split into a
  stratified train/test set by a fixed seed.
* ``mnist`` / ``fashion-mnist``: read from ``data_dir`` in torchvision's layout
  (``<data_dir>/MNIST/raw/train-images-idx3-ubyte[.gz]`` ...), through torchvision when it
  imports, else by the IDX reader below. Nothing is downloaded unless ``download=True``.

Encoders turn a batch ``[B, ...]`` into a time-major input ``[T, B, ...]``.
"""
import gzip
import os
from typing import NamedTuple, Optional

import numpy as np
import torch

__all__ = ["DataError", "Dataset", "DATASETS", "ENCODERS", "load_dataset", "read_idx",
           "write_idx", "direct_encode", "poisson_encode"]

DIGITS_SPLIT_SEED = 0     # the digits test set is the same for every training seed
DIGITS_TEST_FRACTION = 0.25


class DataError(RuntimeError):
    """The data cannot be found or read; the message says where and how to get it."""


class Dataset(NamedTuple):
    """A classification dataset held in memory: images ``[n, C, H, W]`` (float32 in [0, 1]) and
    integer labels ``[n]``, for training and for testing, with the number of classes."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int

    @property
    def in_shape(self):
        return tuple(self.train_x.shape[1:])


# --- IDX files ------------------------------------------------------------------------------
# The IDX header: two zero bytes, a type code, the number of dimensions, then each dimension
# as a big-endian int32; the data follow in C order, big-endian.
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed, by the ``.gz`` suffix) into an array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (gzip.BadGzipFile, EOFError) as exc:
        raise DataError(f"{path} is not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file (bad header)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path} is truncated: its header announces {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">i4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    offset = 4 + 4 * ndim
    if len(raw) - offset != count * dtype.itemsize:
        raise DataError(f"{path} is truncated or corrupt: header says {dims}, "
                        f"file has {len(raw) - offset} data bytes")
    return np.frombuffer(raw, dtype, count, offset).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (uint8 or the other IDX types); gzip if ``.gz``."""
    array = np.asarray(array)
    code = next((c for c, t in _IDX_TYPES.items()
                 if np.dtype(t).newbyteorder("=") == array.dtype.newbyteorder("=")), None)
    if code is None:
        raise ValueError(f"IDX has no type code for {array.dtype}")
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    data = array.astype(np.dtype(_IDX_TYPES[code])).tobytes()
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + data)


# --- datasets -------------------------------------------------------------------------------
def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, stratify=y,
                                          random_state=DIGITS_SPLIT_SEED)
    t = torch.from_numpy
    return Dataset("digits", t(xtr), t(ytr).long(), t(xte), t(yte).long(), 10)


# torchvision class and folder for each IDX dataset
_IDX_SETS = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST")}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find(raw_dir: str, stem: str) -> Optional[str]:
    for name in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(raw_dir, name)):
            return os.path.join(raw_dir, name)
    return None


def _import_torchvision():
    """torchvision's datasets module, or the reason it cannot be used."""
    try:
        from torchvision import datasets
        return datasets, None
    except Exception as exc:  # absent, or built for another torch (fails at import)
        return None, f"{type(exc).__name__}: {exc}".splitlines()[0]


def torchvision_requirement() -> str:
    """The pip requirement of the torchvision release built for the installed torch (torch 2.x
    pairs with torchvision 0.(x + 15)); an unpinned ``pip install torchvision`` would replace
    torch with the newest release, and a CPU build with a CUDA one."""
    major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if major != 2:
        return "torchvision (the release that matches your torch)"
    return f'"torchvision==0.{minor + 15}.*"'


def _idx_dataset(name: str, data_dir: str, download: bool) -> Dataset:
    cls_name, folder = _IDX_SETS[name]
    raw_dir = os.path.join(data_dir, folder, "raw")
    tv, tv_error = _import_torchvision()
    if download and tv is None:
        raise DataError(f"--download needs torchvision, which does not import ({tv_error}); "
                        f"install the one that matches your torch (pip install "
                        f"{torchvision_requirement()}), or put the IDX files in {raw_dir}")
    splits = {}
    if tv is not None:
        try:
            for split in ("train", "test"):
                ds = getattr(tv, cls_name)(root=data_dir, train=split == "train",
                                           download=download)
                splits[split] = (ds.data.numpy(), ds.targets.numpy())
        except RuntimeError:  # not found: the reader below gives the clear message
            if download:
                raise
            splits = {}
    if not splits:
        for split, stems in _IDX_FILES.items():
            paths = [_find(raw_dir, s) for s in stems]
            if None in paths:
                missing = stems[paths.index(None)]
                raise DataError(f"{name} not found: no {missing}[.gz] in {raw_dir}; put the IDX "
                                f"files there or add --download (needs torchvision)")
            splits[split] = (read_idx(paths[0]), read_idx(paths[1]))
    out = []
    for split in ("train", "test"):
        images, labels = splits[split]
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise DataError(f"{name} {split} files in {raw_dir} do not match: images "
                            f"{images.shape}, labels {labels.shape}")
        out += [torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1),
                torch.from_numpy(labels.astype(np.int64))]
    return Dataset(name, *out, 10)


DATASETS = ("digits", "mnist", "fashion-mnist")


def load_dataset(name: str = "digits", data_dir: str = "data", download: bool = False) -> Dataset:
    """Load ``name`` (see :data:`DATASETS`); raises :class:`DataError` with a clear message."""
    if name == "digits":
        return _digits()
    if name in _IDX_SETS:
        return _idx_dataset(name, data_dir, download)
    raise DataError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


# --- encoders -------------------------------------------------------------------------------
def direct_encode(x: torch.Tensor, timesteps: int, generator=None) -> torch.Tensor:
    """The image itself as a constant input current at every step: ``[T, B, ...]``."""
    return x.unsqueeze(0).expand(timesteps, *x.shape)


def poisson_encode(x: torch.Tensor, timesteps: int, generator=None) -> torch.Tensor:
    """Rate coding: at each step a pixel spikes with probability equal to its intensity."""
    u = torch.rand((timesteps, *x.shape), generator=generator)  # on the generator's device
    return (u.to(x.device) < x.clamp(0, 1)).to(x.dtype)


ENCODERS = {"direct": direct_encode, "poisson": poisson_encode}
