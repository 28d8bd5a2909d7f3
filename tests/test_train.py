"""Tests of the training job: spikecore.train.fit, the CLI, data, models, plots, utils."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import _spikecore_cli
import spikecore
from spikecore import cli, data, models, plots, train
from spikecore.utils import reset_net

TINY = dict(hidden=16, timesteps=4, batch_size=16, max_steps=4, plots=False)


def run_cli(capsys, *args):
    """Run ``spikecore train ARGS`` in-process; returns (exit status, stdout, stderr)."""
    try:
        code = cli.main(["train", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_usage_error(code, err, *words):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("spikecore train: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err


# --- the real default -------------------------------------------------------------------------
def test_default_run_reaches_95_percent(tmp_path, capsys):
    code, out, err = run_cli(capsys, "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    acc = json.loads((tmp_path / "run" / "metrics.json").read_text())[-1]["test_acc"]
    assert acc >= 0.95
    assert f"test accuracy {acc:.2%}" in out


# --- API, outputs, resume ---------------------------------------------------------------------
def test_fit_api_returns_history_and_model():
    res = train.fit(epochs=2, **TINY)
    assert isinstance(res, train.FitResult)
    assert [h["epoch"] for h in res.history] == [1, 2]
    assert 0.0 <= res.test_accuracy <= 1.0 and res.out_dir is None
    assert isinstance(res.model, torch.nn.Module)


@pytest.mark.parametrize("neuron,surrogate,encoding,model", [
    ("if", "Sigmoid", "poisson", "mlp"), ("lif", "PiecewiseExp", "direct", "conv")])
def test_choices_train(neuron, surrogate, encoding, model):
    res = train.fit(model, epochs=1, neuron=neuron, surrogate=surrogate, encoding=encoding,
                    hidden=4 if model == "conv" else 16, timesteps=3, batch_size=16,
                    max_steps=2, plots=False)
    assert len(res.history) == 1 and np.isfinite(res.history[0]["train_loss"])


def test_cli_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "--out", str(out), "--epochs", "2", "--hidden", "16",
                                "-T", "4", "--max-steps", "3")
    assert code == 0, err
    assert "test accuracy" in stdout and "epoch   2/2" in stdout
    for name in ("metrics.csv", "metrics.json", "checkpoint.pt", "config.json", "curves.png",
                 "spike_raster.png", "firing_rate.png", "membrane.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("epoch,train_loss")
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and set(ckpt["rng"]) >= {"torch", "numpy", "python"}
    assert {"model", "optimizer", "history", "config"} <= set(ckpt)


def test_resume_gives_the_same_weights(tmp_path):
    kw = dict(TINY, encoding="poisson")  # Poisson draws must also replay exactly
    full = train.fit(epochs=3, out_dir=str(tmp_path / "a"), **kw)
    train.fit(epochs=1, out_dir=str(tmp_path / "b"), **kw)
    resumed = train.fit(epochs=3, out_dir=str(tmp_path / "b"), resume=True, **kw)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["test_acc"] for h in resumed.history] == [h["test_acc"] for h in full.history]
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert [h["epoch"] for h in saved] == [1, 2, 3]


def test_existing_checkpoint_needs_resume(tmp_path):
    train.fit(epochs=1, out_dir=str(tmp_path), **TINY)
    with pytest.raises(train.TrainError, match="--resume"):
        train.fit(epochs=2, out_dir=str(tmp_path), **TINY)


def test_a_surrogate_that_gives_no_gradient_is_reported(capsys):
    """PiecewiseQuadratic at alpha = 2 is zero more than 0.5 from the threshold, where every
    potential of the fresh network lies: a warning names the cause and the fix, which works."""
    train.fit(epochs=1, surrogate="PiecewiseQuadratic", **TINY)
    err = capsys.readouterr().err
    assert "zero gradient" in err and "try a smaller --alpha" in err
    result = train.fit(epochs=1, surrogate="PiecewiseQuadratic", alpha=0.5,
                       **{**TINY, "max_steps": None})
    assert "zero gradient" not in capsys.readouterr().err
    assert result.history[-1]["train_loss"] < math.log(10) - 0.05


def test_a_batch_larger_than_the_dataset_is_noted(capsys):
    small = data.load_dataset("digits")
    n = len(small.train_y)
    result = train.fit(epochs=1, **{**TINY, "batch_size": n + 1, "max_steps": None})
    err = capsys.readouterr().err
    assert (f"the batch size {n + 1} is larger than the {n} training samples of the dataset, "
            f"so every epoch is a single step of {n} samples") in err
    assert result.epochs == 1
    train.fit(epochs=1, **{**TINY, "batch_size": n})
    assert "larger than" not in capsys.readouterr().err


def test_resuming_with_more_epochs_says_the_schedule_changed(tmp_path, capsys):
    train.fit(epochs=1, out_dir=str(tmp_path), **TINY)
    capsys.readouterr()
    train.fit(epochs=2, out_dir=str(tmp_path), resume=True, **TINY)
    assert "the run was started for 1 epochs and now ends after 2" in capsys.readouterr().err


def test_an_output_folder_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(train.TrainError, match="cannot create the output folder"):
        train.fit(epochs=1, out_dir=str(tmp_path / "file"), **TINY)


@pytest.mark.parametrize("saved", [False, True], ids=["nothing saved", "checkpoint"])
def test_interrupt_message(tmp_path, capsys, monkeypatch, saved):
    def interrupted(*args, **kwargs):
        if saved:
            (tmp_path / train.CHECKPOINT).write_bytes(b"")
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "fit", interrupted)
    assert cli.main(["train", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err
    if saved:
        assert f"--resume --out {tmp_path}" in err and "same options" in err
    else:
        assert "no epoch had finished, so nothing was saved" in err
    monkeypatch.setenv("RANK", "1")   # another torchrun worker: the same status, no message
    assert cli.main(["train", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("given, name", [("atan", "ATan"), ("SIGMOID", "Sigmoid"),
                                         ("2", "PiecewiseQuadratic"), ("PiecewiseExp",
                                                                      "PiecewiseExp")])
def test_surrogate_option_takes_any_case_and_the_index(given, name):
    assert cli._train_parser().parse_args(["--surrogate", given]).surrogate == name


def test_sigterm_stops_like_an_interrupt(tmp_path, capsys, monkeypatch):
    """A scheduler's SIGTERM (Slurm preemption) ends the run with a message and status 143;
    the handler the caller had is back afterwards."""
    import signal

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(cli, "fit", terminated)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["train", "--out", str(tmp_path)]) == 143
    assert "spikecore train: terminated; no epoch had finished" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGTERM) is before


def test_fit_gives_back_the_callers_thread_count():
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    train.fit(epochs=1, threads=other, **TINY)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("option, value, expected", [
    ("epochs", 0, "epochs must be an integer >= 1"),
    ("epochs", 1.5, "epochs must be an integer >= 1"),
    ("epochs", "2", "epochs must be an integer >= 1"),
    ("batch_size", True, "batch_size must be an integer"),
    ("timesteps", -1, "timesteps must be an integer"),
    ("hidden", 0, "hidden must be an integer >= 1"),
    ("hidden", -3, "hidden must be an integer >= 1"),
    ("threads", 0, "threads must be an integer >= 1"),
    ("max_steps", 0, "max_steps must be an integer >= 1"),
    ("max_steps", -1, "max_steps must be an integer >= 1"),
    ("seed", -1, "seed must be an integer in"),
    ("seed", 2**32, "seed must be an integer in"),
    ("lr", 0.0, "lr must be a finite number > 0"),
    ("lr", float("inf"), "lr must be a finite number > 0"),
    ("lr", "0.1", "lr must be a finite number > 0"),
    ("logit_scale", float("nan"), "logit_scale must be a finite number > 0"),
])
def test_fit_rejects_bad_numbers(option, value, expected):
    """Checked before any work: a TrainError naming the option, never a crash deep inside or a
    run that trains on nonsense (a zero-width layer, an infinite step size)."""
    with pytest.raises(train.TrainError, match=expected):
        train.fit(**{**TINY, option: value})


# --- bad input: one line on stderr, exit 2 ----------------------------------------------------
def test_unknown_option(capsys):
    assert_usage_error(*run_cli(capsys, "--bogus")[::2], "--bogus")
    assert_usage_error(*run_cli(capsys, "--neuron", "xyz")[::2], "xyz")
    assert_usage_error(*run_cli(capsys, "--epochs", "0")[::2], "--epochs")
    assert_usage_error(*run_cli(capsys, "--lr", "inf")[::2], "--lr")
    assert_usage_error(*run_cli(capsys, "--seed", "-1")[::2], "seed must be")


def test_unknown_option_via_python_m(tmp_path):
    p = subprocess.run([sys.executable, "-m", "spikecore", "train", "--bogus"],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("spikecore train: error:") and "Traceback" not in p.stderr


def test_console_script_moves_under_jemalloc_before_importing_torch(tmp_path):
    """The ``spikecore`` script decides on jemalloc before it imports the package, so the
    process that execve replaces never imports PyTorch; other commands go to spikecore.cli."""
    lib = tmp_path / "libjemalloc.so.2"   # only its existence is checked before execve
    lib.write_bytes(b"")
    probe = ("import os, sys, _spikecore_cli\n"
             "def execve(path, args, env):\n"
             "    print('torch' in sys.modules, args[1:], env['LD_PRELOAD'], env['MALLOC_CONF'])\n"
             "    sys.exit(0)\n"
             "os.execve = execve\n"
             "sys.exit(_spikecore_cli.main())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "MALLOC_CONF", "SPIKECORE_NO_JEMALLOC")}
    env["SPIKECORE_JEMALLOC"] = str(lib)
    p = subprocess.run([sys.executable, "-c", probe, "train", "--epochs", "1"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split("\n")[0] == (
        f"False ['-m', 'spikecore', 'train', '--epochs', '1'] {lib} "
        f"{_spikecore_cli.JEMALLOC_CONF}")
    # already under jemalloc, or told not to: no exec, the command runs (here: its help)
    for extra in ({"LD_PRELOAD": str(lib)}, {"SPIKECORE_NO_JEMALLOC": "1"}):
        p = subprocess.run([sys.executable, "-c", probe, "train", "--help"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env=dict(env, **extra), timeout=120)
        assert p.returncode == 0 and "usage: spikecore train" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True, text=True,
                       cwd=tmp_path, env=env, timeout=120)
    assert p.returncode == 0 and "usage: spikecore" in p.stdout and "False" not in p.stdout


@pytest.mark.skipif(not any(os.path.exists(p) for p in _spikecore_cli.JEMALLOC_PATHS),
                    reason="jemalloc is not installed (apt-get install libjemalloc2)")
def test_command_line_runs_under_jemalloc_with_huge_pages(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", "MALLOC_CONF", "THP_MEM_ALLOC_ENABLE",
                        "SPIKECORE_NO_JEMALLOC")}
    p = subprocess.run([sys.executable, "-m", "spikecore", "train", "--epochs", "1",
                        "--hidden", "16", "--timesteps", "2", "--no-plots",
                        "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("memory allocator: jemalloc (kept pages), huge pages for tensors of 2 MiB and more"
            in p.stdout), p.stdout
    p = subprocess.run([sys.executable, "-m", "spikecore", "train", "--epochs", "1",
                        "--hidden", "16", "--timesteps", "2", "--no-plots",
                        "--out", str(tmp_path / "plain")],
                       capture_output=True, text=True, cwd=tmp_path,
                       env=dict(env, SPIKECORE_NO_JEMALLOC="1"), timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "memory allocator: the C library's malloc\n" in p.stdout, p.stdout


def test_missing_data_dir(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    code, _, err = run_cli(capsys, "--dataset", "mnist", "--data-dir", str(missing),
                           "--out", str(tmp_path / "run"))
    assert_usage_error(code, err, str(missing / "MNIST" / "raw"), "--download")


def test_download_without_torchvision(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "_import_torchvision", lambda: (None, "ImportError: absent"))
    code, _, err = run_cli(capsys, "--dataset", "fashion-mnist", "--data-dir", str(tmp_path),
                           "--download", "--out", str(tmp_path / "run"))
    # the release built for this torch: torch 2.x pairs with torchvision 0.(x + 15)
    minor = int(torch.__version__.split(".")[1])
    assert_usage_error(code, err, f'pip install "torchvision==0.{minor + 15}.*"')


@pytest.mark.parametrize("version, requirement", [
    ("2.13.0+cpu", '"torchvision==0.28.*"'), ("2.4.1", '"torchvision==0.19.*"'),
    ("3.0.0", "torchvision (the release that matches your torch)")])
def test_torchvision_requirement_follows_torch(monkeypatch, version, requirement):
    monkeypatch.setattr(torch, "__version__", version)
    assert data.torchvision_requirement() == requirement


def test_unreadable_checkpoint(tmp_path, capsys):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    code, _, err = run_cli(capsys, "--out", str(tmp_path), "--resume")
    assert_usage_error(code, err, "cannot read checkpoint")


def test_mismatched_checkpoint(tmp_path, capsys):
    args = ["--out", str(tmp_path), "-T", "4", "--max-steps", "2", "--no-plots", "--quiet"]
    assert run_cli(capsys, *args, "--epochs", "1", "--hidden", "16")[0] == 0
    code, _, err = run_cli(capsys, *args, "--epochs", "2", "--hidden", "32", "--resume")
    assert_usage_error(code, err, "does not match", "hidden")


def test_resume_without_checkpoint(tmp_path, capsys):
    assert_usage_error(*run_cli(capsys, "--out", str(tmp_path), "--resume")[::2], "no checkpoint")
    assert_usage_error(*run_cli(capsys, "--resume")[::2], "--out")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda(tmp_path, capsys):
    code, _, err = run_cli(capsys, "--device", "cuda", "--out", str(tmp_path / "run"))
    assert_usage_error(code, err, "CUDA is not available")


def test_debug_shows_traceback(tmp_path, capsys):
    with pytest.raises(train.TrainError):
        cli.main(["train", "--out", str(tmp_path), "--resume", "--debug"])


# --- data -------------------------------------------------------------------------------------
def _write_fake_mnist(root, folder, n_train=40, n_test=12, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        ext = ".gz" if gz else ""
        data.write_idx(str(raw / f"{split}-images-idx3-ubyte{ext}"), images)
        data.write_idx(str(raw / f"{split}-labels-idx1-ubyte{ext}"), labels)
        arrays[split] = (images, labels)
    return arrays


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", True),
                                            ("fashion-mnist", "FashionMNIST", False)])
def test_idx_reader_loads_synthetic_files(tmp_path, monkeypatch, name, folder, gz):
    monkeypatch.setattr(data, "_import_torchvision", lambda: (None, "absent"))
    arrays = _write_fake_mnist(tmp_path, folder, gz=gz)
    ds = data.load_dataset(name, str(tmp_path))
    assert ds.train_x.shape == (40, 1, 28, 28) and ds.test_x.shape == (12, 1, 28, 28)
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train"][0] / 255.0).float())
    assert torch.equal(ds.test_y, torch.from_numpy(arrays["t10k"][1]).long())


def test_idx_roundtrip_and_bad_files(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    data.write_idx(str(tmp_path / "a.idx"), a)
    assert np.array_equal(data.read_idx(str(tmp_path / "a.idx")), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03")
    with pytest.raises(data.DataError, match="not an IDX"):
        data.read_idx(str(tmp_path / "bad"))
    raw = (tmp_path / "a.idx").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-4])
    with pytest.raises(data.DataError, match="truncated"):
        data.read_idx(str(tmp_path / "short"))
    (tmp_path / "header").write_bytes(raw[:9])   # cut inside the dimensions
    with pytest.raises(data.DataError, match="truncated: its header announces 3 dimensions"):
        data.read_idx(str(tmp_path / "header"))
    (tmp_path / "x.idx.gz").write_bytes(raw)      # not gzip-compressed
    with pytest.raises(data.DataError, match="not a readable gzip file"):
        data.read_idx(str(tmp_path / "x.idx.gz"))


def test_train_conv_on_synthetic_mnist(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data, "_import_torchvision", lambda: (None, "absent"))
    _write_fake_mnist(tmp_path, "MNIST")
    code, out, err = run_cli(capsys, "--dataset", "mnist", "--data-dir", str(tmp_path),
                             "--model", "conv", "--hidden", "4", "-T", "2", "--epochs", "1",
                             "--out", str(tmp_path / "run"), "--quiet")
    assert code == 0, err
    assert (tmp_path / "run" / "spike_raster.png").exists()


def test_digits_split_is_fixed_and_stratified():
    a, b = data.load_dataset("digits"), data.load_dataset("digits")
    assert torch.equal(a.test_x, b.test_x) and len(a.train_y) + len(a.test_y) == 1797
    assert a.in_shape == (1, 8, 8) and 0 <= a.train_x.min() and a.train_x.max() <= 1
    counts = torch.bincount(a.test_y, minlength=10)
    assert counts.min() >= 40  # each class close to its share of 450


def test_encoders():
    x = torch.full((1000,), 0.3)
    assert torch.equal(data.direct_encode(x, 5), x.expand(5, 1000))
    g = torch.Generator().manual_seed(0)
    s = data.poisson_encode(x, 20, g)
    assert s.shape == (20, 1000) and set(s.unique().tolist()) <= {0.0, 1.0}
    assert abs(s.mean().item() - 0.3) < 0.02


# --- models, reset_net, plots -----------------------------------------------------------------
def test_reset_net_resets_every_node():
    net = models.build_model("mlp", (1, 8, 8), 10, hidden=8)
    net(torch.rand(4, 3, 1, 8, 8))
    nodes = [m for m in net.modules() if isinstance(m, spikecore.BaseNode)]
    assert len(nodes) == 2 and all(isinstance(n.v, torch.Tensor) for n in nodes)
    assert reset_net(net) is net
    assert all(n.v == n.v_reset for n in nodes)


def test_models_shapes():
    for name, hidden in (("mlp", 8), ("conv", 2)):
        for neuron in models.NEURONS:
            net = models.build_model(name, (1, 8, 8), 10, hidden=hidden, neuron=neuron)
            assert net(torch.rand(3, 2, 1, 8, 8)).shape == (3, 2, 10)
    with pytest.raises(ValueError, match="divisible by 4"):
        models.build_model("conv", (1, 10, 10), 10)


def _rows_seen(seq_to_ann, x):
    """(output, leading sizes of every input the wrapped layers' first module received)."""
    seen = []
    first = next(m for m in seq_to_ann.layers.modules()
                 if not isinstance(m, torch.nn.Sequential))
    hook = first.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[0]))
    try:
        return seq_to_ann(x), seen
    finally:
        hook.remove()


def test_seq_to_ann_runs_a_static_input_once():
    torch.manual_seed(0)
    T, B = 5, 3
    img = torch.randn(B, 6)
    static = data.direct_encode(img, T)             # time stride 0: the same at every step
    assert static.stride(0) == 0
    fast = models.SeqToANN(torch.nn.Linear(6, 4), torch.nn.Tanh())
    slow = models.SeqToANN(*fast.layers, reuse_static=False)
    y, seen = _rows_seen(fast, static)
    y_ref, seen_ref = _rows_seen(slow, static)
    assert seen == [B] and seen_ref == [T * B]     # once per sample, against once per step
    assert y.shape == (T, B, 4) and torch.allclose(y, y_ref, rtol=0, atol=1e-6)
    # hand-derived reference: every step holds the layers' output on the image
    assert torch.equal(y, torch.tanh(fast.layers[0](img)).expand(T, B, 4))
    # the gradient of the shared output sums over the steps
    g = torch.randn(T, B, 4)
    grads = [torch.autograd.grad(out, list(fast.parameters()), g)
             for out in (fast(static), slow(static))]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # the block ran whole, through its container: hooks on the container see the call
    calls = []
    hook = fast.layers.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    fast(static)
    hook.remove()
    assert calls == [(B, 6)]
    # an input that differs between steps, or a copy of the static one, runs every row
    assert _rows_seen(fast, static.contiguous())[1] == [T * B]
    assert _rows_seen(fast, torch.randn(T, B, 6))[1] == [T * B]


@pytest.mark.parametrize("layer", [torch.nn.Dropout(0.5), torch.nn.BatchNorm1d(6)])
def test_seq_to_ann_keeps_every_step_for_dropout_and_batchnorm_in_training(layer):
    torch.manual_seed(0)
    T, B = 4, 8
    net = models.SeqToANN(layer, torch.nn.Linear(6, 2))
    static = data.direct_encode(torch.randn(B, 6), T)
    assert _rows_seen(net, static)[1] == [T * B]        # one dropout mask / batch statistics
    net.eval()                                          # per sample and deterministic again
    y, seen = _rows_seen(net, static)
    assert seen == [B]
    assert torch.allclose(y, net.layers(static.contiguous().flatten(0, 1)).unflatten(0, (T, B)),
                          rtol=0, atol=1e-6)
    net.train()
    layer.eval()                                        # what counts is the layer's own mode
    assert _rows_seen(net, static)[1] == [B]


def test_seq_to_ann_runs_the_layers_before_batchnorm_once():
    """Convolution (here Linear) then batch normalisation in training: the first runs once per
    sample, the normalisation still sees every step, so its statistics are those of T * B rows."""
    import copy
    torch.manual_seed(0)
    T, B = 4, 8
    fast = models.SeqToANN(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Tanh())
    slow = copy.deepcopy(fast)
    slow.reuse_static = False
    static = data.direct_encode(torch.randn(B, 6), T)
    rows = {}
    for name, net in (("fast", fast), ("slow", slow)):
        seen = []
        hooks = [m.register_forward_pre_hook(lambda m, a, seen=seen: seen.append(a[0].shape[0]))
                 for m in net.layers]
        y = net(static)
        for h in hooks:
            h.remove()
        g = torch.autograd.grad(y, list(net.parameters()), torch.ones_like(y) + y.detach())
        rows[name] = (seen, y, g)
    assert rows["fast"][0] == [B, T * B, T * B] and rows["slow"][0] == [T * B] * 3
    assert torch.allclose(rows["fast"][1], rows["slow"][1], rtol=0, atol=1e-5)
    for a, b in zip(rows["fast"][2], rows["slow"][2]):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    bn_fast, bn_slow = fast.layers[1], slow.layers[1]
    assert torch.allclose(bn_fast.running_mean, bn_slow.running_mean, rtol=0, atol=1e-6)
    assert torch.allclose(bn_fast.running_var, bn_slow.running_var, rtol=1e-5, atol=0)


def test_mlp_with_direct_encoding_matches_a_per_step_input():
    torch.manual_seed(0)
    net = models.build_model("mlp", (1, 8, 8), 10, hidden=32)
    img = 3 * torch.rand(16, 1, 8, 8)
    outs, grads = [], []
    for x in (data.direct_encode(img, 8), data.direct_encode(img, 8).contiguous()):
        reset_net(net)
        net.zero_grad()
        hidden = net[:3](x)                  # the spikes of the hidden layer, then the output
        out = net[3:](hidden)
        (out.sum() + hidden.mean()).backward()
        outs.append(torch.cat([hidden.flatten(), out.flatten()]))
        grads.append([p.grad.clone() for p in net.parameters()])
    assert torch.equal(outs[0], outs[1]) and outs[0].sum() > 0   # same spikes, some fired
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("neuron", ["lif", "if", "plif"])
def test_membrane_traces_reproduce_the_spikes(neuron):
    torch.manual_seed(0)
    net = models.build_model("mlp", (1, 8, 8), 10, neuron=neuron, hidden=32)
    with torch.no_grad():   # a learnt time constant far from the initial one
        for p in net.parameters():
            if p.dim() == 0:
                p.fill_(1.0)   # 1/tau = sigmoid(1) = 0.73, not the initial 0.5
    rec = plots.record(net, 3 * torch.rand(6, 2, 1, 8, 8))
    assert len(rec) == 2
    assert (rec["2"]["spikes"] > 0).any()   # the hidden layer fires
    for r in rec.values():
        x = r["input"][:, 0]
        v = plots.membrane_traces(r["module"], x)
        assert v.shape == x.shape
        # the potential is at or above the threshold exactly where the layer fired
        assert torch.equal(v >= 1.0, r["spikes"][:, 0] > 0)
