"""spikecore.optim.Adam against torch.optim.Adam(fused=True): the same parameters bit for bit,
on the short path and on every route that falls back to the inherited step."""
import copy

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

import spikecore
from spikecore import optim
from spikecore.train import make_optimizer


def _net(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)


def _train(net, opt, steps=12, lr_decay=0.8, seed=1, closure=False, freeze_at=None):
    """``steps`` steps on random batches (the same for every call with ``seed``), the learning
    rate of every group multiplied by ``lr_decay`` after each, as a scheduler would; from step
    ``freeze_at`` on, the first layer's bias gets no gradient."""
    gen = torch.Generator().manual_seed(seed)
    dtype = next(net.parameters()).dtype
    losses = []
    for i in range(steps):
        if i == freeze_at:
            net[0].bias.requires_grad_(False)
        x = torch.randn(4, 6, generator=gen).to(dtype)

        def loss_fn():
            opt.zero_grad()
            loss = net(x).square().mean()
            loss.backward()
            return loss
        if closure:
            losses.append(opt.step(loss_fn))
        else:
            loss_fn()
            assert opt.step() is None
        for group in opt.param_groups:
            group["lr"] *= lr_decay
    return losses


def _pair(dtype=torch.float32, groups=None, **kwargs):
    """(ours, torch's): two copies of one network with their optimisers."""
    a, b = _net(dtype), _net(dtype)
    params = (lambda n: groups(n)) if groups else (lambda n: n.parameters())
    lr = kwargs.pop("lr", 1e-2)
    return ((a, optim.Adam(params(a), lr=lr, **kwargs)),
            (b, torch.optim.Adam(params(b), lr=lr, fused=True, **kwargs)))


def _assert_same(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


@pytest.fixture
def short_path_only(monkeypatch):
    """After the first step (which creates the state through the inherited step), any call of
    the inherited step fails the test."""
    calls = []
    real = optim._inherited_step

    def guarded(self, closure=None):
        calls.append(1)
        if len(calls) > 1:
            raise AssertionError("the inherited step ran after the first step")
        return real(self, closure)
    monkeypatch.setattr(optim, "_inherited_step", guarded)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.1}, {"maximize": True},
                                    {"betas": (0.5, 0.9), "eps": 1e-3}])
def test_short_path_matches_torch_fused(dtype, kwargs, short_path_only):
    (a, oa), (b, ob) = _pair(dtype, **kwargs)
    _train(a, oa)
    _train(b, ob)
    _assert_same(a, b)
    assert len(short_path_only) == 1   # the first step only
    for p, q in zip(a.parameters(), b.parameters()):
        assert oa.state[p]["step"].item() == 12
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(oa.state[p][key], ob.state[q][key])


def test_groups_with_their_own_settings(short_path_only):
    def groups(net):
        return [{"params": net[0].parameters(), "lr": 3e-2, "weight_decay": 0.05},
                {"params": net[2].parameters()}]
    (a, oa), (b, ob) = _pair(groups=groups)
    _train(a, oa)
    _train(b, ob)
    _assert_same(a, b)


def test_an_empty_group_is_skipped(short_path_only):
    def groups(net):
        return [{"params": net.parameters()}, {"params": []}]
    (a, oa), (b, ob) = _pair(groups=groups)
    _train(a, oa)
    _train(b, ob)
    _assert_same(a, b)


def test_tensor_learning_rate():
    (a, oa), (b, ob) = _pair(lr=torch.tensor(1e-2))
    _train(a, oa, lr_decay=1.0)
    _train(b, ob, lr_decay=1.0)
    _assert_same(a, b)


@pytest.mark.parametrize("case", ["frozen", "frozen later", "amsgrad", "closure",
                                  "mixed dtypes"])
def test_fallbacks_match_torch_fused(case):
    kwargs = {"amsgrad": True} if case == "amsgrad" else {}
    (a, oa), (b, ob) = _pair(**kwargs)
    if case == "frozen":   # a parameter without a gradient is skipped, as torch skips it
        a[0].bias.requires_grad_(False)
        b[0].bias.requires_grad_(False)
    if case == "mixed dtypes":   # one group holding float32 and float64 parameters
        for net in (a, b):
            net[2].double()
            net.insert(2, _ToDouble())
        (a, oa), (b, ob) = ((a, optim.Adam(a.parameters(), lr=1e-2)),
                            (b, torch.optim.Adam(b.parameters(), lr=1e-2, fused=True)))
    kwargs = dict(closure=case == "closure", freeze_at=4 if case == "frozen later" else None)
    la = _train(a, oa, **kwargs)
    lb = _train(b, ob, **kwargs)
    _assert_same(a, b)
    if case == "closure":
        assert [x.item() for x in la] == [x.item() for x in lb]


class _ToDouble(nn.Module):
    def forward(self, x):
        return x.double()


def test_with_a_learning_rate_scheduler(recwarn, short_path_only):
    (a, oa), (b, ob) = _pair()
    for net, opt in ((a, oa), (b, ob)):
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
        for i in range(8):
            _train(net, opt, steps=1, lr_decay=1.0, seed=i)
            sched.step()
    _assert_same(a, b)
    assert oa.param_groups[0]["lr"] == 1e-2 * 0.5 ** 2
    assert not [w for w in recwarn if "lr_scheduler" in str(w.message)]


def test_parameters_off_the_cpu_take_the_inherited_step(monkeypatch):
    """The short route serves CPU parameters only (``meta`` tensors stand in for a GPU here:
    the group is refused before any kernel runs)."""
    opt = optim.Adam([torch.zeros(3, device="meta", requires_grad=True)], lr=1e-2)
    p = opt.param_groups[0]["params"][0]
    p.grad = torch.zeros(3, device="meta")
    opt.state[p] = {"step": torch.zeros((), device="meta"), "exp_avg": torch.zeros_like(p),
                    "exp_avg_sq": torch.zeros_like(p)}
    assert opt._fused_args(opt.param_groups[0]) is None
    cpu = optim.Adam([torch.zeros(3, requires_grad=True)], lr=1e-2)
    q = cpu.param_groups[0]["params"][0]
    q.grad = torch.ones(3)
    cpu.step()   # the state exists from here on
    assert cpu._fused_args(cpu.param_groups[0]) is not None


def test_step_hooks_run():
    (a, oa), _ = _pair()
    seen = []
    oa.register_step_pre_hook(lambda opt, args, kwargs: seen.append("pre"))
    oa.register_step_post_hook(lambda opt, args, kwargs: seen.append("post"))
    _train(a, oa, steps=3)
    assert seen == ["pre", "post"] * 3
    handle = register_optimizer_step_post_hook(
        lambda opt, args, kwargs: seen.append("global"))
    try:
        _train(a, oa, steps=1)
    finally:
        handle.remove()
    assert seen[-3:] == ["pre", "post", "global"]


def test_state_dict_moves_between_the_two():
    """A checkpoint of either optimiser resumes in the other with the same result."""
    (a, oa), (b, ob) = _pair()
    _train(a, oa, steps=5)
    _train(b, ob, steps=5)
    a2, b2 = copy.deepcopy(a), copy.deepcopy(b)
    ob2 = torch.optim.Adam(a2.parameters(), lr=1.0, fused=True)   # ours -> torch's
    ob2.load_state_dict(copy.deepcopy(oa.state_dict()))   # as if saved and loaded
    oa2 = optim.Adam(b2.parameters(), lr=1.0)                     # torch's -> ours
    oa2.load_state_dict(copy.deepcopy(ob.state_dict()))
    for net, opt in ((a, oa), (b, ob), (a2, ob2), (b2, oa2)):
        _train(net, opt, steps=5, seed=2)
    _assert_same(a, b)
    _assert_same(a2, a)
    _assert_same(b2, a)


def test_zero_grad():
    (a, oa), _ = _pair()
    a(torch.randn(2, 6)).sum().backward()
    oa.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in a.parameters())
    oa.zero_grad()
    assert all(p.grad is None for p in a.parameters())


@pytest.mark.parametrize("kwargs", [{"fused": False}, {"foreach": True}])
def test_refuses_other_implementations(kwargs):
    with pytest.raises(ValueError, match="always fused"):
        optim.Adam(_net().parameters(), lr=1e-2, **kwargs)


def test_probe_finds_the_fused_kernel():
    # PyTorch >= 2.4 has a CPU fused Adam; without it every step would take the inherited route
    assert optim._FUSED is torch._fused_adam_


def test_without_the_fused_kernel(monkeypatch):
    monkeypatch.setattr(optim, "_FUSED", None)
    (a, oa), (b, ob) = _pair()
    _train(a, oa)
    _train(b, ob)
    _assert_same(a, b)


def test_training_command_uses_it():
    opt = make_optimizer(_net().parameters(), 1e-2)
    assert isinstance(opt, optim.Adam) and opt.defaults["fused"]
    assert spikecore.optim.Adam is optim.Adam   # reachable after a plain ``import spikecore``
