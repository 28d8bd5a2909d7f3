"""spikecore in the PyTorch ecosystem: torch.compile through custom operators, autocast, the
nodes' state (v_seq, reset/detach, state_dict, .to(), copies, DDP) and determinism."""
import copy
import os
import time

import pytest
import torch
from torch import nn

import spikecore
from spikecore import dispatch, ops, reference
from helpers import make_cfg

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounterWithBackend  # noqa: E402

needs_cuda = pytest.mark.skipif(
    not spikecore.cuda_available(),
    reason=f"CUDA backend unavailable: {spikecore.cuda_unavailable_reason()}")


def multi_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), spikecore.MultiStepLIFNode(tau=2.0),
                         nn.Linear(16, 4),
                         spikecore.MultiStepLIFNode(tau=2.0, v_reset=None, detach_input=True,
                                                    store_v_seq=True))


def single_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), spikecore.LIFNode(tau=2.0, surrogate_function="Erf"),
                         nn.Linear(16, 4), spikecore.IFNode(v_reset=None))


def run_multi(net, x):
    spikecore.reset_net(net)
    return net(x)


def run_single(net, x):
    spikecore.reset_net(net)
    return torch.stack([net(x[t]) for t in range(x.shape[0])])


CASES = [(multi_net, run_multi), (single_net, run_single)]
CASE_IDS = ["multi_step", "single_step_loop"]


def _dynamo_reset():
    torch._dynamo.reset()


# --- 1. torch.compile ------------------------------------------------------------------------
@pytest.mark.parametrize("grad", [True, False], ids=["train", "no_grad"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_compile_has_no_graph_break(case, grad):
    _dynamo_reset()
    make, run = CASES[case]
    net = make()
    x = torch.rand(5, 3, 8) * 2
    with torch.set_grad_enabled(grad):
        ex = torch._dynamo.explain(lambda inp: run(net, inp))(x)
    assert ex.graph_break_count == 0, ex.break_reasons
    assert ex.graph_count == 1


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("case", range(len(CASES)), ids=CASE_IDS)
def test_compiled_matches_eager(case, backend):
    _dynamo_reset()
    make, run = CASES[case]
    eager, compiled = make(), make()
    fn = torch.compile(lambda inp: run(compiled, inp), backend=backend)
    for seed in range(2):   # the second call reuses the compiled graph
        x = torch.rand(5, 3, 8, generator=torch.Generator().manual_seed(seed)) * 2
        out_c, out_e = fn(x), run(eager, x)
        assert torch.equal(out_c, out_e)
        g = torch.randn_like(out_e)
        (out_c * g).sum().backward()
        (out_e * g).sum().backward()
        for pc, pe in zip(compiled.parameters(), eager.parameters()):
            torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-5, atol=1e-6)
        for mc, me in zip(compiled, eager):
            if isinstance(me, spikecore.BaseNode):
                assert torch.equal(mc.v, me.v)
                if getattr(me, "store_v_seq", False):
                    assert torch.equal(mc.v_seq, me.v_seq)


def test_state_causes_no_recompiles():
    """Single-step nodes called one step per compiled call: the float fresh state and the
    tensor state after it are two graphs, and that is all, however many batches follow."""
    _dynamo_reset()
    net = single_net()
    counter = CompileCounterWithBackend("aot_eager")
    step = torch.compile(lambda inp: net(inp), backend=counter)
    for _ in range(4):
        spikecore.reset_net(net)
        out = [step(torch.rand(3, 8)) for _ in range(5)]
        torch.stack(out).sum().backward()
    assert counter.frame_count == 2
    assert isinstance(net[1].v, torch.Tensor)


def test_compiled_training_uses_the_operators():
    _dynamo_reset()
    net = multi_net()
    gm = []

    def capture(g, inputs):
        gm.append(g)
        return g.forward

    torch.compile(lambda inp: run_multi(net, inp), backend=capture)(torch.rand(4, 2, 8))
    targets = {str(n.target) for n in gm[0].graph.nodes if n.op == "call_function"}
    assert targets & {"spikecore.neuron_forward", "spikecore.neuron_forward.default"}


CFG_CASES = [make_cfg("LIF", False, 0.0), make_cfg("LIF", True, None, 3, True),
             make_cfg("IF", False, -0.3, 5)]


@pytest.mark.parametrize("cfg", CFG_CASES, ids=["lif", "lif-detin-soft", "if"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_opcheck_forward(cfg, dtype):
    x = (torch.rand(4, 3, 5) * 2).to(dtype).requires_grad_()
    v = torch.rand(3, 5).to(dtype).requires_grad_()
    sc = ops.config_scalars(cfg)
    op = torch.ops.spikecore.neuron_forward.default
    for args in [(x, v, 0.0, None, *sc, True, "", True, True),
                 (x, None, 0.25, None, *sc, True, "", True, False),     # state made inside
                 (x[0], v, 0.0, None, *sc, False, "", True, False),     # one step
                 (x, v, 0.0, None, *sc, True, "reference", True, False)]:
        torch.library.opcheck(op, args)


def test_fake_h_dtype_is_the_compute_dtype():
    from torch._subclasses.fake_tensor import FakeTensorMode
    sc = ops.config_scalars(make_cfg())
    for dtype, expect in [(torch.float32, torch.float32), (torch.float64, torch.float64),
                          (torch.float16, torch.float32), (torch.bfloat16, torch.float32)]:
        x = torch.rand(3, 4).to(dtype)
        real = torch.ops.spikecore.neuron_forward(x, None, 0.0, None, *sc, True, "", True, True)
        with FakeTensorMode() as mode:
            fake = torch.ops.spikecore.neuron_forward(mode.from_tensor(x), None, 0.0, None, *sc,
                                                      True, "", True, True)
        for r, f in zip(real, fake):
            assert (r.shape, r.dtype, r.stride()) == (f.shape, f.dtype, f.stride())
        assert real[2].dtype == expect and real[0].dtype == dtype


def test_operators_match_the_autograd_function():
    cfg = make_cfg("LIF", False, None, 2)
    x = (torch.rand(6, 10, dtype=torch.float64) * 2).requires_grad_()
    v = torch.rand(10, dtype=torch.float64).requires_grad_()
    s, vn, h, vs = torch.ops.spikecore.neuron_forward(x, v, 0.0, None, *ops.config_scalars(cfg),
                                                      True, "", True, True)
    assert h.grad_fn is None and vs.grad_fn is None          # not differentiable
    s_ref, v_ref, h_ref, vs_ref = reference.fptt(x.detach(), v.detach(), cfg)
    assert torch.equal(s, s_ref) and torch.equal(vn, v_ref) and torch.equal(h, h_ref)
    assert torch.equal(vs, vs_ref)
    g, gv = torch.randn_like(s), torch.randn_like(vn)
    grads = torch.autograd.grad((s * g).sum() + (vn * gv).sum(), (x, v))
    xr, vr = x.detach().clone().requires_grad_(), v.detach().clone().requires_grad_()
    sr, vnr = reference.fptt_autograd(xr, vr, cfg)
    grads_ref = torch.autograd.grad((sr * g).sum() + (vnr * gv).sum(), (xr, vr))
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("detach_input", [False, True])
def test_learnable_reciprocal_tau_extension_point(detach_input):
    cfg = make_cfg("LIF", detach_input, None)
    x = (torch.rand(6, 4, 5, dtype=torch.float64) * 2).requires_grad_()
    v = torch.rand(4, 5, dtype=torch.float64).requires_grad_()
    k = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    s, vn, _ = ops.neuron(x, v, cfg, reciprocal_tau=k)
    g, gv = torch.randn_like(s), torch.randn_like(vn)
    grads = torch.autograd.grad((s * g).sum() + (vn * gv).sum(), (x, v, k))
    xr, vr, kr = (t.detach().clone().requires_grad_() for t in (x, v, k))
    sr, vnr = reference.fptt_autograd(xr, vr, cfg, reciprocal_tau=kr)
    grads_ref = torch.autograd.grad((sr * g).sum() + (vnr * gv).sum(), (xr, vr, kr))
    assert torch.equal(s, sr)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    torch.library.opcheck(torch.ops.spikecore.neuron_forward.default,
                          (x, None, 0.1, k, *ops.config_scalars(cfg), True, "", True, False))


# --- 2. autocast -----------------------------------------------------------------------------
@pytest.mark.parametrize("node_cls", [spikecore.MultiStepLIFNode, spikecore.MultiStepIFNode])
def test_cpu_bfloat16_autocast_matches_float32_on_the_same_inputs(node_cls):
    kw = dict(tau=2.0) if node_cls is spikecore.MultiStepLIFNode else {}
    x = (torch.rand(6, 4, 9) * 2).bfloat16().requires_grad_()
    x32 = x.detach().float().requires_grad_()
    node, node32 = node_cls(**kw), node_cls(**kw)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = node(x)
    out32 = node32(x32)
    assert out.dtype == torch.bfloat16 and node.v.dtype == torch.bfloat16
    assert torch.equal(out.float(), out32)                      # the kernel runs in float32
    assert torch.equal(node.v, node32.v.bfloat16())
    g = torch.randn(out.shape).bfloat16()
    (out * g).float().sum().backward()
    (out32 * g.float()).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert torch.equal(x.grad, x32.grad.bfloat16())


def test_cpu_bfloat16_autocast_network_trains():
    net = multi_net()
    x = torch.rand(5, 3, 8) * 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run_multi(net, x)
        assert out.dtype == torch.bfloat16
        loss = out.float().mean() + 0.1 * net[0].weight.float().pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in net.parameters())
    # single-step: a float32 state meets bfloat16 inputs under autocast and follows them
    node = spikecore.LIFNode(tau=2.0)
    node(torch.rand(3))
    assert node.v.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        node(nn.functional.linear(torch.rand(3), torch.eye(3)))
    assert node.v.dtype == torch.bfloat16


def test_cpu_autocast_compiles_without_graph_breaks():
    _dynamo_reset()
    net = multi_net()
    x = torch.rand(5, 3, 8)

    def fn(inp):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return run_multi(net, inp)

    ex = torch._dynamo.explain(fn)(x)
    assert ex.graph_break_count == 0, ex.break_reasons
    _dynamo_reset()
    eager = multi_net()
    out_c = torch.compile(fn, backend="aot_eager")(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_e = run_multi(eager, x)
    assert out_c.dtype == torch.bfloat16 and torch.equal(out_c, out_e)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_runs_half_kernels(dtype):
    torch.manual_seed(0)
    lin = nn.Linear(32, 64).cuda()
    node = spikecore.MultiStepLIFNode(tau=2.0)
    x = torch.rand(8, 4, 32, device="cuda") * 2
    with torch.autocast("cuda", dtype=dtype):
        y = lin(x)
        assert y.dtype == dtype
        y.retain_grad()
        out = node(y)
    assert out.dtype == dtype and node.v.dtype == dtype
    (h,) = out.grad_fn.saved_tensors
    assert h.dtype == dtype                       # CUDA keeps H in the half dtype
    ref = spikecore.MultiStepLIFNode(tau=2.0)
    y32 = y.detach().float().requires_grad_()
    out32 = ref(y32)
    mismatch = (out.float() != out32).float().mean().item()
    assert mismatch < 1e-3                         # only ties at the threshold may differ
    g = torch.randn(out.shape, device="cuda")
    (out.float() * g).sum().backward()
    (out32 * g.to(dtype).float()).sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()
    torch.testing.assert_close(y.grad.float(), y32.grad, rtol=4e-2, atol=4e-2)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_opcheck_and_compile(dtype):
    _dynamo_reset()
    cfg = make_cfg("LIF", False, 0.0)
    x = (torch.rand(4, 3, 5, device="cuda") * 2).to(dtype).requires_grad_()
    v = torch.rand(3, 5, device="cuda").to(dtype).requires_grad_()
    torch.library.opcheck(torch.ops.spikecore.neuron_forward.default,
                          (x, v, 0.0, None, *ops.config_scalars(cfg), True, "", True, False))
    net = multi_net().cuda()
    eager = multi_net().cuda()
    xin = torch.rand(5, 3, 8, device="cuda") * 2
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        ex = torch._dynamo.explain(lambda inp: run_multi(net, inp))(xin)
        assert ex.graph_break_count == 0
        out_c = torch.compile(lambda inp: run_multi(net, inp), backend="aot_eager")(xin)
        out_e = run_multi(eager, xin)
    assert torch.equal(out_c, out_e)


@needs_cuda
def test_cuda_kernels_are_run_to_run_deterministic():
    cfg = make_cfg("LIF", False, 0.0)
    x = torch.rand(16, 64, 1000, device="cuda") * 2
    g = torch.randn_like(x)
    results = []
    for _ in range(2):
        xa = x.clone().requires_grad_()
        s, vn, _ = ops.neuron(xa, 0.0, cfg)
        (s * g).sum().backward()
        results.append((s, vn, xa.grad))
    for a, b in zip(*results):
        assert torch.equal(a, b)


@needs_cuda
def test_state_follows_the_module_to_cuda_and_back():
    node = spikecore.MultiStepLIFNode(tau=2.0, store_v_seq=True)
    node(torch.rand(3, 4))
    node.cuda()
    assert node.v.is_cuda and node.v_seq.is_cuda
    node(torch.rand(3, 4, device="cuda"))
    node.cpu()
    assert node.v.device.type == "cpu"


# --- 3. state --------------------------------------------------------------------------------
@pytest.mark.parametrize("v_reset", [0.0, None])
def test_store_v_seq(v_reset):
    cfg = make_cfg("LIF", False, v_reset, tau=3.0)
    x = torch.rand(6, 2, 5, dtype=torch.float64) * 2
    v0 = torch.full((2, 5), cfg.v_rest, dtype=torch.float64)
    _, v_ref, _, v_seq_ref = reference.fptt(x, v0, cfg)
    for grad in (False, True):
        node = spikecore.MultiStepLIFNode(tau=3.0, v_reset=v_reset, store_v_seq=True)
        assert node.v_seq is None
        node(x.clone().requires_grad_(grad))
        assert node.v_seq.shape == x.shape
        assert torch.equal(node.v_seq, v_seq_ref) and torch.equal(node.v_seq[-1], node.v)
        assert node.v_seq.grad_fn is None and torch.equal(node.v, v_ref)
        node.reset()
        assert node.v_seq is None
    plain = spikecore.MultiStepIFNode()
    plain(x)
    assert plain.v_seq is None
    assert "store_v_seq=True" in repr(spikecore.MultiStepIFNode(store_v_seq=True))


def test_detach_net_truncates_bptt():
    net = nn.Sequential(nn.Linear(3, 4), spikecore.LIFNode(tau=2.0), nn.Linear(4, 4),
                        spikecore.MultiStepIFNode())
    x1 = torch.rand(2, 3, requires_grad=True)
    net(x1)
    v = net[1].v
    assert v.grad_fn is not None
    assert spikecore.detach_net(net) is net
    assert net[1].v.grad_fn is None and torch.equal(net[1].v, v)
    x2 = torch.rand(2, 3)
    net(x2).sum().backward()
    assert x1.grad is None                      # the second chunk stops at the detached state
    spikecore.reset_net(net)
    assert net[1].v == 0.0 and net[3].v == 0.0


def test_state_dict_holds_parameters_not_state():
    net = multi_net()
    net(torch.rand(4, 2, 8))
    sd = net.state_dict()
    assert set(sd) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert net[1].state_dict() == {}
    fresh = multi_net(seed=1)
    fresh.load_state_dict(sd, strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), net.parameters()))
    assert fresh[1].v == 0.0                     # a loaded model starts from the fresh state
    # a subclass's learnable parameters are saved and loaded with the rest

    class Learned(spikecore.MultiStepLIFNode):
        def __init__(self):
            super().__init__(tau=2.0)
            self.gain = nn.Parameter(torch.tensor(1.5))

    assert set(Learned().state_dict()) == {"gain"}


def test_state_follows_to_and_casts():
    node = spikecore.MultiStepLIFNode(tau=2.0, store_v_seq=True)
    node(torch.rand(3, 4, requires_grad=True))
    node.double()
    assert node.v.dtype == torch.float64 and node.v_seq.dtype == torch.float64
    node(torch.rand(3, 4, dtype=torch.float64))      # continues from the cast state
    node.to(torch.float32)
    assert node.v.dtype == torch.float32
    node.to("meta")
    assert node.v.is_meta
    node.reset()
    assert node.v == 0.0


def test_copies_keep_their_own_state():
    net = single_net()
    net(torch.rand(2, 8, requires_grad=True))           # v now carries a graph
    clone = copy.deepcopy(net)
    assert torch.equal(clone[1].v, net[1].v) and clone[1].v is not net[1].v
    assert clone[1].v.grad_fn is None
    clone(torch.rand(2, 8))
    assert not torch.equal(clone[1].v, net[1].v)
    # DataParallel's replicas start fresh: each one sees its own shard on its own device
    replica = net[1]._replicate_for_data_parallel()
    assert replica.v == 0.0 and isinstance(net[1].v, torch.Tensor)


class _Steps(nn.Module):
    """Runs a single-step network over the T steps of its input in one forward call, so that
    DistributedDataParallel sees one forward per backward."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x_seq):
        return torch.stack([self.net(x) for x in x_seq])


def _ddp_worker(rank, world, init_file, out_dir):
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world)
    try:
        net = single_net()
        local = copy.deepcopy(net)
        ddp = nn.parallel.DistributedDataParallel(_Steps(net))   # broadcast_buffers=True
        x = torch.rand(4, 3 + rank, 8, generator=torch.Generator().manual_seed(rank)) * 2
        for model in (ddp, _Steps(local)):
            spikecore.reset_net(model)
            model(x).sum().backward()
        torch.save({"v": net[1].v.detach(), "v_local": local[1].v.detach(),
                    "grad": net[0].weight.grad, "grad_local": local[0].weight.grad},
                   os.path.join(out_dir, f"rank{rank}.pt"))
        # release DDP's communication state while the peer is still there (a gloo peer that
        # is torn down after the other process has left can wait forever)
        del ddp
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available() or
                    not torch.distributed.is_gloo_available(), reason="needs gloo")
def test_ddp_processes_keep_their_own_state(tmp_path):
    import torch.multiprocessing as mp
    ctx = mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)),
                             nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two DDP workers did not finish within 120 s")
    r = [torch.load(tmp_path / f"rank{i}.pt") for i in range(2)]
    for i in range(2):
        # each process's v is its own batch's (the ranks even differ in batch size)
        assert r[i]["v"].shape == (3 + i, 16)
        assert torch.equal(r[i]["v"], r[i]["v_local"])
        # and the gradients were averaged over both
        torch.testing.assert_close(r[i]["grad"], (r[0]["grad_local"] + r[1]["grad_local"]) / 2)


# --- 4. determinism --------------------------------------------------------------------------
def _train(seed, steps=3):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 128), spikecore.MultiStepLIFNode(tau=2.0),
                        nn.Linear(128, 10), spikecore.MultiStepIFNode(v_reset=None))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(steps):
        x = torch.rand(8, 512, 20)      # 8 x 512 x 128 = 2^19 neuron-steps: the parallel kernel
        spikecore.reset_net(net)
        loss = net(x).mean(0).sub(0.5).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.state_dict()


def test_same_seed_gives_bit_identical_training_on_cpu():
    from spikecore import cpu_backend
    assert 8 * 512 * 128 >= cpu_backend.PARALLEL_MIN_ELEMENTS
    a, b = _train(7), _train(7)
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = _train(8)
    assert not torch.equal(a["0.weight"], c["0.weight"])


def test_node_with_learnable_reciprocal_tau_compiles():
    """The hook a learnable-τ node overrides: ``_reciprocal_tau_tensor`` returns k = 1/τ as a
    tensor; BaseNode does the rest, eager and compiled alike."""

    class LearnedTau(spikecore.MultiStepLIFNode):
        def __init__(self):
            super().__init__(tau=2.0)
            self.w = nn.Parameter(torch.tensor(0.3))

        def _reciprocal_tau_tensor(self):
            return torch.sigmoid(self.w)

    def make():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(8, 16), LearnedTau(), nn.Linear(16, 4), LearnedTau())

    _dynamo_reset()
    eager, compiled = make(), make()
    x = torch.rand(5, 3, 8) * 2
    ex = torch._dynamo.explain(lambda inp: run_multi(compiled, inp))(x)
    assert ex.graph_break_count == 0, ex.break_reasons
    out_c = torch.compile(lambda inp: run_multi(compiled, inp), backend="aot_eager")(x)
    out_e = run_multi(eager, x)
    assert torch.equal(out_c, out_e)
    out_c.sum().backward()
    out_e.sum().backward()
    assert eager[1].w.grad is not None and eager[1].w.grad != 0
    for pc, pe in zip(compiled.parameters(), eager.parameters()):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=1e-5, atol=1e-6)
