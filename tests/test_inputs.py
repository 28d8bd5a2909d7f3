"""Bad input raises a clear exception; odd-but-valid input (empty, NaN/Inf, strided, half)
gives exactly what the reference gives."""
import pytest
import torch

import spikecore
from spikecore import backends, neuron, reference
from helpers import make_cfg

X = torch.rand(4, 6)
V = torch.zeros(6)


def _node_after(node, x):
    """``node`` after one call on ``x`` (its state v now has x's neuron shape)."""
    node(x)
    return node


@pytest.mark.parametrize("call, exc, match", [
    (lambda: neuron.LIF_hard_reset_fptt(X, torch.zeros(5), 1.0, 0.0, 0.5, False),
     ValueError, r"v must have shape \(6,\)"),
    (lambda: neuron.LIF_hard_reset_forward(X, V, 1.0, 0.0, 0.5, False),
     ValueError, r"v must have shape \(4, 6\)"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V.double(), 1.0, 0.0, 0.5, False),
     TypeError, "v has dtype torch.float64 but x_seq has dtype torch.float32"),
    (lambda: neuron.LIF_hard_reset_fptt(X.int(), V.int(), 1.0, 0.0, 0.5, False),
     TypeError, "x_seq must be a floating-point tensor"),
    (lambda: neuron.IF_hard_reset_fptt(X.bool(), V, 1.0, 0.0),
     TypeError, "x_seq must be a floating-point tensor"),
    (lambda: neuron.LIF_hard_reset_fptt(X.numpy(), V, 1.0, 0.0, 0.5, False),
     TypeError, "x_seq must be a torch.Tensor"),
    (lambda: neuron.LIF_hard_reset_fptt(X, [0.0] * 6, 1.0, 0.0, 0.5, False),
     TypeError, "v must be a torch.Tensor"),
    (lambda: neuron.LIF_hard_reset_fptt(X.to_sparse(), V, 1.0, 0.0, 0.5, False),
     TypeError, "x_seq must be a dense tensor, got layout torch.sparse_coo"),
    (lambda: spikecore.MultiStepLIFNode()(X.to_sparse_csr()),
     TypeError, "dv_seq must be a dense tensor, got layout torch.sparse_csr"),
    (lambda: _node_after(spikecore.MultiStepLIFNode(), X)(X[:, :4]),
     ValueError, r"the input has neurons of shape \(4,\) but the potential v left by the "
                 r"previous call has shape \(6,\); call reset\(\)"),
    (lambda: _node_after(spikecore.IFNode(), V)(X),
     ValueError, r"IFNode: the input has neurons of shape \(4, 6\).*shape \(6,\)"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, 1.0, 0.0, 0.0, False),
     ValueError, "reciprocal_tau must be > 0"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, 1.0, 0.0, -2.0, False),
     ValueError, "reciprocal_tau must be > 0"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, float("nan"), 0.0, 0.5, False),
     ValueError, "v_threshold must be finite"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, 1.0, "0", 0.5, False),
     TypeError, "v_reset must be a real number"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, 1.0, 0.0, 0.5, 1),
     TypeError, "detach_input must be a bool"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, 0.0, False, 0, 0.5, False),
     ValueError, "alpha must be > 0"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, 2.0, False, 9, 0.5, False),
     ValueError, "unknown surrogate function index 9"),
    (lambda: neuron.IF_bptt(X, V, X, X[:3]),
     ValueError, r"grad_v_to_h must have shape \(4, 6\)"),
    (lambda: neuron.IF_bptt(X, V, X.double(), X),
     TypeError, "grad_s_to_h has dtype"),
    (lambda: spikecore.dispatch.backward(X, V, make_cfg("LIF", False, 0.0), h_seq=X.t()),
     ValueError, r"h_seq must have shape \(4, 6\)"),
    (lambda: spikecore.dispatch.backward(X, V, make_cfg("LIF", False, 0.0), h_seq=X[:, :5]),
     ValueError, r"h_seq must have shape \(4, 6\)"),
    (lambda: spikecore.dispatch.backward(X, V, make_cfg("LIF", False, 0.0), h_seq=X,
                                         grad_s_to_h=X, grad_v_to_h=X),
     ValueError, "backward takes h_seq or the pair grad_s_to_h, grad_v_to_h, not both"),
    (lambda: spikecore.dispatch.backward_plif(X, V, make_cfg("IF"), h_seq=X, v_init=V),
     ValueError, "a learnable time constant needs a LIF neuron, got IF"),
    (lambda: spikecore.dispatch.backward_plif(X, V, make_cfg("LIF", False, 0.0), h_seq=X,
                                              v_init=V[:5]),
     ValueError, r"v_init must have shape \(6,\)"),
    (lambda: spikecore.LIFNode(tau=0.0), ValueError, "tau must be a finite number > 0"),
    (lambda: spikecore.LIFNode(tau=-1), ValueError, "tau must be a finite number > 0"),
    (lambda: spikecore.LIFNode(tau="2"), TypeError, "tau must be a real number"),
    (lambda: spikecore.IFNode(alpha=-1.0), ValueError, "alpha must be > 0"),
    (lambda: spikecore.IFNode(surrogate_function="Relu"), ValueError, "valid names"),
    (lambda: spikecore.IFNode(surrogate_function=12), ValueError, "valid indices"),
    (lambda: spikecore.MultiStepIFNode()(torch.tensor(1.0)), ValueError, r"\[T, \*\]"),
    (lambda: spikecore.IFNode()([1.0]), TypeError, "expects a torch.Tensor"),
    (lambda: neuron.IF_hard_reset_fptt(X, V, 1.0, 0.0, backend="tpu"),
     ValueError, "backend must be one of"),
    (lambda: neuron.IF_soft_reset_fptt(X, V, 1e39),
     ValueError, r"v_threshold=1e\+39 is too large for float32, the dtype this call"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, -1e39, 2.0, False, 0, 0.5, False),
     ValueError, r"v_reset=-1e\+39 is too large for float32"),
    (lambda: spikecore.dispatch.backward(X, None, make_cfg("IF", alpha=1e39), h_seq=X),
     ValueError, r"alpha=1e\+39"),
    (lambda: spikecore.MultiStepIFNode(v_threshold=1e39)(X.half()),
     ValueError, r"v_threshold=1e\+39 is too large for float32"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, 2.0, "yes", 0, 0.5, False),
     TypeError, "detach_reset must be a bool, got str"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, 2.0, 2, 0, 0.5, False),
     TypeError, "detach_reset must be a bool, got int"),
    (lambda: spikecore.MultiStepLIFNode(detach_reset="x"), TypeError, "detach_reset must be a bool"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, float("inf"), 0.0, 0.5, False),
     ValueError, "v_threshold must be finite, got inf"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, float("inf"), False, 0, 0.5,
                                                  False),
     ValueError, "alpha must be finite, got inf"),
    (lambda: neuron.LIF_hard_reset_fptt(X, V, 1.0, -float("inf"), 0.5, False),
     ValueError, "v_reset must be finite, got -inf"),
    (lambda: neuron.LIF_hard_reset_fptt_with_grad(X, V, 1.0, 0.0, 2.0, False, True, 0.5, False),
     TypeError, "surrogate must be a name or an index .* got a bool"),
    (lambda: neuron.LIF_bptt(X, torch.zeros(5), X, X, 0.5, False),
     ValueError, r"grad_v_next must have shape \(6,\) to match grad_spike_seq, got \(5,\)"),
    (lambda: neuron.LIF_bptt(X, V.double(), X, X, 0.5, False),
     TypeError, "grad_v_next has dtype torch.float64 but grad_spike_seq has dtype torch.float32"),
    (lambda: neuron.hard_reset_fptt_template(X, V, 1.0, 0.0, 0.5, False, 7),
     TypeError, r"takes at most 2 extra arguments \('reciprocal_tau', 'detach_input'\), got 3"),
    (lambda: neuron.hard_reset_fptt_template(X, V, 1.0, 0.0, 0.5, reciprocal_tau=0.5),
     TypeError, "got multiple values for argument 'reciprocal_tau'"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_input_raises(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_large_parameters_fit_float64():
    """float64 inputs are computed in float64, where 1e39 is an ordinary value."""
    s, v = neuron.IF_soft_reset_fptt(X.double() * 1e39, V.double(), 1e39)
    s_ref, v_ref, _, _ = reference.fptt(X.double() * 1e39, V.double(),
                                        make_cfg("IF", v_reset=None, v_threshold=1e39))
    assert torch.equal(s, s_ref) and torch.equal(v, v_ref) and s.sum() > 0


def test_mixed_devices_raise():
    meta_v = torch.zeros(6, device="meta")
    with pytest.raises(ValueError, match="v is on meta but x_seq is on cpu"):
        neuron.IF_hard_reset_fptt(X, meta_v, 1.0, 0.0)


def test_backend_device_mismatch():
    """CPU tensors sent to the CUDA backend: the device is named, whether or not this machine
    could run CUDA at all (the reason CUDA is unavailable would mislead here)."""
    with pytest.raises(ValueError, match="backend 'cuda' runs on cuda tensors, but the inputs "
                                         "are on cpu"):
        neuron.IF_hard_reset_fptt(X, V, 1.0, 0.0, backend="cuda")


def _node_with(node, **changes):
    for name, value in changes.items():
        setattr(node, name, value)
    return node


@pytest.mark.parametrize("node, exc, match", [
    (lambda: _node_with(spikecore.MultiStepLIFNode(), tau=0), ValueError,
     "tau must be a finite number > 0, got 0"),
    (lambda: _node_with(spikecore.MultiStepLIFNode(), tau=-2), ValueError,
     "tau must be a finite number > 0, got -2"),
    (lambda: _node_with(spikecore.LIFNode(), tau="a"), TypeError, "tau must be a real number"),
    (lambda: _node_with(spikecore.MultiStepParametricLIFNode(), init_tau=0.5), ValueError,
     "init_tau must be a finite number > 1"),
    (lambda: _node_with(spikecore.IFNode(), alpha=0.0), ValueError, "alpha must be > 0"),
], ids=["tau 0", "tau < 0", "tau str", "init_tau", "alpha"])
def test_parameters_changed_after_construction_are_checked(node, exc, match):
    """A parameter set on a built node is checked at the next call, with the same message as
    at construction."""
    with pytest.raises(exc, match=match):
        node()(X.clone().requires_grad_())


def test_learnable_time_constant_that_underflowed():
    node = spikecore.MultiStepParametricLIFNode()
    with torch.no_grad():
        node.w.fill_(-200.0)   # sigmoid(w) == 0 in float32
    with pytest.raises(ValueError, match=r"reciprocal_tau \(k = sigmoid\(w\) of a "
                                         r"ParametricLIF node.*must be > 0, got 0.0"):
        node(X.clone().requires_grad_())


def test_numpy_scalars_are_accepted():
    np = pytest.importorskip("numpy")
    a = spikecore.MultiStepLIFNode(tau=np.float32(2.0), alpha=np.float64(3.0),
                                   v_threshold=np.int64(1), surrogate_function=np.int64(4))
    b = spikecore.MultiStepLIFNode(tau=2.0, alpha=3.0, v_threshold=1.0, surrogate_function=4)
    assert a.config() == b.config()
    assert torch.equal(a(X), b(X))


def _same(t):
    return t


def check_empty(steps, n, backend=None, put=_same):
    """No step or no neuron: empty outputs, the potential and dL/dV unchanged. ``put`` moves a
    tensor to the device under test (tests/test_cuda.py passes its target's)."""
    x, v = put(torch.rand(steps, n)), put(torch.rand(n))
    s, v_next, gs2h, gv2h = neuron.LIF_hard_reset_fptt_with_grad(x, v, 1.0, 0.0, 2.0, False, 0,
                                                                 0.5, False, backend=backend)
    assert s.shape == (steps, n) and gs2h.shape == (steps, n) and gv2h.shape == (steps, n)
    assert torch.equal(v_next, v)      # no step: the potential is unchanged
    gx, gv = neuron.LIF_bptt(put(torch.ones(steps, n)), put(torch.ones(n)), gs2h, gv2h, 0.5,
                             False, backend=backend)
    assert gx.shape == (steps, n) and torch.equal(gv.cpu(), torch.ones(n))
    node = spikecore.MultiStepLIFNode(tau=2.0, backend=backend).to(x.device)
    xr = x.clone().requires_grad_()
    out = node(xr)
    out.sum().backward()
    assert out.shape == (steps, n) and xr.grad.shape == (steps, n)


def check_nan_inf(cfg, dtype, backend, put=_same):
    """NaN never fires and stays NaN; +Inf fires (hard reset then gives NaN: 0·Inf), -Inf
    stays silent; the kernel reproduces the reference bit for bit."""
    x = torch.rand(5, 8, dtype=dtype)
    x[0, 0], x[1, 1], x[2, 2], x[0, 3] = float("nan"), float("inf"), -float("inf"), float("inf")
    v = torch.zeros(8, dtype=dtype)
    v[4] = float("nan")
    s_ref, v_ref, h_ref, _ = reference.fptt(x, v, cfg)
    res = spikecore.dispatch.forward(put(x), put(v), cfg, backend=backend)
    assert torch.equal(res.spike.cpu(), s_ref)
    torch.testing.assert_close(res.v_next.cpu(), v_ref, equal_nan=True, rtol=0, atol=0)
    assert res.spike[:, 0].tolist()[0] == 0.0 and res.spike[1, 1] == 1.0
    # gradients: the teaching outputs and BPTT from H are NaN exactly where the reference's are
    # (a surrogate must not turn a NaN into a number), and close to it elsewhere
    res = spikecore.dispatch.forward(put(x), put(v), cfg, backend=backend, save_h=True,
                                     with_grad=True)
    _, _, gs_ref, gv_ref = reference.fptt_with_grad(x, v, cfg)
    grad_s = torch.rand(5, 8, dtype=dtype)
    grad_s[3, 5] = float("nan")
    gx_ref, gv_ref2 = reference.bptt_from_h(grad_s, torch.zeros(8, dtype=dtype), h_ref, cfg)
    gx, gv = spikecore.dispatch.backward(put(grad_s), None, cfg, h_seq=res.h_seq,
                                         backend=backend)
    for got, want in ((res.grad_s_to_h, gs_ref), (res.grad_v_to_h, gv_ref), (gx, gx_ref),
                      (gv, gv_ref2)):
        assert torch.isnan(want).any()
        torch.testing.assert_close(got.cpu(), want, equal_nan=True, rtol=1e-5, atol=1e-6)


def check_non_contiguous(dtype, backend=None, put=_same):
    """Transposed, sliced and broadcast (stride 0) tensors give the results of their
    contiguous copies."""
    x_t = put(torch.rand(6, 5, 4, dtype=dtype) * 2).transpose(1, 2)   # [6, 4, 5], transposed
    v0 = put(torch.rand(4, 5, dtype=dtype)).t().contiguous().t()
    a = neuron.LIF_hard_reset_fptt(x_t, v0, 1.0, 0.0, 0.5, False, backend=backend)
    b = neuron.LIF_hard_reset_fptt(x_t.contiguous(), v0.contiguous(), 1.0, 0.0, 0.5, False,
                                   backend=backend)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    x_slice = put(torch.rand(6, 10, dtype=dtype))[:, ::2]                # strided
    v_bcast = put(torch.tensor(0.25, dtype=dtype)).expand(5)             # stride 0
    c = neuron.IF_soft_reset_fptt(x_slice, v_bcast, 1.0, backend=backend)
    d = neuron.IF_soft_reset_fptt(x_slice.contiguous(), v_bcast.contiguous(), 1.0,
                                  backend=backend)
    assert all(torch.equal(p, q) for p, q in zip(c, d))
    g = put(torch.rand(5, dtype=dtype)).expand(6, 5)                     # broadcast grad
    zeros = put(torch.zeros(5, dtype=dtype))
    e = neuron.IF_bptt(g, zeros, g, g, backend=backend)
    f = neuron.IF_bptt(g.contiguous(), zeros, g.contiguous(), g.contiguous(), backend=backend)
    assert all(torch.equal(p, q) for p, q in zip(e, f))


@pytest.mark.parametrize("steps, n", [(0, 5), (3, 0), (0, 0)])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_empty(steps, n, backend):
    check_empty(steps, n, backend)


@pytest.mark.parametrize("surrogate_index", range(len(spikecore.surrogate.SURROGATES)))
@pytest.mark.parametrize("v_reset", [0.0, None])
@pytest.mark.parametrize("neuron_kind", ["IF", "LIF"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nan_inf_like_reference(dtype, neuron_kind, v_reset, surrogate_index):
    check_nan_inf(make_cfg(neuron_kind, False, v_reset, surrogate_index), dtype, "cpu")


def test_non_contiguous_inputs():
    check_non_contiguous(torch.float64)


def _train(node, x, weights):
    """Spikes, final v and dL/dx of sum(spikes * weights) through ``node`` from a fresh state."""
    node.reset()
    x = x.detach().requires_grad_()
    spikes = node(x)
    (spikes * weights).sum().backward()
    return spikes.detach(), node.v.detach(), x.grad


@pytest.mark.parametrize("node_cls, kw", [
    (spikecore.MultiStepLIFNode, dict(tau=3.0, v_threshold=0.8)),
    (spikecore.MultiStepIFNode, dict(v_reset=None)),
    (spikecore.MultiStepParametricLIFNode, dict(init_tau=3.0))], ids=["lif", "if", "plif"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_non_contiguous_training_calls(node_cls, kw, dtype):
    """The training route (plans, the learnable-τ Function, 16-bit casts) on a transposed input
    and with a broadcast incoming gradient (what sum() passes): the results of contiguous
    tensors, bit for bit."""
    gen = torch.Generator().manual_seed(9)
    base = (torch.rand(6, 7, 4, generator=gen) * 2).to(dtype)
    x_t = base.transpose(1, 2)                                           # [6, 4, 7], strided
    weights = torch.rand(7, generator=gen).to(dtype).expand(6, 4, 7)     # stride 0
    node = node_cls(**kw).to(dtype)
    strided = _train(node, x_t, weights)
    if node_cls is spikecore.MultiStepParametricLIFNode:
        grad_w, node.w.grad = node.w.grad.clone(), None
    plain = _train(node, x_t.contiguous(), weights.contiguous())
    for a, b in zip(strided, plain):
        assert torch.equal(a, b)
    if node_cls is spikecore.MultiStepParametricLIFNode:
        assert torch.equal(grad_w, node.w.grad)


def test_non_contiguous_saved_h_and_incoming_gradients():
    cfg = make_cfg("LIF", False, 0.0, 2, tau=3.0, v_threshold=0.8)
    x = torch.rand(5, 6, 8) * 2
    res = spikecore.dispatch.forward(x, None, cfg, save_h=True)
    h_t = res.h_seq.transpose(1, 2).contiguous().transpose(1, 2)         # same values, strided
    g = torch.randn(5, 8, 6).transpose(1, 2)
    gv = torch.randn(8, 6).t()
    assert not (h_t.is_contiguous() or g.is_contiguous() or gv.is_contiguous())
    a = spikecore.dispatch.backward(g, gv, cfg, h_seq=h_t)
    b = spikecore.dispatch.backward(g.contiguous(), gv.contiguous(), cfg, h_seq=res.h_seq)
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    c = spikecore.dispatch.backward_plif(g, gv, cfg, h_seq=h_t, v_init=None)
    d = spikecore.dispatch.backward_plif(g.contiguous(), gv.contiguous(), cfg,
                                         h_seq=res.h_seq, v_init=None)
    assert all(torch.equal(p, q) for p, q in zip(c, d))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_computed_in_float32(dtype):
    x = (torch.rand(6, 33) * 2).to(dtype)
    v = torch.zeros(33, dtype=dtype)
    s, v_next = neuron.LIF_hard_reset_fptt(x, v, 1.0, 0.0, 0.5, False)
    s32, v32 = neuron.LIF_hard_reset_fptt(x.float(), v.float(), 1.0, 0.0, 0.5, False)
    assert s.dtype == dtype and v_next.dtype == dtype
    assert torch.equal(s, s32.to(dtype)) and torch.equal(v_next, v32.to(dtype))


def test_backend_registry():
    assert set(backends.names()) >= {"cpu", "reference"}
    assert backends.for_device(torch.device("cpu")).name == "cpu"
    assert backends.available("reference")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.get("nope")


def test_torch_func_transforms_get_a_clear_error_from_native_kernels():
    """Native kernels read raw memory, which the wrapped tensors of vmap and grad do not have:
    a TypeError names the argument, also for a node whose plan matches the batched shape. The
    reference backend (PyTorch operations) still works under vmap."""
    from spikecore import dispatch
    cfg = make_cfg("LIF", False, 0.0)
    x = torch.rand(4, 6, 5) * 2

    def vmapped(fn):
        return torch.func.vmap(fn, in_dims=1, out_dims=1)

    with pytest.raises(TypeError, match="x_seq is a tensor inside a torch.func transform"):
        vmapped(lambda t: dispatch.forward(t, None, cfg, backend="cpu").spike)(x)
    with pytest.raises(TypeError, match="grad_spike_seq is a tensor inside a torch.func"):
        h = dispatch.forward(x, None, cfg, save_h=True).h_seq
        torch.func.vmap(lambda g, hs: dispatch.backward(g, None, cfg, h_seq=hs)[0],
                        in_dims=1, out_dims=1)(torch.ones_like(x), h)
    out = vmapped(lambda t: dispatch.forward(t, None, cfg, backend="reference").spike)(x)
    assert torch.equal(out, dispatch.forward(x, None, cfg, backend="reference").spike)
    node = spikecore.MultiStepLIFNode(tau=2.0)
    node(x[:, 0].requires_grad_())   # a plan for [4, 5], the shape vmap shows the node
    for run in (lambda: vmapped(lambda t: (node.reset(), node(t))[1])(x),
                lambda: torch.func.grad(lambda t: (node.reset(), node(t))[1].sum())(x[:, 0])):
        with pytest.raises(TypeError, match="dv_seq is a tensor inside a torch.func transform"):
            run()
