"""Results are bit-identical for any thread count; the default follows torch's thread count."""
import pytest
import torch

import spikecore
from spikecore import _cpu_kernels, backends, cpu_backend, dispatch, reference
from helpers import grad_tol, make_cfg, make_inputs


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _run(cfg, x, v, g):
    res = dispatch.forward(x, v, cfg, backend="cpu", save_h=True)
    gx, gv = dispatch.backward(g, torch.ones_like(v), cfg, h_seq=res.h_seq, backend="cpu")
    return res.spike, res.v_next, res.h_seq, gx, gv


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_one_and_many_threads_agree(restore_threads, dtype):
    cfg = make_cfg("LIF", False, None, surrogate_index=4)
    n = 3 * 16384 + 77          # several blocks of neurons, a ragged last block
    x, v = make_inputs(cfg, 6, (n,), dtype)
    g = torch.randn(6, n, dtype=dtype)
    assert x.numel() >= cpu_backend.PARALLEL_MIN_ELEMENTS
    results = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        results.append(_run(cfg, x, v, g))
    for other in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(results[0], other))
    spike, v_next, h_seq, gx, gv = results[0]
    ref = reference.fptt(x, v, cfg)
    assert torch.equal(spike, ref[0]) and torch.equal(v_next, ref[1])
    ref_gx, ref_gv = reference.bptt_from_h(g, torch.ones_like(v), ref[2], cfg)
    torch.testing.assert_close(gx, ref_gx, **grad_tol(dtype))
    torch.testing.assert_close(gv, ref_gv, **grad_tol(dtype))


def test_kernel_thread_argument_directly():
    n = 20000
    x = torch.rand(3, n) * 2
    v = torch.zeros(n)
    outs = []
    for threads in (1, 4):
        s, vn = torch.empty_like(x), torch.empty_like(v)
        empty = x.new_empty(0, n)
        _cpu_kernels.forward(x.numpy(), v.numpy(), s.numpy(), vn.numpy(), empty.numpy(),
                             empty.numpy(), empty.numpy(), empty.numpy(), 1, True, False, 0,
                             1.0, 0.0, 0.5, 2.0, threads)
        outs.append((s, vn))
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


def test_default_threads_follow_torch(restore_threads, monkeypatch):
    seen = []
    cpu = backends.get("cpu")
    real_entry = cpu._entry

    def spying_entry(name, dtype, h_dtype=None):
        kernel = real_entry(name, dtype, h_dtype)   # the specialised kernel the backend calls

        def spy(*args):
            seen.append(args[-1])
            return kernel(*args)
        return spy if name == "forward" else kernel

    monkeypatch.setattr(cpu, "_entry", spying_entry)
    big = torch.rand(2, cpu_backend.PARALLEL_MIN_ELEMENTS)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        spikecore.neuron.IF_hard_reset_fptt(big, torch.zeros(big.shape[1]), 1.0, 0.0)
    spikecore.neuron.IF_hard_reset_fptt(torch.rand(2, 10), torch.zeros(10), 1.0, 0.0)
    assert seen == [1, 2, 1]     # the last one is too small to share


def test_learnable_tau_sum_over_many_neurons(restore_threads):
    """dL/d(1/tau) adds up one value per neuron, in segments with several running sums each
    (an order set by N alone): every neuron counted once, whatever the thread count, and the
    same bits for 1, 2 and 3 threads. N spans several segments and ends in a ragged one."""
    cfg = make_cfg("LIF", False, 0.0, surrogate_index=1)
    n = 3 * 8192 + 16 * 5 + 7
    x, v = make_inputs(cfg, 4, (n,), torch.float64)
    g = torch.randn(4, n, dtype=torch.float64)
    h = dispatch.forward(x, v, cfg, backend="cpu", save_h=True).h_seq
    totals = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        totals.append(dispatch.backward_plif(g, None, cfg, h_seq=h, v_init=v,
                                             backend="cpu")[2])
    assert totals[0] == totals[1] == totals[2]
    want = dispatch.backward_plif(g, None, cfg, h_seq=h, v_init=v, backend="reference")[2]
    torch.testing.assert_close(totals[0], want, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("n_threads", [0, -1])
def test_kernels_refuse_a_thread_count_below_one(n_threads):
    """OpenMP needs at least one thread: 0 used to divide by zero (SIGFPE) and -1 made libgomp
    abort; the compiled entry points raise instead."""
    import numpy as np
    from spikecore import _cpu_kernels as K
    src = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match=f"n_threads must be >= 1, got {n_threads}"):
        K.copy_bytes(src, src.copy(), False, n_threads)
    x, out = np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32)
    none = np.zeros((0, 4), np.float32)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        K.forward(x, np.zeros(0, np.float32), out, np.zeros(4, np.float32), none, none, none,
                  none, 1, True, False, 0, 1.0, 0.0, 0.5, 2.0, n_threads)
