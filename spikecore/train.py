"""Train a spiking classifier with surrogate-gradient BPTT: the loop behind ``spikecore train``.

:func:`fit` is the whole job and works the same from a notebook, the CLI, or under
``torchrun``:

* data: a dataset from :mod:`spikecore.data`, encoded over ``timesteps`` steps;
* model: one from :mod:`spikecore.models` (or your own ``nn.Module`` mapping ``[T, B, ...]`` to
  ``[T, B, classes]``); the loss is cross-entropy on ``logit_scale`` × the mean output over T
  (the firing rate of the last layer);
* distributed: when ``WORLD_SIZE`` > 1 it joins the process group (gloo on CPU, nccl on CUDA),
  wraps the model in DistributedDataParallel and shards the data with a DistributedSampler;
  only rank 0 prints and writes files;
* outputs (when ``out_dir`` is given): ``checkpoint.pt`` after every epoch, ``metrics.csv`` /
  ``metrics.json`` and PNG plots;
* resume: the order of the data and the Poisson draws depend only on (seed, epoch, rank), and
  the checkpoint holds the model, optimizer and RNG states, so a resumed run ends with the same
  weights as an uninterrupted one. A worker restarted by torchrun resumes on its own.
"""
import json
import math
import numbers
import os
import random
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from . import backends
from . import data as _data
from . import models as _models
from . import run_files
from . import surrogate as _surrogate
from .optim import Adam
from .run_files import CHECKPOINT
from .utils import reset_net

__all__ = ["fit", "FitResult", "TrainError", "CHECKPOINT", "DEFAULTS", "make_optimizer"]

CRASH_ENV = "SPIKECORE_TEST_CRASH_AT"   # tests only: rank 1 exits once mid-way through epoch N

# The defaults of the CLI and of fit(); tuned so that the plain run reaches >= 95 % on digits
# in a few seconds on two cores.
DEFAULTS = dict(dataset="digits", model="mlp", neuron="lif", surrogate="ATan", hidden=None,
                encoding="direct", timesteps=8, epochs=15, batch_size=32, lr=1e-2,
                device="cpu", threads=None, seed=0, data_dir="data", logit_scale=5.0, alpha=2.0)

# options that must match between a checkpoint and the run that resumes it
_RESUME_KEYS = ("dataset", "model", "neuron", "surrogate", "hidden", "encoding", "timesteps",
                "batch_size", "lr", "seed", "logit_scale", "world_size", "alpha")


class TrainError(Exception):
    """Bad input (options, data, checkpoint, device): the CLI prints the message, exit 2."""


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    model: nn.Module               # the trained model (not DDP-wrapped), on its device
    history: List[dict]            # one dict of metrics per epoch
    test_accuracy: float           # after the last epoch
    best_accuracy: float
    epochs: int                    # epochs completed in total (including resumed ones)
    elapsed_s: float               # time spent in this call
    out_dir: Optional[str] = None
    config: dict = field(default_factory=dict)


# --- process setup --------------------------------------------------------------------------
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False   # we called init_process_group, so we destroy it

    @property
    def main(self):
        return self.rank == 0


def _env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _init_dist(device_type: str) -> _Dist:
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return _Dist()
    d = _Dist(_env_int("RANK", 0), world, _env_int("LOCAL_RANK", 0),
              _env_int("LOCAL_WORLD_SIZE", 1))
    if not dist.is_initialized():
        # Keys of each torchrun attempt go under their own prefix: the store outlives a restart,
        # and a worker reading the previous attempt's gloo addresses would fail to connect.
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = _env_int("TORCHELASTIC_RESTART_COUNT", 0)
        store = dist.PrefixStore(f"spikecore/attempt{attempt}", store)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", store=store,
                                rank=rank, world_size=world)
        d.owns_group = True
    return d


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _device(name: str, d: _Dist) -> torch.device:
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda":
        raise TrainError(f"unknown device {name!r}; choose cpu or cuda")
    if not torch.cuda.is_available():
        raise TrainError("--device cuda: CUDA is not available here "
                         f"(torch {torch.__version__}, {torch.cuda.device_count()} GPUs); "
                         "use --device cpu")
    if not backends.available("cuda"):
        raise TrainError("--device cuda: the CUDA backend of spikecore is not built; rebuild "
                         "spikecore where the CUDA toolkit is found, or use --device cpu")
    torch.cuda.set_device(d.local_rank)
    return torch.device("cuda", d.local_rank)


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    # Poisson draws of one epoch on one rank: a function of (seed, epoch, rank) only.
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch, rank])
                                             .generate_state(1)[0]))


def _load_checkpoint(path: str, config: dict) -> dict:
    try:
        ckpt = run_files.read_checkpoint(path)
    except ValueError as exc:
        raise TrainError(str(exc)) from None
    saved = ckpt.get("config", {})
    # (a key that a checkpoint of an older version lacks had its default then)
    diffs = [f"{k}={saved.get(k, DEFAULTS.get(k))!r} (now {config[k]!r})" for k in _RESUME_KEYS
             if saved.get(k, DEFAULTS.get(k)) != config[k]]
    if diffs:
        raise TrainError(f"checkpoint {path} does not match this run: {', '.join(diffs)}; "
                         "resume with the options it was started with")
    return ckpt


# --- console --------------------------------------------------------------------------------
def _say(quiet: bool, msg: str):
    if not quiet:
        from tqdm import tqdm
        tqdm.write(msg, file=sys.stdout)


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    """The optimiser of ``spikecore train``: :class:`spikecore.optim.Adam`, PyTorch's fused Adam
    with a short step.

    On the CPU, PyTorch's default Adam runs about ten tensor operations per parameter and step;
    the fused one makes a single pass, and the short step skips the Python around that pass.
    For the small networks of the training command each saves about a tenth of every training
    step (``benchmarks/bench_train.py --optimizer``)."""
    return Adam(params, lr=lr)


def _cosine_lr(lr: float, epoch: int, epochs: int) -> float:
    """The step size of ``epoch`` (1-based): cosine decay from ``lr`` towards 0. A function of
    the epoch alone, so a resumed run needs no scheduler state."""
    return lr * 0.5 * (1 + math.cos(math.pi * (epoch - 1) / epochs))


# --- one epoch ------------------------------------------------------------------------------
def _readout(out: torch.Tensor, scale: float) -> torch.Tensor:
    # [T, B, classes] -> mean over T (the firing rate); a model may also return [B, classes].
    return (out.mean(0) if out.dim() == 3 else out) * scale


def _all_sum(values, d: _Dist, device):
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if d.world > 1:
        dist.all_reduce(t)
    return t.tolist()


def _evaluate(net, x, y, cfg, encode, d, device, batch=256):
    """Test loss and accuracy; each rank scores every world-th sample, the sums are reduced."""
    net.eval()
    idx = torch.arange(d.rank, len(y), d.world)
    gen = _epoch_generator(cfg["seed"], 0, d.rank)   # epoch 0: the same draws every evaluation
    loss_sum = correct = 0.0
    with torch.no_grad():
        for i in range(0, len(idx), batch):
            j = idx[i:i + batch]
            reset_net(net)
            logits = _readout(net(encode(x[j], cfg["timesteps"], gen).to(device)),
                              cfg["logit_scale"])
            target = y[j].to(device)
            loss_sum += F.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    loss_sum, correct, n = _all_sum([loss_sum, correct, len(idx)], d, device)
    return loss_sum / n, correct / n


def _maybe_crash(epoch, step, steps, out_dir, d):
    # Test hook: simulate a worker dying half-way through an epoch, once per output folder.
    at = os.environ.get(CRASH_ENV)
    if not at or out_dir is None or int(at) != epoch or step != steps // 2:
        return
    if d.rank != (1 if d.world > 1 else 0):
        return
    marker = os.path.join(out_dir, ".crashed")
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)


def _train_epoch(net, opt, ds, cfg, encode, epoch, d, device, out_dir, quiet, max_steps):
    net.train()
    sampler = DistributedSampler(range(len(ds.train_y)), num_replicas=d.world, rank=d.rank,
                                 shuffle=True, seed=cfg["seed"])
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler))
    bs = cfg["batch_size"]
    batches = [order[i:i + bs] for i in range(0, len(order), bs)][:max_steps]
    gen = _epoch_generator(cfg["seed"], epoch, d.rank)
    from tqdm import tqdm
    bar = tqdm(total=len(batches), desc=f"epoch {epoch}/{cfg['epochs']}", unit="batch",
               # None: tqdm draws no bar when stderr is not a terminal (a Slurm log, a pipe)
               disable=True if quiet or not d.main else None, leave=False, dynamic_ncols=True)
    loss_sum = correct = seen = 0.0
    start = time.perf_counter()
    for step, j in enumerate(batches):
        _maybe_crash(epoch, step, len(batches), out_dir, d)
        x = encode(ds.train_x[j], cfg["timesteps"], gen).to(device)
        y = ds.train_y[j].to(device)
        reset_net(net)
        logits = _readout(net(x), cfg["logit_scale"])
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step == 0 and epoch == 1 and d.main:
            _warn_if_no_gradient(net, cfg)
        opt.step()
        loss_sum += loss.item() * len(j)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(j)
        rate = seen * d.world / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.2%}",
                        samples_s=f"{rate:.0f}", refresh=False)
        bar.update()
    bar.close()
    elapsed = time.perf_counter() - start
    loss_sum, correct, seen = _all_sum([loss_sum, correct, seen], d, device)
    return loss_sum / seen, correct / seen, elapsed, seen / max(elapsed, 1e-9)


def _warn_if_no_gradient(net, cfg):
    """After the first backward: if no weight got a gradient, training cannot start. The usual
    cause is a surrogate whose derivative is exactly zero where every potential lies."""
    if any(p.grad is not None and bool(p.grad.any()) for p in net.parameters()):
        return
    print(f"spikecore: warning: the first step gave every weight a zero gradient, so the "
          f"network cannot learn; the {cfg['surrogate']} surrogate's derivative is zero at "
          f"every membrane potential of this batch (PiecewiseQuadratic is zero beyond 1/alpha "
          f"= {1 / cfg['alpha']:g} from the threshold): try a smaller --alpha, such as 0.5",
          file=sys.stderr)


# --- the job ----------------------------------------------------------------------------------
def _check_numbers(a):
    """TrainError for a numeric option of the wrong type or out of range."""
    for name in ("epochs", "batch_size", "timesteps", "hidden", "threads", "max_steps"):
        value = a[name]
        if value is None and name in ("hidden", "threads", "max_steps"):
            continue   # the default
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise TrainError(f"{name} must be an integer >= 1, got {value!r}")
    seed = a["seed"]
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise TrainError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    for name in ("lr", "logit_scale", "alpha"):
        value = a[name]
        if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                or not (math.isfinite(value) and value > 0)):
            raise TrainError(f"{name} must be a finite number > 0, got {value!r}")


def fit(model: Union[None, str, nn.Module] = None,
        dataset: Union[str, _data.Dataset] = "digits", *,
        epochs: int = DEFAULTS["epochs"], batch_size: int = DEFAULTS["batch_size"],
        lr: float = DEFAULTS["lr"], timesteps: int = DEFAULTS["timesteps"],
        encoding: str = DEFAULTS["encoding"], neuron: str = DEFAULTS["neuron"],
        surrogate: str = DEFAULTS["surrogate"], hidden: Optional[int] = None,
        device: str = "cpu", threads: Optional[int] = None, seed: int = 0,
        data_dir: str = "data", download: bool = False, out_dir: Optional[str] = None,
        resume: bool = False, quiet: bool = True, plots: bool = True,
        logit_scale: float = DEFAULTS["logit_scale"], alpha: float = DEFAULTS["alpha"],
        max_steps: Optional[int] = None) -> FitResult:
    """Train a spiking classifier and return a :class:`FitResult`.

    Args:
        model: ``'mlp'`` (default when ``None``), ``'conv'``, or an ``nn.Module`` mapping a
            time-major input ``[T, B, C, H, W]`` to ``[T, B, classes]`` (or ``[B, classes]``).
        dataset: ``'digits'``, ``'mnist'``, ``'fashion-mnist'`` or a
            :class:`spikecore.data.Dataset`.
        epochs: total epochs, counting those already in a resumed checkpoint.
        batch_size: samples per step on each process (the global batch is × world size).
        lr: Adam step size of the first epoch; it decays along a cosine to ~0 at the last.
        timesteps: simulation steps T per sample.
        encoding: ``'direct'`` (constant current) or ``'poisson'`` (rate coding).
        neuron, surrogate, hidden: for the built-in models (see :mod:`spikecore.models`).
        device: ``'cpu'`` or ``'cuda'``.
        threads: torch threads per process; default cores // processes on this machine.
        seed: seeds the initial weights, the data order and the Poisson draws.
        data_dir, download: where MNIST/Fashion-MNIST live; download with torchvision.
        out_dir: where checkpoint, metrics and plots go; ``None`` writes nothing.
        resume: continue from ``out_dir/checkpoint.pt`` (automatic after a torchrun restart).
        quiet: no progress bars or per-epoch lines.
        plots: write the PNG figures at the end (needs ``out_dir``).
        logit_scale: the firing rates are multiplied by this before the cross-entropy.
        alpha: the sharpness of the built-in models' surrogate gradient. PiecewiseQuadratic's
            is zero beyond 1/alpha from the threshold and needs a smaller one (0.5).
        max_steps: stop each epoch after this many batches (for quick checks and tests).

    Raises:
        TrainError: bad options, missing data, an unusable checkpoint or device.
    """
    t_start = time.perf_counter()
    if encoding not in _data.ENCODERS:
        raise TrainError(f"unknown encoding {encoding!r}; choose from {', '.join(_data.ENCODERS)}")
    if neuron not in _models.NEURONS:
        raise TrainError(f"unknown neuron {neuron!r}; choose from {', '.join(_models.NEURONS)}")
    try:
        surrogate = _surrogate.NAMES[_surrogate.resolve(surrogate)]
    except (ValueError, TypeError, IndexError) as exc:
        raise TrainError(str(exc)) from None
    _check_numbers(locals())
    if resume and out_dir is None:
        raise TrainError("resume needs an output directory (--out DIR) holding a checkpoint")

    d = _init_dist("cuda" if device == "cuda" else "cpu")
    threads_before = torch.get_num_threads()   # _fit sets the job's; a notebook gets its own back
    try:
        return _fit(model, dataset, d, t_start, locals())
    finally:
        torch.set_num_threads(threads_before)
        if d.owns_group:
            dist.destroy_process_group()


def _fit(model, dataset, d: _Dist, t_start, a) -> FitResult:
    dev = _device(a["device"], d)
    threads = a["threads"] or max(1, available_cores() // max(1, d.local_world))
    torch.set_num_threads(threads)
    quiet = a["quiet"] or not d.main

    # every rank writes to the folder rank 0 chose
    out_dir = a["out_dir"]
    if d.world > 1:
        box = [out_dir]
        dist.broadcast_object_list(box, src=0)
        out_dir = box[0]

    try:
        ds = (dataset if isinstance(dataset, _data.Dataset)
              else _data.load_dataset(dataset, a["data_dir"], a["download"]))
    except _data.DataError as exc:
        raise TrainError(str(exc)) from None

    model_name = model if isinstance(model, str) or model is None else (
        "custom:" + type(model).__name__)
    model_name = model_name or DEFAULTS["model"]
    cfg = dict(dataset=ds.name, model=model_name, neuron=a["neuron"], surrogate=a["surrogate"],
               hidden=a["hidden"], encoding=a["encoding"], timesteps=a["timesteps"],
               epochs=a["epochs"], batch_size=a["batch_size"], lr=a["lr"], seed=a["seed"],
               logit_scale=a["logit_scale"], alpha=a["alpha"], world_size=d.world,
               device=str(dev), threads=threads)

    _seed_all(a["seed"])
    if isinstance(model, nn.Module):
        net = model
    else:
        try:
            net = _models.build_model(model_name, ds.in_shape, ds.num_classes,
                                      hidden=a["hidden"], neuron=a["neuron"],
                                      surrogate=a["surrogate"], alpha=a["alpha"])
        except ValueError as exc:
            raise TrainError(str(exc)) from None
    net.to(dev)
    opt = make_optimizer(net.parameters(), a["lr"])

    # resume: asked for, or implied because torchrun restarted this worker
    restarted = _env_int("TORCHELASTIC_RESTART_COUNT", 0) > 0
    history, start_epoch = [], 0
    ckpt_path = os.path.join(out_dir, CHECKPOINT) if out_dir else None
    if ckpt_path and os.path.exists(ckpt_path):
        if not (a["resume"] or restarted):
            raise TrainError(f"{out_dir} already holds a checkpoint; add --resume to continue "
                             "it or choose another --out")
        ckpt = _load_checkpoint(ckpt_path, cfg)
        try:
            net.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise TrainError(f"checkpoint {ckpt_path} does not fit the model: "
                             f"{str(exc).splitlines()[0]}") from None
        run_files.set_rng_state(ckpt["rng"])
        history, start_epoch = list(ckpt["history"]), int(ckpt["epoch"])
        _say(quiet, f"resumed from {ckpt_path} after epoch {start_epoch}")
        planned = ckpt["config"].get("epochs")
        if planned is not None and planned != a["epochs"] and d.main:
            # the cosine step size is a function of (epoch, total epochs)
            print(f"spikecore: note: the run was started for {planned} epochs and now ends "
                  f"after {a['epochs']}; the learning rate follows the new cosine schedule from "
                  f"epoch {start_epoch + 1}, so the result differs from a run of "
                  f"{a['epochs']} epochs without interruption", file=sys.stderr)
    elif a["resume"] and not restarted:
        raise TrainError(f"--resume: no checkpoint {CHECKPOINT} in {out_dir}")
    if out_dir and d.main:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as exc:
            raise TrainError(f"cannot create the output folder {out_dir}: "
                             f"{exc.strerror or exc}") from None
        with open(os.path.join(out_dir, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        if history:
            run_files.write_metrics(out_dir, history)

    train_net = net
    if d.world > 1:
        train_net = nn.parallel.DistributedDataParallel(
            net, device_ids=[dev.index] if dev.type == "cuda" else None)

    encode = _data.ENCODERS[a["encoding"]]
    _say(quiet, f"training {model_name}/{a['neuron']} on {ds.name} "
                f"({len(ds.train_y)} train, {len(ds.test_y)} test, T={a['timesteps']}) "
                f"on {dev} x{d.world} process(es), {threads} thread(s) each")
    shard = -(-len(ds.train_y) // d.world)   # each process's share (DistributedSampler pads)
    if a["batch_size"] > shard and d.main:
        print(f"spikecore: note: the batch size {a['batch_size']} is larger than the {shard} "
              f"training samples of {'each process' if d.world > 1 else 'the dataset'}, so "
              f"every epoch is a single step of {shard} samples", file=sys.stderr)
    for epoch in range(start_epoch + 1, a["epochs"] + 1):
        for group in opt.param_groups:
            group["lr"] = _cosine_lr(a["lr"], epoch, a["epochs"])
        tr_loss, tr_acc, ep_time, rate = _train_epoch(
            train_net, opt, ds, cfg, encode, epoch, d, dev, out_dir, quiet, a["max_steps"])
        te_loss, te_acc = _evaluate(net, ds.test_x, ds.test_y, cfg, encode, d, dev)
        row = dict(epoch=epoch, train_loss=tr_loss, train_acc=tr_acc, test_loss=te_loss,
                   test_acc=te_acc, lr=opt.param_groups[0]["lr"], epoch_time_s=ep_time,
                   samples_per_s=rate)
        history.append(row)
        _say(quiet, f"epoch {epoch:3d}/{a['epochs']}  loss {tr_loss:.4f}  train {tr_acc:6.2%}  "
                    f"test {te_acc:6.2%}  ({rate:.0f} samples/s)")
        if out_dir and d.main:
            run_files.atomic_save(run_files.checkpoint(epoch, cfg, net, opt, history), ckpt_path)
            run_files.write_metrics(out_dir, history)
        if d.world > 1:
            dist.barrier()  # nobody starts the next epoch before the checkpoint is on disk

    if out_dir and d.main and a["plots"] and history:
        from . import plots
        plots.save_all(net, history, ds, cfg, encode, out_dir, dev)
    final = history[-1]["test_acc"] if history else float("nan")
    best = max((h["test_acc"] for h in history), default=float("nan"))
    elapsed = time.perf_counter() - t_start
    if history:
        _say(quiet, f"done: test accuracy {final:.2%} (best {best:.2%}) after "
                    f"{len(history)} epoch{'s' if len(history) != 1 else ''}, {elapsed:.1f} s"
                    + (f"; outputs in {out_dir}" if out_dir else ""))
    return FitResult(net, history, final, best, len(history), elapsed, out_dir, cfg)


def default_out_dir() -> str:
    """``runs/<timestamp>``, or ``runs/torchrun-<run id>`` under torchrun so that a restarted
    worker finds the checkpoint of the attempt before it."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id and run_id != "none":
        return os.path.join("runs", f"torchrun-{run_id}")
    return os.path.join("runs", time.strftime("%Y%m%d-%H%M%S"))
