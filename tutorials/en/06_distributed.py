# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: -all
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Training on several processes
#
# Data-parallel training runs one copy of the model in each of several processes. Every process
# computes the gradient on its own share of the batch; before each optimiser step the processes
# average their gradients, so all copies take the same step and stay identical. On CPUs the
# processes talk through PyTorch's `gloo` backend, on one machine or across many.
#
# spikecore's LIF and IF layers have no parameters and keep their state per process, so they
# need nothing special: they work inside `torch.nn.parallel.DistributedDataParallel` (DDP) like
# any other layer. (`ParametricLIFNode` does learn a parameter, its time constant; DDP averages
# its gradient like that of any weight.) This tutorial starts two processes on this machine in
# two ways:
#
# 1. with `torch.multiprocessing.spawn` and a hand-written worker, and checks that two processes
#    with half a batch each take exactly the steps one process takes with the whole batch;
# 2. with `torchrun` and the ready-made command `spikecore train`.

# %%
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import matplotlib.pyplot as plt
import torch
import torch.distributed as dist

FAST = os.environ.get("SPIKECORE_TUTORIAL_FAST") == "1"
FIG_DIR = os.environ.get("SPIKECORE_TUTORIAL_FIGDIR")


def show(fig, name):
    # show a figure (inline in a notebook), save it when FIG_DIR is set, then free it
    if FIG_DIR:
        fig.savefig(os.path.join(FIG_DIR, f"06_{name}.png"), dpi=80)
    plt.show()
    plt.close(fig)


print("gloo available:", dist.is_available() and dist.is_gloo_available())
# a scratch folder for the files of this tutorial; the last cell removes it
scratch = tempfile.TemporaryDirectory(prefix="spikecore_ddp_")
workdir = scratch.name

# %% [markdown]
# ## A worker module
#
# `torch.multiprocessing.spawn` starts fresh Python processes and calls a function in each, so
# that function must live in a module the new processes can import; a function defined in a
# notebook cell cannot be found by them. We therefore write a small module, `snn_ddp.py`, into a
# temporary folder (the last cell deletes the folder and everything in it). It contains
#
# - `train(rank, world, ...)`: a plain training loop on the digits. All processes draw the same
#   random batch indices, and process `rank` keeps every `world`-th sample of each batch, so the
#   processes together cover exactly the batch one process would use;
# - `worker(rank, world, ...)`: joins the process group (gloo, rendezvous over a local TCP port),
#   wraps the model in DDP, trains, checks that all processes ended with the same weights and
#   saves them;
# - a `__main__` block that spawns the workers, so the module is also a runnable script.
#
# Each loss is the mean over the local samples, and DDP averages the gradients of the processes;
# with equal shares that is exactly the gradient of the mean over the whole batch.

# %%
WORKER = textwrap.dedent('''
    """Data-parallel training of a small spiking network (written by the spikecore tutorial)."""
    import json
    import os
    import sys

    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    import torch.nn.functional as F
    from torch import nn

    import spikecore
    from spikecore.data import direct_encode, load_dataset


    def build_model(hidden):
        torch.manual_seed(0)                     # the same initial weights in every process
        return nn.Sequential(
            nn.Flatten(2),
            nn.Linear(64, hidden),
            spikecore.MultiStepLIFNode(tau=2.0, detach_reset=True),
            nn.Linear(hidden, 10),
            spikecore.MultiStepLIFNode(tau=2.0, detach_reset=True),
        )


    def train(rank, world, steps, batch, T, hidden):
        digits = load_dataset("digits")
        model = build_model(hidden)
        net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        batches = torch.Generator().manual_seed(1)   # the same batches in every process
        losses = []
        for _ in range(steps):
            idx = torch.randint(len(digits.train_y), (batch,), generator=batches)
            mine = idx[rank::world]                  # this process's share of the batch
            spikecore.reset_net(model)
            rate = net(direct_encode(digits.train_x[mine], T)).mean(0)
            loss = F.cross_entropy(5.0 * rate, digits.train_y[mine])
            opt.zero_grad()
            loss.backward()                          # DDP averages the gradients here
            opt.step()
            losses.append(loss.item())
        with torch.no_grad():
            spikecore.reset_net(model)
            rate = model(direct_encode(digits.test_x, T)).mean(0)
        accuracy = (rate.argmax(1) == digits.test_y).float().mean().item()
        return model, losses, accuracy


    def worker(rank, world, port, out_path, config):
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(port)
        torch.set_num_threads(1)                     # one core per process
        dist.init_process_group("gloo", rank=rank, world_size=world)
        model, losses, accuracy = train(rank, world, **config)
        # every process must hold the same weights: gather them all and compare
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        everyone = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(everyone, flat)
        # each process saw different samples, so the losses differ: average them
        mean_losses = torch.tensor(losses)
        dist.all_reduce(mean_losses)
        if rank == 0:
            torch.save({"state": model.state_dict(), "losses": (mean_losses / world).tolist(),
                        "accuracy": accuracy,
                        "ranks_agree": all(torch.equal(everyone[0], w) for w in everyone)},
                       out_path)
        dist.barrier()                               # leave together: no rank tears down mid-exchange
        dist.destroy_process_group()
        # Exit at once, skipping Python's shutdown. A gloo thread may still be freeing the
        # tensors of the last collectives, which needs the interpreter; if the interpreter is
        # already shutting down, the process aborts (a race inside PyTorch, seen about once in
        # 40 runs on a busy machine). Everything is saved by now, so nothing is lost.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


    if __name__ == "__main__":
        world, port, out_path, config = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                         json.loads(sys.argv[4]))
        mp.spawn(worker, args=(world, port, out_path, config), nprocs=world, join=True)
''')
module_path = os.path.join(workdir, "snn_ddp.py")
with open(module_path, "w") as f:
    f.write(WORKER)
sys.path.insert(0, workdir)
import snn_ddp  # noqa: E402

print("wrote", module_path)

# %% [markdown]
# ## Two processes with `torch.multiprocessing.spawn`
#
# The processes meet at a TCP port on `127.0.0.1`; we ask the operating system for a free one.
# We run the module as a script in a subprocess, and its `__main__` block calls `mp.spawn`.
# Calling `mp.spawn(snn_ddp.worker, ...)` directly from a notebook works as well (the worker
# lives in an importable module); the subprocess keeps this tutorial runnable as a plain script
# too, where spawned processes would otherwise re-import the tutorial itself.

# %%
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


config = dict(steps=30 if FAST else 100, batch=64, T=4, hidden=64)
ddp_path = os.path.join(workdir, "ddp.pt")
start = time.perf_counter()
proc = subprocess.run([sys.executable, module_path, "2", str(free_port()), ddp_path,
                       json.dumps(config)], capture_output=True, text=True, timeout=300)
assert proc.returncode == 0, proc.stdout + proc.stderr
ddp = torch.load(ddp_path, weights_only=True)
print(f"2 processes: {time.perf_counter() - start:.1f} s, test accuracy {ddp['accuracy']:.1%}, "
      f"weights identical in both processes: {ddp['ranks_agree']}")
assert ddp["ranks_agree"]

# %% [markdown]
# ## The same steps in one process
#
# Now the same training in this process alone, with the whole batch of each step. If DDP does
# what it promises, the weights at the end agree with the two-process run up to floating-point
# rounding (the gradients were summed in a different order).

# %%
threads = torch.get_num_threads()
torch.set_num_threads(1)                   # one core, as each of the two processes had
model, losses, accuracy = snn_ddp.train(rank=0, world=1, **config)
torch.set_num_threads(threads)             # the setting lasts for the session: restore it
single = model.state_dict()
diff = max((single[k] - ddp["state"][k]).abs().max().item() for k in single)
print(f"1 process: test accuracy {accuracy:.1%}; largest weight difference {diff:.2e}")
for k in single:
    torch.testing.assert_close(single[k], ddp["state"][k], atol=1e-5, rtol=0)

fig, ax = plt.subplots(figsize=(7, 3.5))
ax.plot(losses, label="1 process, whole batch")
ax.plot(ddp["losses"], "--", label="2 processes, half a batch each (mean)")
ax.set(xlabel="step", ylabel="cross-entropy", title="the same training, one or two processes")
ax.legend()
ax.grid(alpha=0.3)
show(fig, "ddp_vs_single")
print("CHECK ok: two gloo processes with DDP take the same steps as one process")

# %% [markdown]
# ## `torchrun` and `spikecore train`
#
# In practice you rarely write the process handling yourself. `torchrun` starts the processes,
# sets the environment variables `torch.distributed` reads (`RANK`, `WORLD_SIZE`,
# `MASTER_ADDR`, ...) and restarts failed workers if asked to; `spikecore train` (the command
# line of `spikecore.train.fit`) notices those variables, joins the process group, wraps its
# model in DDP and gives each process its share of the data. Only process 0 prints and writes
# files. On one machine:
#
# ```bash
# torchrun --standalone --nproc_per_node=2 -m spikecore train --epochs 8 -T 4
# ```
#
# On several machines, start the same command on each one with `--nnodes` and a rendezvous
# endpoint (see the distributed training guide). We launch it from Python with
# `python -m torch.distributed.run`, which is what the `torchrun` command runs. Outside the fast
# mode the run below is this command plus options about its output: `--log-dir` and `--out` say
# where its files go, `--no-plots` and `--quiet` cut down what it writes and prints, and
# `--hidden 128` repeats the default. `--log-dir` keeps torchrun's log files in our temporary
# folder; by default torchrun creates a temporary folder of its own for them and never removes it.

# %%
out_dir = os.path.join(workdir, "run")
cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
       "--log-dir", os.path.join(workdir, "logs"),
       "-m", "spikecore", "train", "--epochs", "2" if FAST else "8", "-T", "4",
       "--hidden", "32" if FAST else "128", "--out", out_dir, "--no-plots", "--quiet"]
print(" ".join(cmd[2:]))
start = time.perf_counter()
proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                      env=dict(os.environ, OMP_NUM_THREADS="1"))
assert proc.returncode == 0, proc.stdout + proc.stderr
print(proc.stdout.strip())
print(f"finished in {time.perf_counter() - start:.1f} s")

with open(os.path.join(out_dir, "metrics.json")) as f:
    history = json.load(f)
with open(os.path.join(out_dir, "config.json")) as f:
    print("world size recorded by the run:", json.load(f)["world_size"])
for row in history:
    print(f"epoch {row['epoch']}  train loss {row['train_loss']:.3f}  "
          f"test accuracy {row['test_acc']:.1%}")

reported = float(re.search(r"test accuracy ([\d.]+)%", proc.stdout).group(1)) / 100
assert abs(reported - history[-1]["test_acc"]) < 1e-3
assert reported >= 0.6, reported
print(f"CHECK ok: torchrun with 2 gloo workers finished, test accuracy {reported:.1%}")

# %% [markdown]
# ## Summary
#
# - Data parallelism averages the gradients of the processes before every step, so the copies
#   of the model never diverge; with equal shares of the batch it is the same as one process
#   training on the whole batch.
# - spikecore's neuron layers need no special handling: reset them before every batch, as
#   always, in each process.
# - `torchrun ... -m spikecore train` does all of it from the command line, from one machine
#   to a cluster.
#
# Finally we delete the temporary folder with the worker module, the saved weights and the
# run's files, and take the folder off Python's module search path.

# %%
if workdir in sys.path:
    sys.path.remove(workdir)
sys.modules.pop("snn_ddp", None)
scratch.cleanup()
print("removed", workdir, "| still there:", os.path.exists(workdir))
print("CHECK ok: tutorial 06 finished")
