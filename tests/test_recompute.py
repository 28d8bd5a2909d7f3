"""backward_from_input: BPTT that recomputes H from the forward's input instead of reading a
saved H. It must give the bits of the backward from the saved H for every configuration,
dtype, length, absent or given state, and thread count."""
import pytest
import torch

from spikecore import _cpu_kernels as K, backends
from helpers import all_configs, cfg_id, make_inputs

KINDS = {torch.float32: (K.FLOAT32, "float"), torch.float64: (K.FLOAT64, "double")}


def _view(t):
    kind = KINDS[t.dtype][0]
    if t.dim() == 1:
        return K.TensorBuffer(t.data_ptr(), -1, t.numel(), kind, t)
    return K.TensorBuffer(t.data_ptr(), t.shape[0], t.shape[1], kind, t)


def _from_input(g, gvn, x, v, cfg, threads):
    absent = K.TensorBuffer(0, -1, 0, KINDS[x.dtype][0])
    gx, gv = torch.empty_like(x), torch.empty(x.shape[1], dtype=x.dtype)
    K.backward_from_input[KINDS[x.dtype][1]](
        _view(g), absent if gvn is None else _view(gvn), _view(x),
        absent if v is None else _view(v), _view(gx), _view(gv), *cfg.kernel_args, threads)
    return gx, gv


# (T, N): a few steps, one step, none, many steps (narrow chunks), several blocks of neurons
SIZES = [(6, 37), (1, 5), (0, 7), (300, 40), (3, 20000)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("cfg", list(all_configs()), ids=cfg_id)
def test_equals_the_backward_from_saved_h(cfg, dtype):
    cpu = backends.get("cpu")
    for i, (steps, n) in enumerate(SIZES):
        x, v0 = make_inputs(cfg, steps, (n,), dtype, seed=steps + n)
        g = torch.randn(steps, n, dtype=dtype)
        for v, gvn in ((v0, torch.randn(n, dtype=dtype)), (None, None)):
            h = cpu.forward(x, v, cfg, steps, save_h=True, state_shape=(n,))[2]
            want = cpu.backward(g, gvn, cfg, steps, h_seq=h, state_shape=(n,))
            for threads in (1, 3):
                got = _from_input(g, gvn, x, v, cfg, threads)
                assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), \
                    (steps, n, v is None, threads)
