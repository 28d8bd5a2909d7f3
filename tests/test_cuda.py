"""The CUDA backend against the reference and the CPU backend.

Each test runs on two targets: a GPU (skipped, with the reason, where the CUDA backend is not
usable) and the host emulation of the same kernel file (tests/cuda_emulation.py), which runs
wherever a C++ compiler and Cython are present. Tests that need a GPU itself (streams,
devices) run on the GPU only."""
import inspect
from typing import Any, NamedTuple, Optional

import pytest
import torch

import spikecore
from spikecore import backends, dispatch, neuron, reference
from spikecore.autograd import NeuronFunction
from helpers import all_configs, cfg_id, cfg_seed, grad_tol, make_cfg, make_inputs
from test_inputs import check_empty, check_nan_inf, check_non_contiguous

requires_gpu = pytest.mark.skipif(
    not spikecore.cuda_available(),
    reason=f"CUDA backend unavailable: {spikecore.cuda_unavailable_reason()}")

CONFIGS = list(all_configs())
CUDA_DTYPES = [torch.float32, torch.float16, torch.bfloat16]


class Target(NamedTuple):
    """Where a test runs the CUDA kernels: the tensors' device and the backend to name."""
    device: str
    backend: Optional[str]
    emulation: Any = None   # the emulated kernel module (tests/cuda_emulation.py), or None

    def put(self, t):
        """A copy of ``t`` on the target's device (a copy on the host too, so that the test's
        CPU and CUDA inputs never share a tensor)."""
        return t.to(self.device, copy=True)


@pytest.fixture(params=["gpu", "host"], ids=["gpu", "host-emulation"])
def target(request):
    if request.param == "gpu":
        if not spikecore.cuda_available():
            pytest.skip(f"CUDA backend unavailable: {spikecore.cuda_unavailable_reason()}")
        return Target("cuda", None)
    return Target("cpu", "cuda-host-emulation", request.getfixturevalue("cuda_host"))


def _launched(target):
    """Kernel launches so far on the emulation (None on a GPU, which does not count them)."""
    return None if target.emulation is None else target.emulation.last_launch()[0]


def _autograd_grads(cfg, x, v, gs, gv, backend, multi_step):
    xa, va = x.clone().requires_grad_(), v.clone().requires_grad_()
    s, vn = NeuronFunction.apply(xa, va, cfg, multi_step, backend)
    gx, gvv = torch.autograd.grad((s * gs).sum() + (vn * gv).sum(), (xa, va))
    return s, vn, gx, gvv


@pytest.mark.parametrize("multi_step, shape", [(True, (3, 37)), (True, (4, 40)), (False, (3, 37)),
                                               (False, (4, 40))],
                         ids=["multi-odd", "multi-wide", "single-odd", "single-wide"])
@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_cuda_matches_cpu_and_reference(target, cfg, dtype, multi_step, shape):
    """N = 111 runs one neuron per thread; N = 160 the 16-byte groups (and, in the backward
    from H, the kernels instantiated per surrogate)."""
    x, v = make_inputs(cfg, 6, shape, dtype, seed=cfg_seed(cfg, 997))
    if not multi_step:
        x = x[0]
    g = torch.Generator().manual_seed(2)
    gs = torch.randn(x.shape, generator=g).to(dtype)
    gv = torch.randn(v.shape, generator=g).to(dtype)
    put, backend = target.put, target.backend
    cpu = dispatch.forward(x, v, cfg, multi_step=multi_step, backend="cpu", with_grad=True)
    gpu = dispatch.forward(put(x), put(v), cfg, multi_step=multi_step, backend=backend,
                           with_grad=True)
    # same float32 arithmetic: identical spikes and potentials
    assert torch.equal(gpu.spike.cpu(), cpu.spike)
    assert torch.equal(gpu.v_next.cpu(), cpu.v_next)
    tol = grad_tol(dtype)
    torch.testing.assert_close(gpu.grad_s_to_h.cpu(), cpu.grad_s_to_h, **tol)
    torch.testing.assert_close(gpu.grad_v_to_h.cpu(), cpu.grad_v_to_h, **tol)
    # training route against the CPU backend (itself checked against reference autograd)
    s_c, v_c, gx_c, gv_c = _autograd_grads(cfg, x, v, gs, gv, "cpu", multi_step)
    s_g, v_g, gx_g, gv_g = _autograd_grads(cfg, put(x), put(v), put(gs), put(gv), backend,
                                           multi_step)
    assert torch.equal(s_g.cpu(), s_c)
    # The CUDA backend saves H in the input's dtype, the CPU backend computes 16-bit inputs in
    # float32 and saves that H: where the surrogate is steep its slope times the rounding of H
    # (2^-9 relative in bfloat16, 2^-12 in float16) shows up in a few gradients. The exact
    # check, from the H the kernels saved, is below.
    tol_train = {torch.bfloat16: dict(rtol=0.1, atol=0.15),
                 torch.float16: dict(rtol=0.02, atol=0.03)}.get(dtype, tol)
    torch.testing.assert_close(gx_g.cpu(), gx_c, **tol_train)
    torch.testing.assert_close(gv_g.cpu(), gv_c, **tol_train)
    # given the H it saved, the GPU backward is the reference backward (float32 arithmetic)
    saved = dispatch.forward(put(x), put(v), cfg, multi_step=multi_step, backend=backend,
                             save_h=True)
    seq = (lambda t: t) if multi_step else (lambda t: t.unsqueeze(0))
    h16 = seq(saved.h_seq).float().cpu()
    assert torch.equal(reference.fire(h16, cfg), seq(cpu.spike).float())
    gx_r, gv_r = reference.bptt_from_h(seq(gs).float(), gv.float(), h16, cfg)
    gx_k, gv_k = dispatch.backward(put(gs), put(gv), cfg, h_seq=saved.h_seq,
                                   multi_step=multi_step, backend=backend)
    torch.testing.assert_close(gx_k.cpu(), gx_r.view(x.shape).to(dtype), **tol)
    torch.testing.assert_close(gv_k.cpu(), gv_r.to(dtype), **tol)
    # teaching route on the GPU
    gx_t, gv_t = dispatch.backward(put(gs), put(gv), cfg, multi_step=multi_step,
                                   backend=backend, grad_s_to_h=gpu.grad_s_to_h,
                                   grad_v_to_h=gpu.grad_v_to_h)
    torch.testing.assert_close(gx_t.cpu(), gx_c, **tol)
    torch.testing.assert_close(gv_t.cpu(), gv_c, **tol)


@requires_gpu
@pytest.mark.parametrize("cfg", CONFIGS[::7], ids=cfg_id)
def test_cuda_reference_backend_on_gpu(cfg):
    x, v = make_inputs(cfg, 5, (64,), torch.float32)
    x, v = x.cuda(), v.cuda()
    a = dispatch.forward(x, v, cfg)
    b = reference.fptt(x, v, cfg)
    assert torch.equal(a.spike, b[0]) and torch.equal(a.v_next, b[1])


def test_float64_rejected(target):
    x = target.put(torch.rand(3, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x_seq has dtype torch.float64"):
        neuron.IF_hard_reset_fptt(x, target.put(torch.zeros(4, dtype=torch.float64)), 1.0, 0.0,
                                  backend=target.backend)


@requires_gpu
def test_mixed_devices():
    with pytest.raises(ValueError, match="v is on cpu but x_seq is on cuda"):
        neuron.IF_hard_reset_fptt(torch.rand(3, 4, device="cuda"), torch.zeros(4), 1.0, 0.0)
    with pytest.raises(ValueError, match="backend 'cpu' runs on cpu tensors"):
        neuron.IF_hard_reset_fptt(torch.rand(3, 4, device="cuda"),
                                  torch.zeros(4, device="cuda"), 1.0, 0.0, backend="cpu")


@requires_gpu
def test_side_stream_and_large_n():
    cfg = make_cfg("LIF", False, 0.0)
    x = torch.rand(4, 1 << 20, device="cuda") * 2
    v = torch.zeros(1 << 20, device="cuda")
    ref = dispatch.forward(x, v, cfg, backend="reference")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = dispatch.forward(x, v, cfg)
        total = got.spike.sum()          # a torch op on the same stream sees the result
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(got.spike, ref.spike) and torch.equal(got.v_next, ref.v_next)
    assert total.item() == ref.spike.sum().item()


@pytest.mark.parametrize("dtype, eps", [(torch.float16, 2 ** -13), (torch.bfloat16, 2 ** -10)])
def test_half_saved_h_keeps_the_spike_decision(target, dtype, eps):
    """H = 1 - eps does not fire but rounds to 1.0 in 16 bits; the saved H must not fire
    either, or the backward pass would use the wrong dV/dH (here 1 - S with detach_reset)."""
    cfg = make_cfg("IF", False, 0.0, detach_reset=True)
    v = torch.tensor([0.25 - eps], dtype=dtype)
    x = torch.tensor([[0.75]], dtype=dtype)
    h = v.float() + x[0].float()
    assert v.float().item() == 0.25 - eps and h.item() < 1.0 and h.to(dtype).item() == 1.0
    xa, va = target.put(x).requires_grad_(), target.put(v).requires_grad_()
    s, vn = NeuronFunction.apply(xa, va, cfg, True, target.backend)
    assert s.item() == 0.0
    vn.float().sum().backward()
    assert va.grad.item() == 1.0      # dV/dH = 1 - S = 1, dH/dV = 1


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_half_saved_h_beyond_the_range_stays_finite(target, dtype):
    """H is computed in float32, so it can leave the 16-bit range (float16: 20 + 65504); saved
    as infinity it would make the reset term (V_r - H) g' of the backward inf * 0 = NaN. It is
    saved as the largest finite value instead, and the gradients are the CPU backend's (which
    keeps H in float32 for 16-bit inputs) up to that rounding."""
    big = torch.finfo(dtype).max
    over = 20.0 if dtype is torch.float16 else 1.5 * 2.0 ** 119   # H past the rounding boundary
    cfg = make_cfg("IF", False, 0.0)                   # hard reset, reset kept in the graph
    x = torch.tensor([[big, -big, 0.5, big]], dtype=dtype)
    v = torch.tensor([over, -over, 0.0, 0.0], dtype=dtype)
    h = v.float() + x[0].float()
    assert torch.isfinite(h).all() and torch.isinf(h[:2].to(dtype)).all()
    got = dispatch.forward(target.put(x), target.put(v), cfg, backend=target.backend,
                           save_h=True)
    assert torch.equal(got.h_seq.cpu()[0, :2], torch.tensor([big, -big], dtype=dtype))
    gs, gv = torch.ones_like(x), torch.ones_like(v)
    gx, gvv = dispatch.backward(target.put(gs), target.put(gv), cfg, h_seq=got.h_seq,
                                backend=target.backend)
    wx, wv = dispatch.backward(gs, gv, cfg, h_seq=dispatch.forward(
        x, v, cfg, backend="cpu", save_h=True).h_seq, backend="cpu")
    assert torch.isfinite(gx.float()).all() and torch.isfinite(gvv.float()).all()
    torch.testing.assert_close(gx.cpu(), wx, rtol=2e-3, atol=0)
    torch.testing.assert_close(gvv.cpu(), wv, rtol=2e-3, atol=0)


@pytest.mark.parametrize("node_cls, kw", [
    (spikecore.MultiStepLIFNode, dict(tau=2.0)), (spikecore.MultiStepIFNode, {}),
    (spikecore.MultiStepParametricLIFNode, dict(init_tau=3.0))], ids=["lif", "if", "plif"])
def test_nodes_on_cuda(target, node_cls, kw):
    """Nodes on CUDA (their plans: the base Plan, which saves H) against the same nodes on
    the CPU (whose small layers save their input): the same spikes, close gradients of the
    input and of a learnable time constant."""
    cpu_node = node_cls(**kw)
    gpu_node = node_cls(**kw, backend=target.backend).to(target.device)
    x = torch.rand(8, 4, 16) * 2
    for _ in range(2):   # the first call makes the plan, the second reuses it
        cpu_node.reset()
        gpu_node.reset()
        xc, xg = x.clone().requires_grad_(), target.put(x).requires_grad_()
        sc, sg = cpu_node(xc), gpu_node(xg)
        assert sg.device.type == target.device and torch.equal(sg.cpu(), sc)
        w = torch.linspace(-1, 1, sc.numel()).view(sc.shape)
        (sc * w).sum().backward()
        (sg * target.put(w)).sum().backward()
        torch.testing.assert_close(xg.grad.cpu(), xc.grad, rtol=1e-5, atol=1e-6)
    for pc, pg in zip(cpu_node.parameters(), gpu_node.parameters()):
        torch.testing.assert_close(pg.grad.cpu(), pc.grad, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        gpu_node.reset()
        assert torch.equal(gpu_node(target.put(x)).cpu(), sc)


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("cfg", CONFIGS[::5], ids=cfg_id)
def test_absent_state_on_cuda_equals_the_explicit_tensor(target, cfg, dtype):
    """An absent v, V[-1] or grad_v_next (a null pointer for the kernels, or a filled tensor for
    a 16-bit state at rest away from 0) gives the bits of torch.full(v_rest) and of zeros."""
    x, v = make_inputs(cfg, 6, (3, 40), dtype, seed=cfg_seed(cfg, 991))
    x, v = target.put(x), target.put(v)
    rest = target.put(torch.full(v.shape, cfg.v_rest, dtype=dtype))
    zeros = torch.zeros_like(v)
    kw = dict(save_h=True, save_v=True, with_grad=True, backend=target.backend)
    got, want = dispatch.forward(x, None, cfg, **kw), dispatch.forward(x, rest, cfg, **kw)
    for name, g, w in zip(got._fields, got, want):
        assert torch.equal(g, w), name
    gs = target.put(torch.randn(x.shape, generator=torch.Generator().manual_seed(5)).to(dtype))
    for route in (dict(h_seq=want.h_seq),
                  dict(grad_s_to_h=want.grad_s_to_h, grad_v_to_h=want.grad_v_to_h)):
        a = dispatch.backward(gs, None, cfg, backend=target.backend, **route)
        b = dispatch.backward(gs, zeros, cfg, backend=target.backend, **route)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    if cfg.neuron == "LIF":   # (a learnable time constant exists for LIF only)
        a = dispatch.backward_plif(gs, None, cfg, h_seq=want.h_seq, v_init=None,
                                   backend=target.backend)
        b = dispatch.backward_plif(gs, zeros, cfg, h_seq=want.h_seq, v_init=rest,
                                   backend=target.backend)
        assert all(torch.equal(p, q) for p, q in zip(a, b))


NAMED_FUNCTIONS = sorted(name for name in neuron.__all__
                         if name.startswith(("LIF_", "IF_")))
#: the value of each scalar argument of the named kernel functions
SCALARS = dict(v_threshold=1.0, v_reset=-0.2, reciprocal_tau=0.4, detach_input=True, alpha=3.0,
               detach_reset=False, grad_surrogate_function_index=5)


@pytest.mark.parametrize("name", NAMED_FUNCTIONS)
def test_every_named_kernel_function(target, name):
    """Each function of the spikingjelly.cext.neuron API on the CUDA backend, against the
    same call on the CPU backend: spikes and potentials bit for bit, local gradients and BPTT
    results within float32 rounding."""
    fn = getattr(neuron, name)
    multi = "fptt" in name or "bptt" in name
    shape = (5, 4, 10) if multi else (4, 10)
    g = torch.Generator().manual_seed(len(name))
    tensors = dict(x=torch.rand(shape, generator=g) * 1.5, v=torch.rand(shape[-2:], generator=g),
                   grad_spike=torch.randn(shape, generator=g),
                   grad_v_next=torch.randn(shape[-2:], generator=g),
                   grad_s_to_h=torch.rand(shape, generator=g),
                   grad_v_to_h=torch.rand(shape, generator=g) * 2 - 0.5)
    tensors.update(x_seq=tensors["x"], grad_spike_seq=tensors["grad_spike"])
    args = [tensors[p] if p in tensors else SCALARS[p]
            for p in inspect.signature(fn).parameters if p != "backend"]
    want = fn(*args, backend="cpu")
    before = _launched(target)
    got = fn(*(target.put(a) if torch.is_tensor(a) else a for a in args),
             backend=target.backend)
    assert before is None or _launched(target) == before + 1
    assert len(got) == len(want)
    exact = 2 if "forward" in name or "fptt" in name else 0   # spike, v_next
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.device.type == target.device and a.shape == b.shape
        if k < exact:
            assert torch.equal(a.cpu(), b), (name, k)
        else:
            torch.testing.assert_close(a.cpu(), b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["LIFStep", "LIFMultiStep", "IFStep", "IFMultiStep"])
def test_spec_autograd_functions(target, name, monkeypatch):
    """The API's autograd Functions, which choose the backend by device: on the host target the
    emulated CUDA backend is made the default for CPU tensors for the call."""
    fn = getattr(neuron, name)
    shape = (5, 4, 10) if "Multi" in name else (4, 10)
    g = torch.Generator().manual_seed(7)
    x, v = torch.rand(shape, generator=g) * 1.5, torch.rand(shape[-2:], generator=g)
    w = torch.randn(shape, generator=g)
    scalars = (1.0, -0.2, 3.0, False, 5) + ((0.4, True) if name.startswith("LIF") else ())

    def run(x, v, w):
        xa, va = x.requires_grad_(), v.requires_grad_()
        s, vn = fn.apply(xa, va, *scalars)
        ((s * w).sum() + vn.sum()).backward()
        return s, vn, xa.grad, va.grad

    want = run(x.clone(), v.clone(), w)
    if target.emulation is not None:
        monkeypatch.setitem(backends._BY_DEVICE, "cpu", target.backend)
        monkeypatch.setattr(backends, "_READY", {})
    before = _launched(target)
    got = run(target.put(x), target.put(v), target.put(w))
    assert before is None or _launched(target) == before + 2   # forward and BPTT
    assert torch.equal(got[0].cpu(), want[0]) and torch.equal(got[1].cpu(), want[1])
    torch.testing.assert_close(got[2].cpu(), want[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[3].cpu(), want[3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("steps, n", [(0, 5), (3, 0), (0, 0)])
def test_empty(target, steps, n):
    before = _launched(target)
    check_empty(steps, n, target.backend, target.put)
    if before is not None:   # no neuron: nothing to launch; T = 0 still copies V and dL/dV
        assert (_launched(target) > before) == (n > 0)


@pytest.mark.parametrize("surrogate_index", range(len(spikecore.surrogate.SURROGATES)))
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("neuron_kind", ["IF", "LIF"])
def test_nan_inf_like_reference(target, neuron_kind, v_reset, surrogate_index):
    check_nan_inf(make_cfg(neuron_kind, False, v_reset, surrogate_index), torch.float32,
                  target.backend, target.put)


def test_non_contiguous_inputs(target):
    check_non_contiguous(torch.float32, target.backend, target.put)


@pytest.mark.parametrize("dtype, bound", [(torch.float16, 5e-5), (torch.bfloat16, 5e-4)],
                         ids=["f16", "bf16"])
def test_half_learnable_tau_gradient_within_its_documented_error(target, dtype, bound):
    """16-bit inputs keep H in 16 bits on CUDA, and dL/dk sums dL/dH (H[t] - V[t-1]) / k over
    rounded values; the CPU computes the same inputs in float32 throughout. The docs (kernels
    page) give the difference this test bounds, relative to the summed gradient (of terms of
    one sign mostly: dL/dS > 0, so that the sum does not cancel and hide the error's size)."""
    cfg = make_cfg("LIF", False, 0.0, tau=3.0)
    gen = torch.Generator().manual_seed(11)
    x = (torch.rand(8, 4096, generator=gen) * 1.5).to(dtype)
    gs = torch.rand(8, 4096, generator=gen).to(dtype)   # dL/dS > 0: a sum that does not cancel
    rel = []
    for trial in range(6):
        xs = x.roll(trial * 97, dims=1)
        got = dispatch.forward(target.put(xs), None, cfg, backend=target.backend, save_h=True)
        g = dispatch.backward_plif(target.put(gs), None, cfg, h_seq=got.h_seq, v_init=None,
                                   backend=target.backend)[2].item()
        ref = dispatch.forward(xs.float(), None, cfg, backend="cpu", save_h=True)
        w = dispatch.backward_plif(gs.float(), None, cfg, h_seq=ref.h_seq, v_init=None,
                                   backend="cpu")[2].item()
        rel.append(abs(g - w) / abs(w))
    assert max(rel) < bound, rel
