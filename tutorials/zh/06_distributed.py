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
# # 6. 在多个进程上训练
#
# 数据并行训练在多个进程中各运行一份模型副本。每个进程在自己分到的那部分批次上计算梯度；每次
# 优化器更新之前，各进程对梯度取平均，于是所有副本走同样的一步，始终保持一致。在 CPU 上，进程之间
# 通过 PyTorch 的 `gloo` 后端通信，可以在一台机器上，也可以跨多台机器。
#
# spikecore 的 LIF 和 IF 层没有参数，状态也按进程各自保存，所以不需要任何特殊处理：它们在
# `torch.nn.parallel.DistributedDataParallel`（DDP）中与其他层一样工作。（`ParametricLIFNode` 确实
# 有一个要学习的参数，即它的时间常数；DDP 像对待任何权重一样对它的梯度取平均。）本教程用两种方式
# 在本机上启动两个进程：
#
# 1. 用 `torch.multiprocessing.spawn` 和一个手写的 worker，并检验两个各处理半个批次的进程与一个
#    处理整个批次的进程走的步完全相同；
# 2. 用 `torchrun` 和现成的命令 `spikecore train`。

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
# 存放本教程文件的临时目录；最后一个单元会删除它
scratch = tempfile.TemporaryDirectory(prefix="spikecore_ddp_")
workdir = scratch.name

# %% [markdown]
# ## worker 模块
#
# `torch.multiprocessing.spawn` 启动全新的 Python 进程并在每个进程中调用一个函数，所以这个函数必须
# 位于新进程能够导入的模块中；在 notebook 单元中定义的函数，新进程是找不到的。因此我们把一个小模块
# `snn_ddp.py` 写到一个临时目录中（最后一个单元会删除这个目录及其中的全部内容）。它包含
#
# - `train(rank, world, ...)`：一个在手写数字上的普通训练循环。所有进程抽取相同的随机批次下标，
#   进程 `rank` 保留每个批次中每隔 `world` 个取一个的样本，于是这些进程合起来恰好覆盖单个进程会用的
#   那个批次；
# - `worker(rank, world, ...)`：加入进程组（gloo，通过本地 TCP 端口会合），把模型包进 DDP，训练，
#   检查所有进程最后的权重是否相同，然后保存权重；
# - 一个启动各 worker 的 `__main__` 代码块，所以这个模块本身也是一个可运行的脚本。
#
# 每个损失都是对本地样本取平均，DDP 再对各进程的梯度取平均；当各进程分到的样本数相同时，这恰好
# 就是对整个批次取平均的梯度。

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
# ## 用 `torch.multiprocessing.spawn` 启动两个进程
#
# 各进程在 `127.0.0.1` 的一个 TCP 端口会合；我们向操作系统要一个空闲端口。我们在子进程中把这个
# 模块作为脚本运行，由它的 `__main__` 代码块调用 `mp.spawn`。在 notebook 中直接调用
# `mp.spawn(snn_ddp.worker, ...)` 同样可行（worker 位于可导入的模块中）；使用子进程则让本教程也能
# 作为普通脚本运行，否则被启动的进程会重新导入教程脚本本身。

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
# ## 在一个进程中走同样的步
#
# 现在只在当前进程中做同样的训练，每一步使用整个批次。如果 DDP 名副其实，最后的权重与两个进程的
# 结果在浮点舍入误差范围内一致（梯度求和的顺序不同）。

# %%
threads = torch.get_num_threads()
torch.set_num_threads(1)                   # 单核，与两个进程各自的设置相同
model, losses, accuracy = snn_ddp.train(rank=0, world=1, **config)
torch.set_num_threads(threads)             # 这个设置在整个会话中有效：恢复原值
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
# ## `torchrun` 与 `spikecore train`
#
# 实际使用中很少需要自己管理进程。`torchrun` 启动各进程，设置 `torch.distributed` 读取的环境变量
# （`RANK`、`WORLD_SIZE`、`MASTER_ADDR` 等），并可按要求重启失败的 worker；`spikecore train`
# （即 `spikecore.train.fit` 的命令行）识别这些变量，加入进程组，把模型包进 DDP，并给每个进程分配
# 它那一份数据。只有 0 号进程打印输出和写文件。在一台机器上：
#
# ```bash
# torchrun --standalone --nproc_per_node=2 -m spikecore train --epochs 8 -T 4
# ```
#
# 在多台机器上，在每台机器上用 `--nnodes` 和一个会合端点启动同样的命令（见分布式训练指南）。
# 这里我们从 Python 中用 `python -m torch.distributed.run` 启动它，`torchrun` 命令运行的正是它。
# 非快速模式下，下面运行的就是这条命令，只多了几个与输出有关的选项：`--log-dir` 和 `--out` 指定
# 文件写到哪里，`--no-plots` 和 `--quiet` 减少写出的文件和打印的内容，`--hidden 128` 只是重复默认值。
# `--log-dir` 让 torchrun 把日志文件放在我们的临时目录中；默认情况下 torchrun 会为日志另建一个临时
# 目录，而且从不删除它。

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
# ## 小结
#
# - 数据并行在每一步之前对各进程的梯度取平均，所以模型的各个副本永远不会分叉；当各进程分到的批次
#   大小相同时，它与一个进程在整个批次上训练完全相同。
# - spikecore 的神经元层不需要特殊处理：和往常一样，在每个进程中每个批次之前重置它们。
# - `torchrun ... -m spikecore train` 在命令行上完成这一切，从一台机器到一个集群。
#
# 最后删除临时目录（其中有 worker 模块、保存的权重和那次运行的文件），并把它从 Python 的模块搜索
# 路径中移除。

# %%
if workdir in sys.path:
    sys.path.remove(workdir)
sys.modules.pop("snn_ddp", None)
scratch.cleanup()
print("removed", workdir, "| still there:", os.path.exists(workdir))
print("CHECK ok: tutorial 06 finished")
