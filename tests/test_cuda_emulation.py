"""What the CUDA backend does around its arithmetic, checked on the host emulation of its kernels
(tests/cuda_emulation.py): the device and stream of each launch, the choice between one neuron
and a 16-byte group per thread, step counts that do not fill the unrolled loop, CUDA errors
raised with CUDA's message, reads and writes that stay inside their buffers (also under
AddressSanitizer), and random cases against the CPU backend. The arithmetic of every
configuration is checked by tests/test_cuda.py, on the GPU and on this emulation."""
import os
import subprocess

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import cuda_emulation
from cuda_emulation import CALLER_DEVICE, STREAM, TENSOR_DEVICE, EmulatedCUDABackend
from spikecore import backends, dispatch, reference
from spikecore.cuda_backend import CUDABackend
from helpers import grad_tol, make_cfg, make_inputs, random_configs

EMULATED = EmulatedCUDABackend.name
CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# cudaErrorInvalidConfiguration, ...NoKernelImageForDevice, ...IllegalAddress,
# ...LaunchFailure, ...InsufficientDriver, ...InvalidDevice
INVALID_CONFIGURATION, NO_KERNEL_IMAGE, ILLEGAL_ADDRESS = 9, 209, 700
LAUNCH_FAILURE, INSUFFICIENT_DRIVER, INVALID_DEVICE = 719, 35, 101


def _misaligned(t):
    """A contiguous copy of ``t`` whose data starts 4 bytes past a 16-byte boundary."""
    flat = torch.empty(t.numel() + 4, dtype=t.dtype)
    start = next(k for k in range(1, 4) if (flat.data_ptr() + k * t.element_size()) % 16)
    out = flat[start:start + t.numel()].view(t.shape)
    out.copy_(t)
    return out


def _all_routes(x, v, gs, gv, cfg, backend, host=None):
    """Forward with every output, both backward routes and the learnable-1/tau backward; with
    ``host``, also the grid size of each of the four launches."""
    grids = []

    def run(function, *args, **kwargs):
        out = function(*args, **kwargs)
        if host is not None:
            grids.append(host.last_launch()[3])
        return out

    fwd = run(dispatch.forward, x, v, cfg, backend=backend, save_h=True, save_v=True,
              with_grad=True)
    return (fwd, run(dispatch.backward, gs, gv, cfg, h_seq=fwd.h_seq, backend=backend),
            run(dispatch.backward, gs, gv, cfg, grad_s_to_h=fwd.grad_s_to_h,
                grad_v_to_h=fwd.grad_v_to_h, backend=backend),
            run(dispatch.backward_plif, gs, gv, cfg, h_seq=fwd.h_seq, v_init=v,
                backend=backend)), grids


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7, 9])
@pytest.mark.parametrize("layout", ["groups", "odd-n", "misaligned"])
def test_each_path_and_step_count_equals_the_cpu_backend(cuda_host, steps, layout):
    """float32 on both kernels' paths (16-byte groups of 4 neurons; one neuron per thread where
    N or a pointer does not allow groups) and for step counts around the unroll of 4: the bits
    of the CPU backend, whose kernels share the scalar math."""
    n = 4095 if layout == "odd-n" else 4096
    cfg = make_cfg("LIF", False, -0.3, surrogate_index=4)
    x, v = make_inputs(cfg, steps, (n,), torch.float32, seed=steps)
    g = torch.Generator().manual_seed(steps)
    gs, gv = torch.randn(x.shape, generator=g), torch.randn(v.shape, generator=g)
    if layout == "misaligned":
        x, v, gs, gv = map(_misaligned, (x, v, gs, gv))
    got, grids = _all_routes(x, v, gs, gv, cfg, EMULATED, cuda_host)
    # 256 threads a block: 1024 groups of 4 neurons, or 4096 neurons (the learnable-1/tau
    # backward always takes one neuron per thread)
    assert grids == ([4, 4, 4, 16] if layout == "groups" else [16] * 4)
    assert cuda_host.last_launch()[4] == 256
    want = _all_routes(x, v, gs, gv, cfg, "cpu")[0]
    for g_out, w_out in zip(got[0], want[0]):
        assert torch.equal(g_out, w_out)
    for g_out, w_out in zip(got[1] + got[2], want[1] + want[2]):
        assert torch.equal(g_out, w_out)
    assert torch.equal(got[3][0], want[3][0]) and torch.equal(got[3][1], want[3][1])
    # dL/d(1/tau): float32 sums per neuron on the GPU, float64 on the CPU
    torch.testing.assert_close(got[3][2], want[3][2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_16_bit_groups_hold_eight_neurons(cuda_host, dtype):
    x = torch.rand(3, 4096).to(dtype)
    dispatch.forward(x, None, make_cfg(), backend=EMULATED)
    assert cuda_host.last_launch()[3] == 2   # 512 groups of 8 neurons, 256 threads a block


def test_launches_run_on_the_tensors_device_and_stream(cuda_host):
    """Each kernel runs on the device and stream the backend names for its tensors, and the
    device that was current before the call is current again after it."""
    cfg = make_cfg("LIF", False, 0.0)
    x, v = make_inputs(cfg, 4, (3, 8), torch.float32)
    _all_routes(x, v, torch.randn(x.shape), torch.randn(v.shape), cfg, EMULATED)
    count, device, stream, _, _ = cuda_host.last_launch()
    assert (count, device, stream) == (4, TENSOR_DEVICE, STREAM)
    assert cuda_host.current_device() == CALLER_DEVICE


def test_a_failed_launch_raises_cudas_message_and_leaves_no_trace(cuda_host):
    x = torch.rand(4, 8)
    cuda_host.fail_next_launch(INVALID_CONFIGURATION)   # an error CUDA does not keep
    with pytest.raises(RuntimeError, match="^CUDA error in spikecore: spikecore forward kernel: "
                                           "invalid configuration argument$"):
        dispatch.forward(x, None, make_cfg(), backend=EMULATED)
    assert cuda_host.current_device() == CALLER_DEVICE
    got = dispatch.forward(x, None, make_cfg(), backend=EMULATED)
    want = dispatch.forward(x, None, make_cfg(), backend="cpu")
    assert torch.equal(got.spike, want.spike) and torch.equal(got.v_next, want.v_next)
    cuda_host.fail_next_launch(INVALID_CONFIGURATION)
    with pytest.raises(RuntimeError, match="spikecore backward kernel: invalid configuration"):
        dispatch.backward(torch.randn(4, 8), None, make_cfg(), h_seq=torch.rand(4, 8),
                          backend=EMULATED)


@pytest.mark.parametrize("code, text, hint", [
    (NO_KERNEL_IMAGE, "no kernel image is available for execution on the device",
     "spikecore was not compiled for this GPU; rebuild it with SPIKECORE_CUDA_ARCHS"),
    # errors a faulted kernel leaves in the context, which any later call reports
    (ILLEGAL_ADDRESS, "an illegal memory access was encountered",
     "a kernel that faulted earlier, spikecore's or another library's"),
    (LAUNCH_FAILURE, "unspecified launch failure", "run with CUDA_LAUNCH_BLOCKING=1"),
])
def test_errors_that_need_a_hint_give_one(cuda_host, code, text, hint):
    cuda_host.fail_next_launch(code)
    with pytest.raises(RuntimeError) as info:
        dispatch.forward(torch.rand(4, 8), None, make_cfg(), backend=EMULATED)
    message = str(info.value)
    assert message.startswith(f"CUDA error in spikecore: spikecore forward kernel: {text} (")
    assert hint in message


def test_a_failure_to_restore_the_callers_device_is_reported(cuda_host):
    """The kernel ran, but the caller's device could not be made current again: the call must
    not return as if all were well, with another device left current."""
    cuda_host.fail_device_calls_after_launch(INVALID_DEVICE)
    with pytest.raises(RuntimeError, match="cudaSetDevice \\(restoring the caller's device\\): "
                                           "invalid device ordinal"):
        dispatch.forward(torch.rand(4, 8), None, make_cfg(), backend=EMULATED)
    assert cuda_host.last_launch()[0] == 1


def test_a_device_that_does_not_exist(cuda_host, monkeypatch):
    monkeypatch.setattr(EmulatedCUDABackend, "_launch_args", staticmethod(lambda t: (5, STREAM)))
    with pytest.raises(RuntimeError, match="cudaSetDevice: invalid device ordinal"):
        dispatch.forward(torch.rand(4, 8), None, make_cfg(), backend=EMULATED)
    assert cuda_host.last_launch()[0] == 0 and cuda_host.current_device() == CALLER_DEVICE


@pytest.mark.parametrize("devices, fault, message", [
    (0, None, "no CUDA device is usable (cudaGetDeviceCount: no CUDA-capable device is "
              "detected)"),
    (2, INSUFFICIENT_DRIVER, "no CUDA device is usable (cudaGetDeviceCount: CUDA driver version "
                             "is insufficient for CUDA runtime version; CUDA also says this where "
                             "no NVIDIA driver is installed)")],
    ids=["no-device", "old-driver"])
def test_without_a_usable_device_the_backend_says_why(cuda_host, monkeypatch, devices, fault,
                                                      message):
    """What `spikecore.cuda_unavailable_reason()` reports on such a machine, and what a call
    that reaches the kernels anyway raises."""
    cuda_host.reset(devices=devices)
    if fault:
        cuda_host.fail_device_calls(fault)
    assert cuda_host.device_count() == (0, message)
    backend = CUDABackend.__new__(CUDABackend)
    backend._kernels, backend._build_error, backend._device_error = cuda_host, None, None
    assert backend.load_error() == f"the CUDA backend is built but {message}"
    # host tensors stand in for device ones, as for the emulated backend (no device type)
    backend.name, backend.device_type = "cuda-unusable", None
    monkeypatch.setitem(backends._REGISTRY, backend.name, backend)
    with pytest.raises(RuntimeError, match="no CUDA device is usable"):
        dispatch.forward(torch.rand(2, 4), None, make_cfg(), backend=backend.name)
    if fault:   # a call that skips the check meets the same fault in cudaGetDevice
        with pytest.raises(RuntimeError, match="cudaGetDevice: CUDA driver version"):
            dispatch.forward(torch.rand(2, 4), None, make_cfg(), backend=EMULATED)


def test_an_unknown_dtype_code(cuda_host):
    args = (0,) * 8 + (2, 4) + make_cfg().kernel_args + (TENSOR_DEVICE, STREAM)
    with pytest.raises(RuntimeError, match="unsupported dtype code 7"):
        cuda_host.forward(7, *args)


@pytest.mark.parametrize("change, message", [
    ({"mode": 3}, "charge_mode must be 0, 1 or 2, got 3"),
    ({"mode": -1}, "charge_mode must be 0, 1 or 2, got -1"),
    ({"sg_index": 7}, "surrogate must be 0 to 6, got 7"),
    ({"sg_index": -1}, "surrogate must be 0 to 6, got -1"),
])
def test_the_c_api_refuses_unknown_modes_and_surrogates(cuda_host, change, message):
    """The Python layer never passes these; a direct caller of the compiled module gets an
    error instead of a formula picked by a default branch."""
    x, s, vn = torch.rand(2, 4), torch.empty(2, 4), torch.empty(4)
    h, gx, gv, gt = torch.empty(2, 4), torch.empty(2, 4), torch.empty(4), torch.empty(4)
    names = ("mode", "hard", "detach_reset", "sg_index", "v_threshold", "v_reset",
             "reciprocal_tau", "alpha")
    scalars = tuple(change.get(k, v) for k, v in zip(names, make_cfg().kernel_args))
    tail = (2, 4) + scalars + (TENSOR_DEVICE, STREAM)
    p = torch.Tensor.data_ptr
    calls = [
        lambda: cuda_host.forward(0, p(x), 0, p(s), p(vn), 0, 0, 0, 0, *tail),
        lambda: cuda_host.backward(0, p(x), 0, p(h), 0, 0, p(gx), p(gv), *tail),
        lambda: cuda_host.backward_plif(0, p(x), 0, p(h), 0, p(gx), p(gv), p(gt), *tail)]
    for call in calls:
        with pytest.raises(RuntimeError, match=message):
            call()
    assert cuda_host.last_launch()[0] == 0


def test_the_c_api_refuses_missing_pointers(cuda_host):
    x, s, vn, g = torch.rand(2, 4), torch.empty(2, 4), torch.empty(4), torch.empty(2, 4)
    tail = (2, 4) + make_cfg().kernel_args + (TENSOR_DEVICE, STREAM)
    p = torch.Tensor.data_ptr
    with pytest.raises(RuntimeError, match="x, spike and v_next are required"):
        cuda_host.forward(0, p(x), 0, 0, p(vn), 0, 0, 0, 0, *tail)
    with pytest.raises(RuntimeError, match="grad_s_to_h and grad_v_to_h go together"):
        cuda_host.forward(0, p(x), 0, p(s), p(vn), 0, 0, p(g), 0, *tail)
    with pytest.raises(RuntimeError, match="h_seq, or grad_s_to_h and grad_v_to_h, are required"):
        cuda_host.backward(0, p(x), 0, 0, p(g), 0, p(s), p(vn), *tail)
    with pytest.raises(RuntimeError, match="grad_spike, h_seq, grad_x, grad_v and grad_tau are"):
        cuda_host.backward_plif(0, p(x), 0, p(g), 0, p(s), p(vn), 0, *tail)
    assert cuda_host.last_launch()[0] == 0


def test_no_neurons_no_launch(cuda_host):
    args = (0,) * 8 + (3, 0) + make_cfg().kernel_args + (TENSOR_DEVICE, STREAM)
    for dtype in CODES.values():
        cuda_host.forward(dtype, *args)
        cuda_host.backward(dtype, *args[1:])
        cuda_host.backward_plif(dtype, *args[1:])
    assert cuda_host.last_launch()[0] == 0


GUARD = 16   # elements of canary on each side of every buffer (keeps 16-byte alignment)


def _guarded(values, dtype):
    """(view, whole): ``values`` in the middle of a buffer of canaries (-7.5 everywhere else)."""
    whole = torch.full((values.numel() + 2 * GUARD,), -7.5, dtype=dtype)
    view = whole[GUARD:GUARD + values.numel()].view(values.shape)
    view.copy_(values)
    return view, whole


@pytest.mark.parametrize("n", [37, 40, 1029])
@pytest.mark.parametrize("dtype", list(CODES), ids=["f32", "f16", "bf16"])
def test_writes_stay_inside_their_buffers(cuda_host, dtype, n):
    """Every input and output of every kernel between canaries: after forward, both backward
    routes and the learnable-1/tau backward, no canary has changed and every output element
    has been written."""
    steps, cfg = 5, make_cfg("LIF", False, 0.0)
    x, v = make_inputs(cfg, steps, (n,), dtype, seed=n)
    bufs = {name: _guarded(t, dtype) for name, t in
            [("x", x), ("v", v), ("gs", torch.randn(x.shape).to(dtype)),
             ("gv", torch.randn(v.shape).to(dtype))]}
    nan = float("nan")   # outputs start as NaN: any element left unwritten stays NaN
    for name in ("spike", "h", "v_seq", "gs2h", "gv2h", "gx_h", "gx_t", "gx_p"):
        bufs[name] = _guarded(torch.full(x.shape, nan), dtype)
    for name in ("v_next", "gv_h", "gv_t", "gv_p"):
        bufs[name] = _guarded(torch.full(v.shape, nan), dtype)
    bufs["tau"] = _guarded(torch.full(v.shape, nan), torch.float32)
    p = {name: view.data_ptr() for name, (view, _) in bufs.items()}
    tail = (steps, n) + cfg.kernel_args + (TENSOR_DEVICE, STREAM)
    code = CODES[dtype]
    cuda_host.forward(code, p["x"], p["v"], p["spike"], p["v_next"], p["h"], p["v_seq"],
                      p["gs2h"], p["gv2h"], *tail)
    cuda_host.backward(code, p["gs"], p["gv"], p["h"], 0, 0, p["gx_h"], p["gv_h"], *tail)
    cuda_host.backward(code, p["gs"], p["gv"], 0, p["gs2h"], p["gv2h"], p["gx_t"], p["gv_t"],
                       *tail)
    cuda_host.backward_plif(code, p["gs"], p["gv"], p["h"], p["v"], p["gx_p"], p["gv_p"],
                            p["tau"], *tail)
    for name, (view, whole) in bufs.items():
        canaries = torch.cat([whole[:GUARD], whole[-GUARD:]])
        assert torch.equal(canaries, torch.full_like(canaries, -7.5)), name
        assert not view.isnan().any(), name


def test_no_kernel_reads_or_writes_outside_its_buffers(tmp_path):
    """tests/native/check_cuda_bounds.cpp under AddressSanitizer and UBSan: every kernel, dtype
    and path with buffers of exactly their size, aligned and not. A read or write past a buffer
    or a 16-byte access through a misaligned pointer (faults on a GPU) stops the program."""
    cuda_emulation.require_sanitizers(str(tmp_path))
    exe = cuda_emulation.build_bounds_checker(str(tmp_path))
    run = subprocess.run([exe], capture_output=True, text=True,
                         env=dict(os.environ, ASAN_OPTIONS="detect_leaks=0"))
    assert run.returncode == 0, run.stdout + run.stderr
    # 3 dtypes x 7 neuron counts x 5 step counts x 2 alignments x 2 states, then every
    # surrogate for each dtype; five kernel calls each
    assert run.stdout.strip() == f"checked {(3 * 7 * 5 * 2 * 2 + 3 * 7) * 5} kernel calls"


@st.composite
def _cases(draw):
    cfg = draw(random_configs())
    return (cfg, draw(st.integers(0, 9)), draw(st.integers(0, 70)),
            draw(st.sampled_from(list(CODES))), draw(st.booleans()), draw(st.booleans()),
            draw(st.integers(0, 2**31 - 1)))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_cases())
def test_random_cases_equal_the_cpu_backend(cuda_host, case):
    """Random configurations, step and neuron counts (groups or not), dtypes, given or absent
    states, aligned or not: spikes and potentials bit for bit those of the CPU backend, the
    saved H firing as the spikes did, and BPTT from it equal to the CPU's (float32) or to the
    reference's from the same H (16-bit)."""
    cfg, steps, n, dtype, given_state, misaligned, seed = case
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(steps, n, generator=g) * 1.5).to(dtype)
    v = torch.randn(n, generator=g).to(dtype) if given_state else None
    gs, gv = torch.randn(steps, n, generator=g).to(dtype), torch.randn(n, generator=g).to(dtype)
    if misaligned:
        x, gs, gv = map(_misaligned, (x, gs, gv))
    got = dispatch.forward(x, v, cfg, backend=EMULATED, save_h=True)
    want = dispatch.forward(x, v, cfg, backend="cpu", save_h=True)
    assert torch.equal(got.spike, want.spike) and torch.equal(got.v_next, want.v_next)
    h = got.h_seq.float()
    assert torch.equal(reference.fire(h, cfg), want.spike.float())
    gx, gvv = dispatch.backward(gs, gv, cfg, h_seq=got.h_seq, backend=EMULATED)
    if dtype == torch.float32:
        assert torch.equal(h, want.h_seq)
        gx_w, gv_w = dispatch.backward(gs, gv, cfg, h_seq=want.h_seq, backend="cpu")
        assert torch.equal(gx, gx_w) and torch.equal(gvv, gv_w)
    else:
        gx_r, gv_r = reference.bptt_from_h(gs.float(), gv.float(), h, cfg)
        torch.testing.assert_close(gx, gx_r.to(dtype), **grad_tol(dtype))
        torch.testing.assert_close(gvv, gv_r.to(dtype), **grad_tol(dtype))
