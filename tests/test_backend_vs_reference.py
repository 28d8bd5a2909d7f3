"""Every neuron x reset x detach_reset x surrogate x dtype x single/multi-step combination:
the CPU backend against the plain-PyTorch reference (spikecore/reference.py)."""
import pytest
import torch

from helpers import DTYPES, all_configs, cfg_id, cfg_seed, grad_tol, make_inputs
from spikecore import dispatch, reference
from spikecore.autograd import NeuronFunction

CONFIGS = list(all_configs())
SHAPE = (3, 37)       # trailing shape [*]; N = 111 neurons
STEPS = 6


def _reference_forward(cfg, x, v, multi_step):
    """Reference run in the compute dtype (float32 for half inputs), results in x's dtype."""
    xc = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    vc = v.to(xc.dtype)
    seq = xc if multi_step else xc.unsqueeze(0)
    spike, v_next, h_seq, _ = reference.fptt(seq, vc, cfg)
    gs2h = reference.surrogate_grad(h_seq, cfg)
    gv2h = reference.reset_grad(h_seq, spike, gs2h, cfg)
    if not multi_step:
        spike, gs2h, gv2h = spike[0], gs2h[0], gv2h[0]
    return [t.to(x.dtype) for t in (spike, v_next, gs2h, gv2h)]


def _reference_grads(cfg, x, v, grad_spike, grad_v, multi_step):
    """dL/dX and dL/dV[-1] by torch.autograd through the reference forward (float32 for half)."""
    wide = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    xr = x.to(wide).requires_grad_()
    vr = v.to(wide).requires_grad_()
    spike, v_next = reference.fptt_autograd(xr if multi_step else xr.unsqueeze(0), vr, cfg)
    if not multi_step:
        spike = spike[0]
    loss = (spike * grad_spike.to(wide)).sum() + (v_next * grad_v.to(wide)).sum()
    gx, gv = torch.autograd.grad(loss, (xr, vr), allow_unused=True)
    return gx.to(x.dtype), gv.to(x.dtype)


@pytest.mark.parametrize("multi_step", [True, False], ids=["multi", "single"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_cpu_matches_reference(cfg, dtype, multi_step):
    x, v = make_inputs(cfg, STEPS, SHAPE, dtype, seed=cfg_seed(cfg))
    if not multi_step:
        x = x[0]
    g = torch.Generator().manual_seed(1)
    grad_spike = torch.randn(x.shape, generator=g).to(dtype)
    grad_v = torch.randn(v.shape, generator=g).to(dtype)
    ref_spike, ref_v, ref_gs2h, ref_gv2h = _reference_forward(cfg, x, v, multi_step)

    # forward and the local gradients of the teaching path
    res = dispatch.forward(x, v, cfg, multi_step=multi_step, backend="cpu", with_grad=True)
    assert res.spike.dtype == dtype and res.spike.shape == x.shape
    assert torch.equal(res.spike, ref_spike), "spikes differ from the reference"
    torch.testing.assert_close(res.v_next, ref_v, rtol=0, atol=0)
    tol = grad_tol(dtype)
    torch.testing.assert_close(res.grad_s_to_h, ref_gs2h, **tol)
    torch.testing.assert_close(res.grad_v_to_h, ref_gv2h, **tol)

    # teaching path backward: stored grad_s_to_h / grad_v_to_h
    gx_teach, gv_teach = dispatch.backward(grad_spike, grad_v, cfg, multi_step=multi_step,
                                           grad_s_to_h=res.grad_s_to_h,
                                           grad_v_to_h=res.grad_v_to_h, backend="cpu")
    # training path: autograd Function saving only H
    xa, va = x.clone().requires_grad_(), v.clone().requires_grad_()
    spike, v_next = NeuronFunction.apply(xa, va, cfg, multi_step, "cpu")
    assert torch.equal(spike, ref_spike)
    gx_auto, gv_auto = torch.autograd.grad((spike * grad_spike).sum() + (v_next * grad_v).sum(),
                                           (xa, va))
    # independent: torch.autograd through the reference ops
    gx_ref, gv_ref = _reference_grads(cfg, x, v, grad_spike, grad_v, multi_step)
    torch.testing.assert_close(gx_auto, gx_ref, **tol)
    torch.testing.assert_close(gv_auto, gv_ref, **tol)
    torch.testing.assert_close(gx_teach, gx_ref, **tol)
    torch.testing.assert_close(gv_teach, gv_ref, **tol)
    if dtype in (torch.float32, torch.float64):
        # recomputing from H repeats the teaching path's arithmetic exactly
        assert torch.equal(gx_auto, gx_teach) and torch.equal(gv_auto, gv_teach)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("cfg", CONFIGS[::5], ids=cfg_id)
def test_reference_backend_matches_reference_module(cfg, dtype):
    """backend='reference' through the public dispatch gives the reference module's values."""
    x, v = make_inputs(cfg, STEPS, SHAPE, dtype)
    res = dispatch.forward(x, v, cfg, backend="reference", save_h=True)
    spike, v_next, h_seq, _ = reference.fptt(x, v, cfg)
    assert torch.equal(res.spike, spike) and torch.equal(res.v_next, v_next)
    assert torch.equal(res.h_seq, h_seq)
