"""The ``spikecore`` console script's entry point, kept outside the package on purpose.

Importing anything inside ``spikecore`` imports the package, and with it PyTorch (about 1.7 s).
``spikecore train`` re-runs itself under jemalloc when the library is installed (see
:func:`reexec_with_jemalloc`), so deciding that here, before any import of the package, spares
the first process a PyTorch import that ``execve`` would throw away. Everything else is
:func:`spikecore.cli.main`.
"""
import os
import sys

JEMALLOC_PATHS = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
                  "/usr/lib64/libjemalloc.so.2", "/usr/local/lib/libjemalloc.so.2")
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"


def reexec_with_jemalloc(argv) -> None:
    """Re-run ``spikecore <argv>`` under jemalloc when it is installed; return if it is not.

    glibc hands blocks over 32 MiB back to the kernel when they are freed, so with large layers
    every training step pays the page faults of its fresh activations again; jemalloc configured
    to keep freed pages does not. Under jemalloc PyTorch also backs tensors of 2 MiB and more
    with transparent huge pages (``THP_MEM_ALLOC_ENABLE=1``), which the streaming kernels read
    and write with fewer TLB misses; a retaining allocator pays the costly first touch of a
    huge page once. ``SPIKECORE_NO_JEMALLOC=1`` turns all this off and
    ``SPIKECORE_JEMALLOC=/path/libjemalloc.so.2`` picks the library. ``execve`` keeps the process
    id and the environment, so torchrun workers are unaffected."""
    if not sys.platform.startswith("linux") or os.environ.get("SPIKECORE_NO_JEMALLOC") == "1":
        return
    if "jemalloc" in os.environ.get("LD_PRELOAD", ""):
        return  # already under it (this also stops a re-exec loop)
    lib = os.environ.get("SPIKECORE_JEMALLOC") or next(
        (p for p in JEMALLOC_PATHS if os.path.exists(p)), None)
    if not lib or not os.path.exists(lib):
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = lib + (":" + env["LD_PRELOAD"] if env.get("LD_PRELOAD") else "")
    env.setdefault("MALLOC_CONF", JEMALLOC_CONF)
    env.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, [sys.executable, "-m", "spikecore", *argv], env)
    except OSError:
        return  # keep running with the default allocator


def main() -> int:
    """The ``spikecore`` command: ``train`` first moves under jemalloc (see above)."""
    if sys.argv[1:2] == ["train"]:
        reexec_with_jemalloc(sys.argv[1:])
    from spikecore.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
