"""Other launch shapes of the CUDA kernels, timed side by side on one GPU.

cuda/neuron_kernels.cu takes its launch shape from five macros: SPIKECORE_CUDA_UNROLL (steps
whose loads a thread issues together), SPIKECORE_CUDA_GROUP_BYTES (bytes of neighbouring
neurons a thread owns), SPIKECORE_CUDA_MIN_BLOCKS (blocks of 256 threads per SM that the
register budget must allow), SPIKECORE_CUDA_PREFETCH (1: the loads of the next chunk of steps
are issued before this one computes) and SPIKECORE_CUDA_FAST_DIV (1: the surrogate
derivatives divide with __fdividef, see include/spikecore_math.h). The package is built with
their defaults; this script is how to choose them. It compiles the kernel file once per
variant with nvcc into a shared library, drives each through ctypes with the package's own
CUDA backend code, checks that every variant's outputs equal the default's (bit for bit; the
fast division's gradients within a tolerance), and times the case of benchmarks/bench_gpu.py
(multi-step LIF, forward with H saved + BPTT, the two kernels alone) for each, round-robin, as
a multiple of the memory floor.

    python benchmarks/cuda_variants.py [--repeat 15] [--variants default,group8] [--archs 90]
"""
import argparse
import concurrent.futures
import ctypes
import os
import re
import statistics
import subprocess
import sys
import tempfile

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from spikecore.cuda_backend import CUDABackend  # noqa: E402

KERNELS = os.path.join(ROOT, "cuda", "neuron_kernels.cu")

#: name -> the macros it sets (the rest keep their defaults: unroll 4, 16 bytes, 2 blocks, no
#: prefetch)
VARIANTS = {
    "default": {},
    "group8": {"SPIKECORE_CUDA_GROUP_BYTES": 8},
    "group8-unroll8": {"SPIKECORE_CUDA_GROUP_BYTES": 8, "SPIKECORE_CUDA_UNROLL": 8},
    "group4-unroll8": {"SPIKECORE_CUDA_GROUP_BYTES": 4, "SPIKECORE_CUDA_UNROLL": 8},
    "unroll8": {"SPIKECORE_CUDA_UNROLL": 8},
    "unroll2": {"SPIKECORE_CUDA_UNROLL": 2},
    "prefetch": {"SPIKECORE_CUDA_PREFETCH": 1},
    "group8-prefetch": {"SPIKECORE_CUDA_GROUP_BYTES": 8, "SPIKECORE_CUDA_PREFETCH": 1},
    "fastdiv": {"SPIKECORE_CUDA_FAST_DIV": 1},
}
#: macros that may change the gradients' last bits (never the forward's): their variants'
#: gradients are checked within a tolerance instead of bit for bit
APPROXIMATE = ("SPIKECORE_CUDA_FAST_DIV",)


_SPEC = re.compile(r"u(\d+)g(\d+)b(\d+)(p?)(f?)")


def macros(variant):
    """The macros a variant sets: a name of VARIANTS, or a spec u<unroll>g<group bytes>b<blocks
    per SM>, then p for prefetching and f for the fast division (u4g16b2 is the default,
    u4g8b3pf another shape); ValueError for anything else."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    m = _SPEC.fullmatch(variant)
    if m is None:
        raise ValueError(f"unknown variant {variant!r}: one of {', '.join(VARIANTS)}, or "
                         "u<unroll>g<group bytes>b<blocks per SM>[p][f] such as u6g8b3 or "
                         "u4g8b3pf")
    unroll, group, blocks, prefetch, fast_div = m.groups()
    return {"SPIKECORE_CUDA_UNROLL": int(unroll), "SPIKECORE_CUDA_GROUP_BYTES": int(group),
            "SPIKECORE_CUDA_MIN_BLOCKS": int(blocks),
            "SPIKECORE_CUDA_PREFETCH": int(bool(prefetch)),
            "SPIKECORE_CUDA_FAST_DIV": int(bool(fast_div))}


def exact(variant):
    """Whether the variant must compute the default's gradients bit for bit."""
    return not any(macros(variant).get(name) for name in APPROXIMATE)


def defines(variant):
    """The compiler flags of a variant."""
    return [f"-D{name}={value}" for name, value in macros(variant).items()]


# --- the C API of cuda/spikecore_cuda.h through ctypes ---------------------------------------
class Params(ctypes.Structure):
    _fields_ = [("charge_mode", ctypes.c_int), ("hard_reset", ctypes.c_int),
                ("detach_reset", ctypes.c_int), ("surrogate", ctypes.c_int),
                ("v_threshold", ctypes.c_float), ("v_reset", ctypes.c_float),
                ("reciprocal_tau", ctypes.c_float), ("alpha", ctypes.c_float)]


_P, _LL, _I = ctypes.c_void_p, ctypes.c_longlong, ctypes.c_int
_TAIL = [_LL, _LL, Params, _I, _P, ctypes.c_char_p, _I]   # steps, n, params, device, stream, err
_SIGNATURES = {"sc_cuda_forward": [_I] + [_P] * 8 + _TAIL,
               "sc_cuda_backward": [_I] + [_P] * 7 + _TAIL,
               "sc_cuda_backward_plif": [_I] + [_P] * 7 + _TAIL,
               "sc_cuda_device_count": [ctypes.POINTER(_I), ctypes.c_char_p, _I]}


class LibraryKernels:
    """The functions of ``spikecore._cuda_kernels`` (same arguments, same errors), calling a
    shared library built from cuda/neuron_kernels.cu through ctypes instead of Cython."""

    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        for name, args in _SIGNATURES.items():
            getattr(self.lib, name).argtypes = args

    @staticmethod
    def _call(fn, *args):
        err = ctypes.create_string_buffer(512)
        if fn(*args, err, len(err)) != 0:
            raise RuntimeError("CUDA error in spikecore: " + err.value.decode(errors="replace"))

    def _launch(self, fn, dtype, args):
        """``args`` as the Cython wrapper takes them: the pointers, steps, neurons, the eight
        fields of sc_params, device, stream."""
        *pointers, steps, neurons = args[:-10]
        scalars, (device, stream) = args[-10:-2], args[-2:]
        self._call(fn, dtype, *pointers, steps, neurons, Params(*scalars), device, stream)

    def forward(self, dtype, *args):
        self._launch(self.lib.sc_cuda_forward, dtype, args)

    def backward(self, dtype, *args):
        self._launch(self.lib.sc_cuda_backward, dtype, args)

    def backward_plif(self, dtype, *args):
        self._launch(self.lib.sc_cuda_backward_plif, dtype, args)

    def device_count(self):
        count, err = _I(0), ctypes.create_string_buffer(512)
        rc = self.lib.sc_cuda_device_count(ctypes.byref(count), err, len(err))
        return count.value, (err.value.decode(errors="replace") if rc else "")


class LibraryBackend(CUDABackend):
    """The CUDA backend with its kernels from a :class:`LibraryKernels` (not registered)."""

    name = "cuda-variant"


# --- building ---------------------------------------------------------------------------------
#: registers of the hot kernels, read from ptxas's report: (kernel, storage type) -> pattern of
#: the mangled name, {vec} the neurons a thread owns (training forward without teaching outputs;
#: ATan BPTT from H)
_HOT = {("forward", "f32"): r"forward_kernelIfLi{vec}ELb0E",
        ("forward", "f16"): r"forward_kernelI6__halfLi{vec}ELb0E",
        ("bptt", "f32"): r"backward_kernelIfLi{vec}ELi0E",
        ("bptt", "f16"): r"backward_kernelI6__halfLi{vec}ELi0E"}
_SIZES = {"f32": 4, "f16": 2}


def registers(ptxas_report, group_bytes=16):
    """``{(kernel, dtype): 'registers[/sspilled bytes]'}`` of the hot kernels."""
    patterns = {key: pat.format(vec=group_bytes // _SIZES[key[1]]) for key, pat in _HOT.items()}
    found, current = {}, None
    for line in ptxas_report.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = next((k for k, pat in patterns.items() if re.search(pat, m.group(1))), None)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes spill stores", line)
        if m and int(m.group(1)):
            found[current] = f"/s{m.group(1)}"
        m = re.search(r"Used (\d+) registers", line)
        if m:
            found[current] = m.group(1) + found.get(current, "")
            current = None
    return found


def build(variant, out_dir, archs):
    """Compile the kernel file with the variant's macros into ``out_dir``; (library, report)."""
    from build_support.cuda import NVCC_FLAGS, find_toolkit, gencode_flags
    root, nvcc, why = find_toolkit()
    if root is None:
        raise SystemExit(f"cuda_variants: {why}")
    lib = os.path.join(out_dir, f"lib{variant}.so")
    cmd = ([nvcc, "-shared", KERNELS, "-o", lib, "-I", os.path.join(ROOT, "include"),
            "-I", os.path.join(ROOT, "cuda"), "-Xptxas", "-v"] + NVCC_FLAGS +
           gencode_flags(archs) + defines(variant))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{variant}: {' '.join(cmd)}\n{done.stderr}")
    group = macros(variant).get("SPIKECORE_CUDA_GROUP_BYTES", 16)
    return lib, registers(done.stderr + done.stdout, group)


# --- timing -------------------------------------------------------------------------------------
def run_case(backend, x, g, v0, steps):
    """One training forward (H saved) and BPTT from H; the outputs."""
    from bench_gpu import CFG
    spike, v_next, h = backend.forward(x, v0, CFG, steps, save_h=True)[:3]
    grad_x, grad_v = backend.backward(g, v0, CFG, steps, h_seq=h)
    return spike, v_next, h, grad_x, grad_v


def check(variant, outputs, expected):
    """Raise AssertionError unless the variant's outputs equal the default's: bit for bit, or
    for the gradients of an approximate variant within a few units in the last place of their
    dtype (1e-4 relative at least: a division's error carried through the steps)."""
    names = ("spike", "v_next", "h_seq", "grad_x", "grad_v")
    for name, got, want in zip(names, outputs, expected):
        if torch.equal(got, want):
            continue
        if exact(variant) or not name.startswith("grad"):
            raise AssertionError(f"variant {variant}: {name} differs from the default's")
        rtol = max(1e-4, 2 * torch.finfo(want.dtype).eps)
        scale = want.float().abs().max().item()
        torch.testing.assert_close(got.float(), want.float(), rtol=rtol, atol=rtol * scale,
                                   msg=lambda m: f"variant {variant}: {name}: {m}")


def measure(backends, steps, dtype, n, repeat, device="cuda", timer=None):
    """``{variant: median seconds}`` of :func:`run_case` on random [steps, n] inputs, the
    variants run round-robin after 3 warm-up rounds, once every output has been checked
    against the default variant's (:func:`check`). ``timer(fn)``: the seconds of one call
    (default: CUDA events)."""
    if timer is None:
        from bench_gpu import time_cuda
        timer = lambda fn: time_cuda(fn, 1, warmup=0)[0]   # noqa: E731
    x = (torch.rand(steps, n, device=device) * 1.5).to(dtype)
    g = torch.randn(steps, n, device=device).to(dtype)
    v0 = torch.zeros(n, device=device, dtype=dtype)
    expected = run_case(backends["default"], x, g, v0, steps)
    for variant, backend in backends.items():
        check(variant, run_case(backend, x, g, v0, steps), expected)
    del expected
    times = {v: [] for v in backends}
    for _ in range(repeat + 3):
        for variant, backend in backends.items():
            times[variant].append(timer(lambda: run_case(backend, x, g, v0, steps)))
    return {v: statistics.median(samples[3:]) for v, samples in times.items()}


def table(built, results, cases, repeat):
    """The printed comparison: one row per variant, its registers and each case's ms (x floor)."""
    lines = ["kernel variants: forward (H saved) + BPTT from H, outputs checked against the "
             f"default's; ms (x floor), median of {repeat}, interleaved",
             f"{'variant':<16}{'registers fwd/bptt f32, f16':<30}" +
             "".join(f"{c:>18}" for c in cases)]
    for variant, regs in built.items():
        reg = " ".join(f"{regs.get(('forward', d), '?')}/{regs.get(('bptt', d), '?')}"
                       for d in ("f32", "f16"))
        cells = "".join(f"{results[variant, c][0]:>11.3f} ({results[variant, c][1]:.2f})"
                        for c in cases)
        lines.append(f"{variant:<16}{reg:<30}{cells}")
    best = {c: min(built, key=lambda v: results[v, c][0]) for c in cases}
    lines.append("fastest: " + ", ".join(f"{c}: {v}" for c, v in best.items()))
    return "\n".join(lines)


def main():
    import bench_gpu
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated: {', '.join(VARIANTS)}, or u<unroll>g<group "
                             "bytes>b<blocks per SM>[p][f] such as u6g8b3 or u4g8b3pf")
    parser.add_argument("--archs", default=None,
                        help="architectures to compile for (default: this GPU's)")
    args = parser.parse_args()
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    for variant in chosen:
        try:
            defines(variant)
        except ValueError as exc:
            parser.error(str(exc))
    if "default" not in chosen:
        chosen.insert(0, "default")
    if not torch.cuda.is_available():
        sys.exit("cuda_variants: needs a CUDA device")
    archs = args.archs or "{}{}".format(*torch.cuda.get_device_capability())

    with tempfile.TemporaryDirectory() as out_dir:
        with concurrent.futures.ThreadPoolExecutor(len(chosen)) as pool:
            built = dict(zip(chosen, pool.map(lambda v: build(v, out_dir, archs), chosen)))
        backends = {v: LibraryBackend(LibraryKernels(lib)) for v, (lib, _) in built.items()}
        torch.manual_seed(0)
        bandwidth = bench_gpu.copy_bandwidth()
        print(f"device: {torch.cuda.get_device_name()}, sm {archs}, copy bandwidth "
              f"{bandwidth / 1e12:.2f} TB/s", flush=True)
        results, cases = {}, []   # (variant, case) -> (ms, x floor)
        for steps, dtype in bench_gpu.CASES:
            case = f"T={steps} {str(dtype).split('.')[1]}"
            cases.append(case)
            medians = measure(backends, steps, dtype, bench_gpu.N, args.repeat)
            floor = 6 * steps * bench_gpu.N * torch.finfo(dtype).bits / 8 / bandwidth
            for variant, t in medians.items():
                results[variant, case] = (t * 1e3, t / floor)
            torch.cuda.empty_cache()
    print("\n" + table({v: regs for v, (_, regs) in built.items()}, results, cases, args.repeat))


if __name__ == "__main__":
    main()
