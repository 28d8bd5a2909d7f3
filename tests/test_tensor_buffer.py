"""TensorBuffer: how the CPU backend hands torch tensors to the kernels' typed memoryviews."""
import gc
import weakref

import numpy as np
import pytest
import torch

from spikecore import _cpu_kernels as K
from helpers import make_cfg, make_inputs

KINDS = [(torch.float32, K.FLOAT32, "f"), (torch.float64, K.FLOAT64, "d"),
         (torch.bfloat16, K.BF16_BITS, "H")]


@pytest.mark.parametrize("dtype, kind, fmt", KINDS, ids=["float32", "float64", "bf16-bits"])
def test_views_the_tensor_memory(dtype, kind, fmt):
    t = torch.arange(12, dtype=torch.float32).to(dtype)
    m = memoryview(K.TensorBuffer(t.data_ptr(), 3, 4, kind))
    assert m.shape == (3, 4) and m.format == fmt and m.itemsize == t.element_size()
    got = np.asarray(m)
    want = t.view(torch.int16).numpy().view(np.uint16) if dtype == torch.bfloat16 else t.numpy()
    assert np.array_equal(got.reshape(-1), want)
    got[1, 2] = got[0, 1]          # writable: the kernels' outputs go through it
    assert t[6] == t[1]
    vec = memoryview(K.TensorBuffer(t.data_ptr(), -1, 12, kind))
    assert vec.shape == (12,) and np.array_equal(np.asarray(vec), np.asarray(m).reshape(-1))


def test_keeps_its_owner_alive():
    """A contiguous copy made only for a kernel call lives as long as its buffer."""
    t = torch.arange(6, dtype=torch.float32)
    ref = weakref.ref(t)
    buffer = K.TensorBuffer(t.data_ptr(), -1, 6, K.FLOAT32, t)
    del t
    gc.collect()
    assert ref() is not None
    assert np.asarray(memoryview(buffer)).tolist() == [0, 1, 2, 3, 4, 5]
    del buffer
    gc.collect()
    assert ref() is None


def test_absent_buffers_have_no_elements():
    assert memoryview(K.TensorBuffer(0, 0, 7, K.FLOAT32)).shape == (0, 7)
    assert memoryview(K.TensorBuffer(0, -1, 0, K.FLOAT64)).shape == (0,)


@pytest.mark.parametrize("args, match", [((0, 1, 1, 3), "kind"), ((0, 1, 1, -1), "kind"),
                                         ((0, -2, 1, 0), "shape"), ((0, 1, -1, 0), "shape")])
def test_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        K.TensorBuffer(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernels_give_the_same_results_through_numpy_and_tensor_buffers(dtype):
    cfg = make_cfg("LIF", False, 0.0, 4)
    x, v = make_inputs(cfg, 5, (300,), dtype)
    kind = K.FLOAT32 if dtype == torch.float32 else K.FLOAT64

    def run(view, absent):
        spike, h, vn = torch.empty_like(x), torch.empty_like(x), torch.empty_like(v)
        K.forward(view(x), view(v), view(spike), view(vn), view(h), absent, absent, absent,
                  *cfg.kernel_args, 1)
        return spike, h, vn

    def buffer(t):
        return K.TensorBuffer(t.data_ptr(), *((5, 300) if t.dim() == 2 else (-1, 300)), kind)

    with_np = run(lambda t: t.numpy(), np.empty((0, 300), dtype=x.numpy().dtype))
    with_buffers = run(buffer, K.TensorBuffer(0, 0, 300, kind))
    assert all(torch.equal(a, b) for a, b in zip(with_np, with_buffers))
