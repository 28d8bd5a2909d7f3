"""The Python side of the CUDA backend, run on any machine.

``spikecore.cuda_backend`` hands the nvcc-built module raw pointers, the step count ``T`` and
the neuron count ``N``. Here that module is the host emulation of the real kernels
(tests/cuda_emulation.py), wrapped to record what each call was given, so a wrong pointer, a
wrong ``T``/``N`` or a wrong output shape shows up as a wrong result, and a fresh state as the
null pointer it must be, even where no GPU is present. (tests/test_cuda.py checks the kernels'
arithmetic on every configuration, on a GPU and on the emulation.)
"""
import ctypes
import sys

import numpy as np

import pytest
import torch

from cuda_emulation import EmulatedCUDABackend
from spikecore import dispatch
from spikecore.cuda_backend import CUDABackend
from helpers import all_configs, cfg_id, make_cfg


class Recording:
    """The emulated ``spikecore._cuda_kernels``, recording each call's ``(T, N)`` and its state
    pointers: ``(v or V[-1], grad_v_next)``, ``None`` where the call has no such input."""

    def __init__(self, kernels):
        self.kernels, self.shapes, self.state_pointers = kernels, [], []

    def forward(self, dtype, x, v, *rest):   # rest: spike, v_next, h, v_seq, gs2h, gv2h, T, N..
        self.shapes.append(rest[6:8])
        self.state_pointers.append((v, None))
        self.kernels.forward(dtype, x, v, *rest)

    def backward(self, dtype, gs, gv_next, *rest):   # rest: h, gs2h, gv2h, gx, gv, T, N, ...
        self.shapes.append(rest[5:7])
        self.state_pointers.append((None, gv_next))
        self.kernels.backward(dtype, gs, gv_next, *rest)

    def backward_plif(self, dtype, gs, gv_next, h, v, *rest):   # rest: gx, gv, tau, T, N, ...
        self.shapes.append(rest[3:5])
        self.state_pointers.append((v, gv_next))
        self.kernels.backward_plif(dtype, gs, gv_next, h, v, *rest)


@pytest.fixture
def host_cuda(cuda_host):
    return EmulatedCUDABackend(Recording(cuda_host))


@pytest.mark.parametrize("multi_step, shape", [(True, (5, 3, 7)), (True, (4, 9)),
                                               (False, (3, 7)), (False, (2, 3, 4))],
                         ids=["multi-3d", "multi-2d", "single-2d", "single-3d"])
@pytest.mark.parametrize("cfg", list(all_configs())[::9], ids=cfg_id)
def test_pointers_counts_and_shapes(host_cuda, cfg, multi_step, shape):
    torch.manual_seed(0)
    x = torch.rand(shape) * 2
    step_shape = shape[1:] if multi_step else shape
    v = torch.rand(step_shape) * 0.5
    gs, gv = torch.randn(shape), torch.randn(step_shape)
    steps = shape[0] if multi_step else 1
    n = int(np.prod(step_shape))
    for save_v, with_grad in ((False, False), (True, True)):
        got = host_cuda.forward(x, v, cfg, steps, save_h=True, save_v=save_v,
                                with_grad=with_grad)
        want = dispatch.forward(x, v, cfg, multi_step=multi_step, backend="cpu", save_h=True,
                                save_v=save_v, with_grad=with_grad)
        for g, w in zip(got, want):
            assert (g is None) == (w is None)
            if w is not None:
                assert g.shape == w.shape and torch.equal(g, w)
    got = host_cuda.backward(gs, gv, cfg, steps, h_seq=want.h_seq)
    expected = dispatch.backward(gs, gv, cfg, h_seq=want.h_seq, multi_step=multi_step,
                                 backend="cpu")
    for g, w in zip(got, expected):
        assert g.shape == w.shape and torch.equal(g, w)
    got = host_cuda.backward(gs, gv, cfg, steps, grad_s_to_h=want.grad_s_to_h,
                             grad_v_to_h=want.grad_v_to_h)
    expected = dispatch.backward(gs, gv, cfg, grad_s_to_h=want.grad_s_to_h,
                                 grad_v_to_h=want.grad_v_to_h, multi_step=multi_step,
                                 backend="cpu")
    for g, w in zip(got, expected):
        assert g.shape == w.shape and torch.equal(g, w)
    assert set(host_cuda._kernels.shapes) == {(steps, n)}


def test_outputs_keep_the_callers_shape(host_cuda):
    x, v = torch.rand(6, 2, 3, 4), torch.zeros(2, 3, 4)
    spike, v_next, h_seq, v_seq, gs2h, gv2h = host_cuda.forward(x, v, make_cfg(), 6, save_h=True)
    assert spike.shape == h_seq.shape == x.shape and v_next.shape == v.shape
    assert v_seq is None and gs2h is None and gv2h is None


@pytest.mark.parametrize("multi_step, shape", [(True, (5, 3, 7)), (False, (3, 7))],
                         ids=["multi", "single"])
def test_learnable_tau_backward(host_cuda, multi_step, shape):
    torch.manual_seed(1)
    cfg = make_cfg("LIF", False, 0.0)
    x = torch.rand(shape) * 2
    step_shape = shape[1:] if multi_step else shape
    v0, gs, gv = torch.rand(step_shape) * 0.5, torch.randn(shape), torch.randn(step_shape)
    h = dispatch.forward(x, v0, cfg, multi_step=multi_step, backend="cpu", save_h=True).h_seq
    steps = shape[0] if multi_step else 1
    gx, gvv, grad_k = host_cuda.backward_plif(gs, gv, h, v0, cfg, steps)
    want = dispatch.backward_plif(gs, gv, cfg, h_seq=h, v_init=v0, multi_step=multi_step,
                                  backend="cpu")
    assert gx.shape == x.shape and gvv.shape == v0.shape
    assert torch.equal(gx, want[0]) and torch.equal(gvv, want[1])
    # per-neuron sums rounded to float32 before the total, as on the GPU
    torch.testing.assert_close(grad_k, want[2], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cfg", [make_cfg("LIF", False, -0.3), make_cfg("LIF", True, None)],
                         ids=["lif-hard", "lif-detach-input-soft"])
def test_absent_state_is_a_null_pointer(host_cuda, cfg):
    """An absent ``v``, V[-1] or ``grad_v_next`` reaches the CUDA kernels as a null pointer
    (at rest, zero), as an empty buffer reaches the CPU kernels; results equal the CPU's."""
    torch.manual_seed(2)
    x, gs = torch.rand(5, 3, 7) * 2, torch.randn(5, 3, 7)
    state = x.shape[1:]
    got = host_cuda.forward(x, None, cfg, 5, save_h=True, state_shape=state)
    want = dispatch.forward(x, None, cfg, backend="cpu", save_h=True)
    assert all(torch.equal(g, w) for g, w in zip(got[:3], want[:3]))
    assert got[1].shape == state
    got = host_cuda.backward(gs, None, cfg, 5, h_seq=want.h_seq, state_shape=state)
    expected = dispatch.backward(gs, None, cfg, h_seq=want.h_seq, backend="cpu")
    assert all(torch.equal(g, w) for g, w in zip(got, expected))
    assert got[1].shape == state
    v0 = torch.full(state, cfg.v_rest)
    for v_init in (v0, None):   # an absent V[-1] is the resting potential too
        got = host_cuda.backward_plif(gs, None, want.h_seq, v_init, cfg, 5, state_shape=state)
        expected = dispatch.backward_plif(gs, None, cfg, h_seq=want.h_seq, v_init=v0,
                                          backend="cpu")
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    pointers = host_cuda._kernels.state_pointers
    assert pointers[0] == (0, None) and pointers[1] == (None, 0)
    assert pointers[2][1] == 0 and pointers[2][0] != 0 and pointers[3] == (0, 0)


class _Recorder:
    """Stands in for the CUDA module where only the arguments matter: it records the value
    behind the state pointer of each forward call (16-bit storage, which the CPU kernels of the
    stand-in above do not take)."""

    def __init__(self):
        self.starts = []

    def forward(self, dtype, x, v, *rest):
        n = rest[7]   # after spike, v_next, h_seq, v_seq, gs2h, gv2h and steps
        self.starts.append(None if v == 0 else
                           np.ctypeslib.as_array((ctypes.c_uint16 * n).from_address(v)).copy())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_16_bit_rest_its_dtype_cannot_hold_is_filled(dtype, monkeypatch):
    """The kernels round the float32 V_reset to the storage dtype; torch.full rounds the Python
    float once. So only a 16-bit state at rest at a potential its dtype cannot hold (-0.3) is
    still filled, holding exactly what torch.full stores; exact values (0.25, 0) and float32
    states pass a null pointer."""
    backend = CUDABackend.__new__(CUDABackend)
    backend._kernels = _Recorder()
    monkeypatch.setattr(CUDABackend, "_launch_args", staticmethod(lambda t: (0, 0)))
    x = torch.rand(2, 8).to(dtype)
    for cfg in (make_cfg("LIF", False, -0.3), make_cfg("LIF", False, 0.0),
                make_cfg("LIF", False, None), make_cfg("LIF", False, 0.25)):
        backend.forward(x, None, cfg, 2, state_shape=(8,))
        backend.forward(x.float(), None, cfg, 2, state_shape=(8,))
    starts = backend._kernels.starts
    expected = torch.full((8,), -0.3, dtype=dtype).view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(starts[0], expected)
    assert starts[1:] == [None] * 7


@pytest.mark.parametrize("given_v", [False, True], ids=["fresh", "given-v"])
def test_plan_runs_the_cuda_backend(host_cuda, given_v):
    """The base class Plan (what the CUDA backend's nodes keep) passes its arguments through to
    the backend: forward, backward and the learnable-1/tau backward equal the CPU's."""
    torch.manual_seed(3)
    cfg = make_cfg("LIF", False, 0.0, 1)
    x, gs = torch.rand(5, 3, 7) * 2, torch.randn(5, 3, 7)
    v = torch.rand(3, 7) * 0.5 if given_v else None
    plan = host_cuda.plan(cfg, x, given_v, 5, (3, 7))
    assert type(plan).__name__ == "Plan" and plan.accepts(x, v)
    spike, v_next, h = plan.forward(x.transpose(1, 2).contiguous().transpose(1, 2), v)
    want = dispatch.forward(x, v, cfg, backend="cpu", save_h=True)
    assert torch.equal(spike, want.spike) and torch.equal(v_next, want.v_next)
    assert torch.equal(h, want.h_seq)
    got = plan.backward(gs, None, h)
    expected = dispatch.backward(gs, None, cfg, h_seq=h, backend="cpu")
    assert all(torch.equal(g, w) for g, w in zip(got, expected))
    got = plan.backward_plif(gs, None, h, v, 0.4)
    v0 = v if given_v else torch.zeros(3, 7)
    expected = dispatch.backward_plif(gs, None, cfg.with_reciprocal_tau(0.4), h_seq=h,
                                      v_init=v0, backend="cpu")
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    torch.testing.assert_close(got[2], expected[2], rtol=1e-6, atol=1e-6)
    # the training route of a learnable 1/tau: H and V[-1] saved, the same results
    spike_k, v_next_k, saved = plan.train_forward_plif(x, v, 0.4)
    want_k = dispatch.forward(x, v, cfg.with_reciprocal_tau(0.4), backend="cpu", save_h=True)
    assert torch.equal(spike_k, want_k.spike) and torch.equal(saved[0], want_k.h_seq)
    assert saved[1] is v
    got = plan.train_backward_plif(gs, None, saved, 0.4)
    expected = dispatch.backward_plif(gs, None, cfg.with_reciprocal_tau(0.4),
                                      h_seq=want_k.h_seq, v_init=v0, backend="cpu")
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


class _Device:
    def __init__(self, index):
        self.index = index


class _OnDevice:
    """What _launch_args reads of a CUDA tensor: its device."""

    def __init__(self, index):
        self.device = _Device(index)


def test_launch_args_name_the_tensors_device_and_its_current_stream(monkeypatch):
    """The raw getter of a CUDA build of PyTorch is asked for the tensor's own device; without
    it (an older PyTorch) torch.cuda.current_stream gives the same stream."""
    from spikecore import cuda_backend
    asked = []
    monkeypatch.setattr(cuda_backend, "_raw_stream",
                        lambda index: asked.append(index) or 7000 + index)
    assert CUDABackend._launch_args(_OnDevice(1)) == (1, 7001)
    assert CUDABackend._launch_args(_OnDevice(0)) == (0, 7000)
    assert asked == [1, 0]

    class _Stream:
        cuda_stream = 4242

    monkeypatch.setattr(cuda_backend, "_raw_stream", None)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device: asked.append(device) or _Stream())
    tensor = _OnDevice(3)
    assert CUDABackend._launch_args(tensor) == (3, 4242)
    assert asked[-1] is tensor.device


@pytest.mark.parametrize("exists", [False, True])
def test_a_backend_that_is_not_built_or_does_not_load_says_which(monkeypatch, exists):
    """No compiled module at all (a build without a toolkit) and a module that fails to load
    are different problems; each message names its own and how to rebuild."""
    import importlib.util as iu
    import spikecore
    from spikecore import cuda_backend
    monkeypatch.setitem(sys.modules, "spikecore._cuda_kernels", None)   # the import fails
    monkeypatch.delattr(spikecore, "_cuda_kernels", raising=False)
    monkeypatch.setattr(iu, "find_spec", lambda name: object() if exists else None)
    reason = cuda_backend.CUDABackend().load_error()
    if exists:
        assert reason.startswith("the CUDA backend of spikecore does not load (")
    else:
        assert reason.startswith("the CUDA backend of spikecore was not built (the build found "
                                 "no CUDA toolkit, or was told to skip it)")
        assert "circular import" not in reason
    assert reason.endswith("`SPIKECORE_REQUIRE_CUDA=1 pip install .`)")
