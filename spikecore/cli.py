"""Command line: ``spikecore train [options]`` (also ``python -m spikecore train``).

A thin layer over :func:`spikecore.train.fit`: it parses the options, runs the job and turns
bad input into a one-line ``spikecore train: error: ...`` with exit status 2 (the traceback
only with ``--debug``). Under ``torchrun`` the same command trains on every worker.
"""
import argparse
import math
import os
import signal
import sys

from _spikecore_cli import reexec_with_jemalloc as _reexec_with_jemalloc

from . import surrogate as _surrogate
from .data import DATASETS, ENCODERS, torchvision_requirement
from .models import MODELS, NEURONS
from .train import CHECKPOINT, DEFAULTS, TrainError, default_out_dir, fit

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage dump) and exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {value}")
    return value


def _surrogate_name(text):
    """A surrogate's name from its name in any case or its index ('atan', '0' -> 'ATan')."""
    by_lower = {name.lower(): name for name in _surrogate.NAMES}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    if text.isdigit() and int(text) < len(_surrogate.NAMES):
        return _surrogate.NAMES[int(text)]
    return text   # argparse then lists the valid choices


def _train_parser(prog="spikecore train"):
    p = _Parser(prog=prog, description="Train a spiking classifier with surrogate-gradient BPTT.")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=DATASETS, default=DEFAULTS["dataset"],
                   help="digits ships with scikit-learn; mnist and fashion-mnist are read from "
                        "--data-dir (default: %(default)s)")
    g.add_argument("--data-dir", default=DEFAULTS["data_dir"],
                   help="folder holding MNIST/ or FashionMNIST/ (torchvision layout; default: "
                        "%(default)s)")
    g.add_argument("--download", action="store_true",
                   help="download MNIST/Fashion-MNIST into --data-dir (needs the torchvision "
                        "that matches your torch: pip install "
                        f"{torchvision_requirement()})")
    g.add_argument("--encoding", choices=tuple(ENCODERS), default=DEFAULTS["encoding"],
                   help="direct: the image as a constant input current; poisson: random spikes "
                        "at the pixel intensity (default: %(default)s)")
    g.add_argument("-T", "--timesteps", type=_positive_int, default=DEFAULTS["timesteps"],
                   help="simulation steps per sample (default: %(default)s)")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=tuple(MODELS), default=DEFAULTS["model"],
                   help="default: %(default)s")
    g.add_argument("--neuron", choices=tuple(NEURONS), default=DEFAULTS["neuron"],
                   help="default: %(default)s")
    g.add_argument("--surrogate", type=_surrogate_name, choices=_surrogate.NAMES,
                   default=DEFAULTS["surrogate"],
                   help="surrogate gradient, by name (any case) or index (default: "
                        "%(default)s)")
    g.add_argument("--alpha", type=_positive_float, default=DEFAULTS["alpha"],
                   help="sharpness of the surrogate gradient; PiecewiseQuadratic's is zero "
                        "beyond 1/alpha from the threshold and learns with 0.5 here "
                        "(default: %(default)s)")
    g.add_argument("--hidden", type=_positive_int, default=None,
                   help="hidden units (mlp, default 128) or first-layer channels (conv, 16)")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=_positive_int, default=DEFAULTS["epochs"],
                   help="total epochs, counting those of a resumed run; the learning rate "
                        "decays along a cosine over them (default: %(default)s)")
    g.add_argument("--batch-size", type=_positive_int, default=DEFAULTS["batch_size"],
                   help="samples per step and process (default: %(default)s)")
    g.add_argument("--lr", type=_positive_float, default=DEFAULTS["lr"],
                   help="Adam step size of the first epoch (default: %(default)s)")
    g.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                   help="seeds the weights, the data order and the Poisson draws (default: "
                        "%(default)s)")
    g.add_argument("--device", choices=("cpu", "cuda"), default=DEFAULTS["device"],
                   help="default: %(default)s")
    g.add_argument("--threads", type=_positive_int, default=None,
                   help="torch threads per process (default: the CPUs this process may use, "
                        "divided by the processes on the machine; OMP_NUM_THREADS is not read)")
    g.add_argument("--max-steps", type=_positive_int, default=None, help=argparse.SUPPRESS)
    g = p.add_argument_group("output")
    g.add_argument("--out", default=None,
                   help="output folder for the checkpoint, metrics and plots (default: "
                        "runs/<timestamp>)")
    g.add_argument("--resume", action="store_true",
                   help="continue from the checkpoint in --out, with the same options")
    g.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    g.add_argument("--quiet", action="store_true", help="no progress bars, only the result")
    g.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def build_parser():
    """The top-level parser (``spikecore {train}``); used for --help."""
    p = _Parser(prog="spikecore", description="spikecore command line")
    sub = p.add_subparsers(dest="command", metavar="{train}")
    sub.add_parser("train", help="train a spiking classifier", add_help=False)
    return p


class _Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's preemption, ``kill``), handled like Ctrl-C."""


def _stop_on_sigterm():
    """Make SIGTERM stop training as Ctrl-C does: a message and exit status 143 instead of a
    silent death (the last finished epoch is in the checkpoint either way). Returns the previous
    handler; None where handlers cannot be set (not the main thread)."""
    def handler(signum, frame):
        raise _Terminated()
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:
        return None


def train(argv) -> int:
    parser = _train_parser()
    args = parser.parse_args(argv)
    if args.resume and args.out is None:
        parser.error("--resume needs --out DIR (the folder of the run to continue)")
    if not args.quiet and os.environ.get("RANK", "0") == "0":
        preload = os.environ.get("LD_PRELOAD", "")
        allocator = "jemalloc (kept pages)" if "jemalloc" in preload else "the C library's malloc"
        if os.environ.get("THP_MEM_ALLOC_ENABLE") == "1":
            allocator += ", huge pages for tensors of 2 MiB and more"
        print(f"spikecore: memory allocator: {allocator}")
    out_dir = args.out or default_out_dir()
    previous = _stop_on_sigterm()
    try:
        result = fit(args.model, args.dataset, epochs=args.epochs, batch_size=args.batch_size,
                     lr=args.lr, timesteps=args.timesteps, encoding=args.encoding,
                     neuron=args.neuron, surrogate=args.surrogate, hidden=args.hidden,
                     device=args.device, threads=args.threads, seed=args.seed,
                     data_dir=args.data_dir, download=args.download,
                     out_dir=out_dir, resume=args.resume,
                     quiet=args.quiet, plots=not args.no_plots, max_steps=args.max_steps,
                     alpha=args.alpha)
    except TrainError as exc:
        if args.debug:
            raise
        parser.error(str(exc))
    except KeyboardInterrupt as exc:
        how = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        if os.path.exists(os.path.join(out_dir, CHECKPOINT)):
            hint = (f"continue with the same options and --resume --out {out_dir} (the last "
                    "finished epoch is saved)")
        else:
            hint = "no epoch had finished, so nothing was saved"
        if os.environ.get("RANK", "0") == "0":   # every torchrun worker gets the signal
            print(f"\n{parser.prog}: {how}; {hint}", file=sys.stderr)
        return 143 if isinstance(exc, _Terminated) else 130
    except Exception as exc:  # a bug or an environment problem: keep it to one line too
        if args.debug:
            raise
        print(f"{parser.prog}: error: {type(exc).__name__}: {exc} (--debug shows the "
              "traceback)", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args.quiet and os.environ.get("RANK", "0") == "0":  # one line, from rank 0 only
        print(f"test accuracy {result.test_accuracy:.2%}")
    return 0


def _exit_now(code: int) -> None:
    """End a distributed worker without Python's interpreter shutdown.

    After the last collective a gloo thread of PyTorch may still be freeing the tensors it
    exchanged, and that needs the interpreter: if the interpreter is already shutting down the
    thread aborts the whole process (SIGABRT, "terminate called without an active exception"),
    now and then on a busy machine. The run's files are written and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv=None) -> int:
    """Entry point of the ``spikecore`` console script.

    From the command line (``argv`` not given) ``spikecore train`` re-runs itself under jemalloc
    when the library is installed (see ``_spikecore_cli.reexec_with_jemalloc``; the console
    script decides that before it imports the package, ``python -m spikecore`` here)."""
    from_command_line = argv is None
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "train":
        if from_command_line:
            _reexec_with_jemalloc(argv)
        code = train(argv[1:])
        if from_command_line and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            _exit_now(code)
        return code
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    parser.error(f"unknown command {argv[0]!r}; try 'spikecore train'")
    return 2


if __name__ == "__main__":
    sys.exit(main())
