"""Property test: random shapes and parameters, CPU backend against the reference."""
import torch
from hypothesis import given, settings, strategies as st

from spikecore import dispatch, reference
from helpers import random_configs


@st.composite
def cases(draw):
    cfg = draw(random_configs())
    steps = draw(st.integers(0, 7))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    seed = draw(st.integers(0, 2**31 - 1))
    return cfg, steps, shape, dtype, seed


@settings(max_examples=150, deadline=None)
@given(cases())
def test_random_cases_match_reference(case):
    cfg, steps, shape, dtype, seed = case
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn((steps,) + shape, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    v = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    gs = torch.randn((steps,) + shape, generator=g, dtype=torch.float64).to(dtype)
    gv = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    res = dispatch.forward(x, v, cfg, backend="cpu", save_h=True)
    s_ref, v_ref, h_ref, _ = reference.fptt(x, v, cfg)
    assert torch.equal(res.spike, s_ref) and torch.equal(res.v_next, v_ref)
    assert torch.equal(res.h_seq, h_ref)
    gx, gvv = dispatch.backward(gs, gv, cfg, h_seq=res.h_seq, backend="cpu")
    gx_ref, gv_ref = reference.bptt_from_h(gs, gv, h_ref, cfg)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, **tol)
    torch.testing.assert_close(gvv, gv_ref, **tol)
