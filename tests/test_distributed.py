"""The training job on torch.distributed (gloo, CPU) under torchrun, two workers on localhost."""
import json
import os
import subprocess
import sys

import pytest
import torch

torch_dist = pytest.importorskip("torch.distributed")
pytestmark = pytest.mark.skipif(not torch_dist.is_available() or
                                not torch_dist.is_gloo_available(), reason="needs gloo")

ARGS = ["--hidden", "16", "-T", "4", "--no-plots", "--quiet"]


def torchrun(tmp_path, *args, nproc=2, env=None, timeout=120, extra=()):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", f"--log-dir={tmp_path / 'torchrun-logs'}", *extra,
           "-m", "spikecore", "train", *args]   # (torchrun's own default is a /tmp folder)
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=full_env,
                       timeout=timeout)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def weights(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["model"]


def test_two_workers_match_one_process_on_the_global_batch(tmp_path):
    # DDP averages the gradients of the two shards, so one process whose batch is the union of
    # both shards (twice the per-worker batch, mean loss) must take the same steps.
    steps = ["--epochs", "2", "--max-steps", "3"]
    torchrun(tmp_path, "--out", str(tmp_path / "ddp"), "--batch-size", "8", *steps, *ARGS)
    from spikecore import cli
    assert cli.main(["train", "--out", str(tmp_path / "single"), "--batch-size", "16",
                     "--threads", "1", *steps, *ARGS]) == 0
    a, b = weights(tmp_path / "ddp"), weights(tmp_path / "single")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0, msg=k)
    # and training did move them away from the initial ones
    torch.manual_seed(0)
    from spikecore import models
    init = models.build_model("mlp", (1, 8, 8), 10, hidden=16).state_dict()
    assert not torch.allclose(init["1.layers.weight"], a["1.layers.weight"], atol=1e-3)


def test_killed_worker_restarts_from_checkpoint(tmp_path):
    out, ref = tmp_path / "run", tmp_path / "ref"
    args = ["--epochs", "3", "--max-steps", "6", *ARGS[:-1]]   # not quiet: we read the log
    p = torchrun(tmp_path, "--out", str(out), *args, env={"SPIKECORE_TEST_CRASH_AT": "2"},
                 extra=["--max-restarts=1"])
    assert (out / ".crashed").exists()  # rank 1 did die once, in epoch 2
    assert "resumed from" in p.stdout and "after epoch 1" in p.stdout, p.stdout
    history = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and [h["epoch"] for h in ckpt["history"]] == [1, 2, 3]
    # and it ends where an uninterrupted run ends
    torchrun(tmp_path, "--out", str(ref), *args)
    a, b = weights(out), weights(ref)
    assert all(torch.equal(a[k], b[k]) for k in a)
