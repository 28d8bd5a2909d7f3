"""Helpers shared by the CPU benchmarks: interleaved timing, copy bandwidth, tables, peers.

Timings on a shared machine drift, so every benchmark here runs its candidates in ONE process,
round-robin (one call of each candidate per repetition, in turn), and reports medians and
ratios measured side by side.
"""
import gc
import os
import platform
import statistics
import sys
import time
from typing import Callable, List, Optional

import numpy as np
import torch

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


# --- environment ---------------------------------------------------------------------------------
def allocator() -> str:
    """Which malloc this process runs under (by LD_PRELOAD / the mapped libraries)."""
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
    except OSError:
        maps = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if name in maps:
            conf = os.environ.get("MALLOC_CONF", "")
            return name + (f" (MALLOC_CONF={conf})" if conf else "") + _huge_pages()
    return "glibc malloc" + _huge_pages()


def _huge_pages() -> str:
    """PyTorch backs CPU tensors of 2 MiB and more with transparent huge pages when
    THP_MEM_ALLOC_ENABLE=1 (benchmarks/run_with_allocator.sh sets it under jemalloc)."""
    return ", huge pages (THP_MEM_ALLOC_ENABLE=1)" if os.environ.get(
        "THP_MEM_ALLOC_ENABLE") == "1" else ""


def load_average() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def header(title: str, threads: int) -> None:
    la = load_average()
    print(f"# {title}")
    print(f"# torch {torch.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, threads={threads}, allocator: {allocator()}, "
          f"load average {'?' if la is None else f'{la:.2f}'}")
    try:
        from spikecore import _cpu_kernels as kernels
        print(f"# spikecore CPU kernels: {kernels.vector_isa()} vectors, OpenMP "
              f"{'on' if kernels.openmp_enabled() else 'off'}, streaming stores from "
              f"{kernels.stream_min_bytes() / 2**20:g} MiB per [T, N] output")
    except ImportError:
        print("# spikecore CPU kernels: not built")
    if la is not None and la > 0.5 + (os.cpu_count() or 1) - threads:
        print(f"# WARNING: load average {la:.2f} is high for {threads} thread(s) on "
              f"{os.cpu_count()} CPUs; timings may be noisy, consider repeating the run")


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # for anything started later


# --- timing ---------------------------------------------------------------------------------------
class Candidate:
    """A named callable timed by :func:`interleave`; ``skip`` holds why it cannot run."""

    def __init__(self, name: str, fn: Optional[Callable[[], object]], skip: Optional[str] = None,
                 note: str = ""):
        self.name, self.fn, self.skip, self.note = name, fn, skip, note
        self.times: List[float] = []

    @property
    def median(self) -> float:
        return statistics.median(self.times) if self.times else float("nan")


def interleave(candidates: List[Candidate], repeat: int, warmup: int = 1) -> None:
    """Round-robin: per repetition call each runnable candidate once; record wall times.

    The order rotates every repetition so that no candidate always follows the same one.
    A candidate that raises is marked skipped with the error.
    """
    gc.collect()
    gc.freeze()  # the objects alive now are never collected: keeps gc.collect() below cheap
    live = [c for c in candidates if c.skip is None]
    for c in live:
        for _ in range(warmup):
            try:
                c.fn()
            except Exception as exc:  # noqa: BLE001 - report and continue
                c.skip = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
                break
    live = [c for c in live if c.skip is None]
    for r in range(repeat):
        k = r % max(1, len(live))
        for c in live[k:] + live[:k]:
            gc.collect()
            t0 = time.perf_counter()
            c.fn()
            c.times.append(time.perf_counter() - t0)


def copy_candidates(n_bytes: int, threads: int) -> List[Candidate]:
    """Copies of ``n_bytes`` (src and dst allocated and touched once, beforehand): numpy
    ``np.copyto``, torch ``copy_``, and spikecore's own store path with streaming (non-temporal)
    stores, the fastest way to write memory that is not read back soon. The kernels write their
    large outputs that way, so a floor from plain copies alone (which first read every
    destination line) would be too lenient. Bandwidth = (read + write) bytes / time."""
    from spikecore import _cpu_kernels

    n = max(1, n_bytes // 4)
    src = torch.rand(n)
    dst = torch.empty_like(src)
    dst.zero_()
    s_np, d_np = src.numpy(), dst.numpy()
    s_u8, d_u8 = s_np.view(np.uint8), d_np.view(np.uint8)
    return [Candidate("copy numpy", lambda: np.copyto(d_np, s_np)),
            Candidate("copy torch", lambda: dst.copy_(src)),
            Candidate("copy streaming", lambda: _cpu_kernels.copy_bytes(s_u8, d_u8, True, threads))]


def bandwidth(copies: List[Candidate], n_bytes: int) -> float:
    """Best median copy bandwidth of ``copies`` in bytes/s, counting read + write."""
    meds = [c.median for c in copies if c.times]
    return 2 * (max(1, n_bytes // 4) * 4) / min(meds)


# --- output ------------------------------------------------------------------------------------
def table(rows: List[List[str]], heads: List[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    out = [line(heads), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


# --- peers ---------------------------------------------------------------------------------------
def import_spikingjelly():
    """``(neuron, surrogate, functional)`` of SpikingJelly's activation_based API, or the reason."""
    try:
        import logging
        logging.getLogger("torch._library").setLevel(logging.ERROR)
        from spikingjelly.activation_based import functional, neuron, surrogate
        return (neuron, surrogate, functional), None
    except Exception as exc:  # noqa: BLE001 - absent or broken: skip with the reason
        return None, f"spikingjelly not usable ({type(exc).__name__}: {str(exc)[:100]})"


def import_snntorch():
    try:
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import snntorch
            from snntorch import surrogate
        return (snntorch, surrogate), None
    except Exception as exc:  # noqa: BLE001
        return None, f"snntorch not usable ({type(exc).__name__}: {str(exc)[:100]})"


def peer_version(name: str) -> str:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001
        return "?"


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def flush():
    sys.stdout.flush()
