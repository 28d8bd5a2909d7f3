"""CPU benchmark of one IF/LIF neuron layer: spikecore vs the plain PyTorch loop, torch.compile
of it, spikecore's reference backend and installed peers (SpikingJelly, snnTorch).

Everything runs in ONE process and the candidates are timed INTERLEAVED (one call of each per
repetition, round-robin); the table gives medians, the multiple of the memory floor and
spikecore's speed-up over each candidate. Before timing, every candidate runs once on the same
input and its spikes are compared with spikecore's (gradients too, for ``--pass train``).

The memory floor is the time to move the bytes a fused kernel must move, at the copy bandwidth
measured in the same run (best of numpy ``np.copyto``, torch ``copy_`` and a copy through
spikecore's streaming stores, with the same threads, counting read + write): per neuron-step
6 values forward+backward (X read, S and H written; dL/dS and H read, dL/dX written: 24 bytes
in float32) or 2 forward-only (X read, S written: 8 bytes).

    python benchmarks/bench_neuron.py --steps 64 --neurons 262144 --threads 1 --prealloc
    python benchmarks/bench_neuron.py --pass inference --mode single --neurons 1048576

``--prealloc``: spikecore's row is the raw kernels writing into buffers allocated beforehand
(the row "spikecore e2e" is then added for comparison); without it spikecore runs end to end
through its autograd Function (or ``dispatch.forward`` for inference) with fresh outputs every
call, like every other candidate.
"""
import argparse
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402

from spikecore import cpu_backend, dispatch, reference  # noqa: E402
from spikecore import surrogate as _surrogate  # noqa: E402
from spikecore.autograd import NeuronFunction  # noqa: E402
from spikecore.config import NeuronConfig  # noqa: E402
from spikecore.nodes import LIFNode  # noqa: E402

DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
          "bfloat16": torch.bfloat16}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", "-T", type=int, default=64)
    p.add_argument("--neurons", "-N", type=int, default=262144)
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--neuron", choices=("lif", "if"), default="lif")
    p.add_argument("--tau", type=float, default=2.0)
    p.add_argument("--surrogate", default="ATan", help=f"one of {', '.join(_surrogate.NAMES)}")
    p.add_argument("--mode", choices=("multi", "single"), default="multi",
                   help="one multi-step call over T steps, or T single-step calls")
    p.add_argument("--pass", dest="pass_", choices=("train", "inference"), default="train",
                   help="forward+backward, or forward-only under torch.no_grad()")
    p.add_argument("--repeat", type=int, default=9)
    p.add_argument("--prealloc", action="store_true",
                   help="time spikecore's kernels writing into buffers allocated beforehand")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--compile-timeout", type=float, default=300.0,
                   help="give up on torch.compile after this many seconds of compiling")
    p.add_argument("--compile-loop", action="store_true",
                   help="also compile the whole unrolled T-step loop (very slow to compile)")
    p.add_argument("--no-peers", action="store_true", help="skip SpikingJelly and snnTorch")
    p.add_argument("--no-reference", action="store_true",
                   help="skip spikecore's reference backend")
    p.add_argument("--overhead-neurons", type=int, default=1024,
                   help="N of the per-call overhead measurement (0 skips it)")
    p.add_argument("--overhead-calls", type=int, default=300)
    p.add_argument("--compare-threads", action="store_true",
                   help="also time spikecore at 1 thread vs --threads, interleaved")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --- helpers -------------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


def _with_alarm(seconds, fn):
    """Run fn(); raise _Timeout after ``seconds`` (SIGALRM, main thread, POSIX only)."""
    if not hasattr(signal, "SIGALRM") or seconds <= 0:
        return fn()

    def on_alarm(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _plain_step(x, v, cfg):
    """One step of the plain PyTorch autograd loop (the body of reference.fptt_autograd)."""
    h = reference.charge(x, v, cfg)
    s = reference._Heaviside.apply(h - cfg.v_threshold, cfg.surrogate, cfg.alpha)
    v = reference.reset(h, s.detach() if cfg.detach_reset else s, cfg)
    return s, v


def _spikes(out):
    """The spike tensor [T, N] of a candidate's result (a tensor, a list of steps or a tuple)."""
    s = out[0] if isinstance(out, tuple) else out
    return torch.stack(list(s)) if isinstance(s, list) else s


def _grads(out):
    if not isinstance(out, tuple) or len(out) < 2 or out[1] is None:
        return None
    g = out[1]
    return torch.stack(list(g)) if isinstance(g, (list, tuple)) else g


# --- the candidates ------------------------------------------------------------------------------
class Setup:
    """Inputs and configuration shared by every candidate."""

    def __init__(self, a):
        self.a = a
        self.T, self.N = a.steps, a.neurons
        self.dtype = DTYPES[a.dtype]
        self.train = a.pass_ == "train"
        self.single = a.mode == "single"
        rtau = 1.0 / a.tau
        self.cfg = NeuronConfig.build(a.neuron.upper(), 1.0, 0.0, rtau, False, 2.0, a.surrogate,
                                      False)
        # the model snnTorch's Leaky implements: H = beta*V + X (undecayed input), reset to
        # zero, reset detached from the graph (snnTorch detaches it), beta = 1 - 1/tau
        self.cfg_snn = NeuronConfig.build(a.neuron.upper(), 1.0, 0.0, rtau, True, 2.0,
                                          a.surrogate, True)
        gen = torch.Generator().manual_seed(a.seed)
        self.x = (torch.rand(self.T, self.N, generator=gen) * 1.5).to(self.dtype)
        self.v0 = torch.zeros(self.N, dtype=self.dtype)
        self.g = torch.randn(self.T, self.N, generator=gen).to(self.dtype)
        self.g_list = list(self.g)
        # leaves that require grad: the whole sequence (multi) or one leaf per step (single, so
        # that autograd does not build a [T, N] zero tensor per step for a slice's backward)
        self.xg = self.x.detach().clone().requires_grad_(True)
        self.xs = [r.detach().clone().requires_grad_(True) for r in self.x]

    # A candidate function returns (spikes, grad_x) [train] or spikes [inference].
    def run_autograd(self, step_fn, multi_fn):
        """Wrap a forward into a timed call: forward (+ BPTT via autograd) with fresh outputs."""
        if self.train:
            if self.single:
                def fn():
                    v, spikes = self.v0, []
                    for xt in self.xs:
                        s, v = step_fn(xt, v)
                        spikes.append(s)
                    return spikes, torch.autograd.grad(spikes, self.xs, self.g_list)
            else:
                def fn():
                    s = multi_fn(self.xg, self.v0)
                    return s, torch.autograd.grad(s, self.xg, self.g)[0]
        else:
            if self.single:
                def fn():
                    with torch.no_grad():
                        v, spikes = self.v0, []
                        for xt in self.x:
                            s, v = step_fn(xt, v)
                            spikes.append(s)
                        return spikes
            else:
                def fn():
                    with torch.no_grad():
                        return multi_fn(self.x, self.v0)
        return fn

    # --- spikecore ---
    def spikecore_e2e(self, backend=None, cfg=None):
        cfg = cfg or self.cfg
        if self.train:
            step = lambda x, v: NeuronFunction.apply(x, v, cfg, False, backend)
            multi = lambda x, v: NeuronFunction.apply(x, v, cfg, True, backend)[0]
        else:  # what a node runs under torch.no_grad(): the forward-only kernel
            def step(x, v):
                r = dispatch.forward(x, v, cfg, multi_step=False, backend=backend)
                return r.spike, r.v_next
            multi = lambda x, v: dispatch.forward(x, v, cfg, backend=backend).spike
        return self.run_autograd(step, multi)

    def spikecore_prealloc(self):
        """The raw kernels (spikecore._cpu_kernels) writing into buffers allocated here."""
        if self.dtype not in (torch.float32, torch.float64):
            raise RuntimeError(f"the raw kernels take float32/float64, not {self.dtype}")
        from spikecore import _cpu_kernels as K
        cfg, T, N = self.cfg, self.T, self.N
        p = cfg.kernel_args
        thr = cpu_backend.CPUBackend._threads
        x, v0, g = self.x.numpy(), self.v0.numpy(), self.g.numpy()
        bufs = [torch.zeros(T, N, dtype=self.dtype) for _ in range(3)]
        spike_t, gx_t = bufs[0], bufs[2]   # returned (as tensors) for the checks
        spike, h, gx = (b.numpy() for b in bufs)
        va, vb, ga, gb = (torch.zeros(N, dtype=self.dtype).numpy() for _ in range(4))
        gzero = torch.zeros(N, dtype=self.dtype).numpy()
        none = torch.empty(0, N, dtype=self.dtype).numpy()
        hh = h if self.train else none
        if not self.single:
            n_thr = thr(T * N)

            def fn():
                K.forward(x, v0, spike, va, hh, none, none, none, *p, n_thr)
                if self.train:
                    K.backward(g, gzero, h, none, none, gx, ga, *p, n_thr)
                    return spike_t, gx_t
                return spike_t
        else:
            n_thr = thr(N)
            rows = lambda arr: [arr[t:t + 1] for t in range(T)]
            xr, sr, gr, gxr = rows(x), rows(spike), rows(g), rows(gx)
            hr = rows(h) if self.train else [none] * T

            def fn():
                v_in = v0
                for t in range(T):
                    v_out = va if t % 2 == 0 else vb
                    K.forward(xr[t], v_in, sr[t], v_out, hr[t], none, none, none, *p, n_thr)
                    v_in = v_out
                if not self.train:
                    return spike_t
                g_in = gzero
                for t in range(T - 1, -1, -1):
                    g_out = ga if t % 2 else gb
                    K.backward(gr[t], g_in, hr[t], none, none, gxr[t], g_out, *p, n_thr)
                    g_in = g_out
                return spike_t, gx_t
        return fn

    # --- plain PyTorch ---
    def plain(self):
        cfg = self.cfg
        return self.run_autograd(lambda x, v: _plain_step(x, v, cfg),
                                 lambda x, v: reference.fptt_autograd(x, v, cfg)[0])

    def compiled(self, whole_loop=False):
        """torch.compile of the plain loop: by default of one step (the loop over T stays in
        Python; compiling the unrolled T-step graph took 707 s at T=64 here and ran slower)."""
        cfg = self.cfg
        step = torch.compile(lambda x, v: _plain_step(x, v, cfg), dynamic=False)
        if whole_loop:
            multi = torch.compile(lambda x, v: reference.fptt_autograd(x, v, cfg)[0],
                                  dynamic=False)
        else:
            def multi(x_seq, v):
                spikes = []
                for x in x_seq:
                    s, v = step(x, v)
                    spikes.append(s)
                return torch.stack(spikes)
        return self.run_autograd(step, multi)

    # --- peers ---
    def spikingjelly(self):
        mods, why = C.import_spikingjelly()
        if mods is None:
            raise ImportError(why)
        neuron, surrogate, _ = mods
        cfg = self.cfg
        sg_name = _surrogate.NAMES[cfg.surrogate]
        if not hasattr(surrogate, sg_name):
            raise RuntimeError(f"SpikingJelly has no surrogate {sg_name!r}")
        sg = getattr(surrogate, sg_name)(alpha=cfg.alpha)
        kw = dict(v_threshold=cfg.v_threshold, v_reset=cfg.v_reset, surrogate_function=sg,
                  detach_reset=cfg.detach_reset, step_mode="s" if self.single else "m")
        if self.a.neuron == "lif":
            node = neuron.LIFNode(tau=float(self.a.tau), decay_input=True, **kw)
        else:
            node = neuron.IFNode(**kw)

        def step(x, v):
            if v is self.v0:
                node.reset()
            return node(x), None

        def multi(x, v):
            node.reset()
            return node(x)
        return self.run_autograd(step, multi)

    def snntorch(self):
        mods, why = C.import_snntorch()
        if mods is None:
            raise ImportError(why)
        snntorch, surrogate = mods
        cfg = self.cfg_snn
        beta = 1.0 - cfg.reciprocal_tau if self.a.neuron == "lif" else 1.0
        sg_name = _surrogate.NAMES[cfg.surrogate].lower()
        if not hasattr(surrogate, sg_name):
            raise RuntimeError(f"snnTorch has no surrogate {sg_name!r}")
        leaky = snntorch.Leaky(beta=beta, threshold=cfg.v_threshold, reset_mechanism="zero",
                               spike_grad=getattr(surrogate, sg_name)(alpha=cfg.alpha))

        def step(x, v):
            return leaky(x, v)  # v is snnTorch's mem (H, before the delayed reset)

        def multi(x, v):  # snnTorch has no multi-step kernel: its documented Python loop
            mem, spikes = v, []
            for xt in x:
                s, mem = leaky(xt, mem)
                spikes.append(s)
            return torch.stack(spikes)
        return self.run_autograd(step, multi)


def build_candidates(S, a):
    """The candidates in table order; the first one is spikecore's primary row."""
    cands = []

    def add(name, make, note=""):
        try:
            cands.append(C.Candidate(name, make(), note=note))
        except Exception as exc:  # noqa: BLE001
            cands.append(C.Candidate(name, None, skip=f"{type(exc).__name__}: {exc}", note=note))

    if a.prealloc:
        add("spikecore kernels (prealloc)", S.spikecore_prealloc)
    add("spikecore e2e", S.spikecore_e2e)
    add("plain PyTorch loop", S.plain)
    if not a.no_reference:
        add("spikecore reference backend", lambda: S.spikecore_e2e(backend="reference"))
    if a.no_compile:
        cands.append(C.Candidate("torch.compile(plain step)", None, skip="--no-compile"))
    else:
        add("torch.compile(plain step)", S.compiled)
        if a.compile_loop and not S.single:
            add("torch.compile(whole plain loop)", lambda: S.compiled(whole_loop=True))
    if a.no_peers:
        cands.append(C.Candidate("SpikingJelly LIFNode/IFNode", None, skip="--no-peers"))
        cands.append(C.Candidate("snnTorch Leaky", None, skip="--no-peers"))
    else:
        add(f"SpikingJelly {C.peer_version('spikingjelly')}", S.spikingjelly)
        add(f"snnTorch {C.peer_version('snntorch')}", S.snntorch)
    return cands


# --- checks ---------------------------------------------------------------------------------------
def first_calls(S, cands, a):
    """Call each candidate once (compiling torch.compile, under a time limit), compare its spikes
    (and gradients) with spikecore's; returns lines to print."""
    ref = cands[0]
    lines = []
    ref_out = ref.fn()
    ref_s = _spikes(ref_out).clone()
    ref_g = _grads(ref_out)
    ref_g = None if ref_g is None else ref_g.clone()
    snn_ref = None
    for c in cands:
        if c.skip is not None:
            lines.append(f"  {c.name}: skipped ({c.skip})")
            continue
        t0 = time.perf_counter()
        try:
            if c.name.startswith("torch.compile"):
                out = _with_alarm(a.compile_timeout, c.fn)
            else:
                out = c.fn()
        except _Timeout:
            c.skip = f"compiling took over {a.compile_timeout:.0f} s (--compile-timeout)"
            torch._dynamo.reset()
            lines.append(f"  {c.name}: skipped ({c.skip})")
            continue
        except Exception as exc:  # noqa: BLE001
            c.skip = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:150]}"
            lines.append(f"  {c.name}: skipped ({c.skip})")
            continue
        first = time.perf_counter() - t0
        s = _spikes(out)
        what = ""
        if c.name.startswith("snnTorch"):
            # different model from the benchmarked one: compare with spikecore running the
            # matching math (LIF detach_input=True = beta*V + X, reset to 0, reset detached)
            if snn_ref is None:
                with torch.no_grad():
                    snn_ref = dispatch.forward(S.x, S.v0, S.cfg_snn).spike
            diff = int((s.to(snn_ref.dtype) != snn_ref).sum())
            what = ("spikes equal to spikecore with the matching model (LIF detach_input=True, "
                    "detach_reset=True)" if diff == 0 else
                    f"{diff} of {s.numel()} spikes differ from spikecore with the matching model "
                    "(snnTorch fires on H > θ, spikecore on H >= θ, and rounds beta*V + X "
                    "differently)")
            what += "; a different charge from the benchmarked LIF, so not compared with it"
        elif c is not ref:
            diff = int((s.to(ref_s.dtype) != ref_s).sum())
            what = "spikes equal" if diff == 0 else f"SPIKES DIFFER in {diff} of {s.numel()}"
            gr = _grads(out)
            if gr is not None and ref_g is not None:
                err = (gr.to(torch.float64) - ref_g.to(torch.float64)).abs().max().item()
                scale = ref_g.abs().max().item() or 1.0
                what += f", max |grad diff| {err:.2e} (rel {err / scale:.1e})"
        else:
            what = f"reference for the checks; firing rate {s.float().mean().item():.3f}"
        c.note = what
        lines.append(f"  {c.name}: {what}; first call {first * 1e3:.0f} ms")
        del out
    return lines


def check_threads(S, a):
    """spikecore's outputs at 1 thread vs the requested count: must be bit-identical."""
    if a.threads <= 1:
        return None
    fn = S.spikecore_e2e()
    outs = []
    for t in (1, a.threads):
        C.set_threads(t)
        o = fn()
        outs.append((_spikes(o).clone(), None if _grads(o) is None else _grads(o).clone()))
    C.set_threads(a.threads)
    same = torch.equal(outs[0][0], outs[1][0]) and (
        outs[0][1] is None or torch.equal(outs[0][1], outs[1][1]))
    return f"spikecore outputs at 1 and {a.threads} threads bit-identical: {same}"


def compare_threads(S, a):
    """spikecore at 1 thread vs ``a.threads`` threads, interleaved in this process."""
    makers = [("e2e", S.spikecore_e2e)]
    if S.dtype in (torch.float32, torch.float64):
        makers.insert(0, ("kernels (prealloc)", S.spikecore_prealloc))
    cands = []
    for name, make in makers:
        for t in (1, a.threads):
            def fn(f=None, t=t):
                C.set_threads(t)  # the kernels' count is read from torch at each call
                return f()
            cands.append(C.Candidate(f"spikecore {name}, {t} thread(s)",
                                     lambda f=make(), t=t: fn(f, t)))
    C.interleave(cands, a.repeat, warmup=1)
    C.set_threads(a.threads)
    rows = []
    for i in range(0, len(cands), 2):
        one, many = cands[i], cands[i + 1]
        rows.append([one.name.rsplit(",", 1)[0], f"{one.median * 1e3:.3f}",
                     f"{many.median * 1e3:.3f}",
                     f"{one.median / many.median:.2f}"])
    n_thr = cpu_backend.CPUBackend._threads(S.N if S.single else S.T * S.N)
    return rows, n_thr


# --- per-call overhead --------------------------------------------------------------------------
def overhead(a):
    """Time per call of a single-step LIF call on a tiny layer (µs), interleaved."""
    n, calls = a.overhead_neurons, a.overhead_calls
    cfg = NeuronConfig.build("LIF", 1.0, 0.0, 1.0 / a.tau, False, 2.0, a.surrogate, False)
    from spikecore import _cpu_kernels as K
    dtype = DTYPES[a.dtype] if a.dtype in ("float32", "float64") else torch.float32
    x = torch.rand(n, dtype=dtype) * 1.5
    v = torch.zeros(n, dtype=dtype)
    g = torch.randn(n, dtype=dtype)
    xg = x.clone().requires_grad_()
    p = cfg.kernel_args
    thr = cpu_backend.CPUBackend._threads(n)
    x2, v1 = x.view(1, n).numpy(), v.numpy()
    s2, h2, gx2 = (torch.empty(1, n, dtype=dtype).numpy() for _ in range(3))
    vn, gv = torch.empty(n, dtype=dtype).numpy(), torch.empty(n, dtype=dtype).numpy()
    g2 = g.view(1, n).numpy()
    none = torch.empty(0, n, dtype=dtype).numpy()

    def kernels():
        K.forward(x2, v1, s2, vn, h2, none, none, none, *p, thr)

    def kernels_fb():
        K.forward(x2, v1, s2, vn, h2, none, none, none, *p, thr)
        K.backward(g2, v1, h2, none, none, gx2, gv, *p, thr)

    def infer():
        with torch.no_grad():
            dispatch.forward(x, v, cfg, multi_step=False)

    def fwd():
        NeuronFunction.apply(xg, v, cfg, False, None)

    def fwd_bwd():
        s, _ = NeuronFunction.apply(xg, v, cfg, False, None)
        torch.autograd.grad(s, xg, g)

    node = LIFNode(tau=a.tau, surrogate_function=a.surrogate).to(dtype)

    def node_infer():        # a node in eval: the state carries over from call to call
        with torch.no_grad():
            node(x)

    def node_train():        # a node in training: the state is cut from the previous graph
        node.detach()
        node(xg)

    def plain_fwd():
        _plain_step(xg, v, cfg)

    def plain_fwd_bwd():
        s, _ = _plain_step(xg, v, cfg)
        torch.autograd.grad(s, xg, g)

    def batch(fn):
        def run():
            for _ in range(calls):
                fn()
        return run

    rows = [("raw kernel forward (prealloc)", kernels),
            ("raw kernels fwd+bwd (prealloc)", kernels_fb),
            ("dispatch.forward, no_grad (node in eval)", infer),
            ("NeuronFunction forward (node in training)", fwd),
            ("NeuronFunction forward + autograd backward", fwd_bwd),
            ("LIFNode(x), no_grad (the node itself, eval)", node_infer),
            ("LIFNode(x), training (the node itself)", node_train),
            ("plain PyTorch step forward", plain_fwd),
            ("plain PyTorch step forward + backward", plain_fwd_bwd)]
    cands = [C.Candidate(name, batch(fn)) for name, fn in rows]
    C.interleave(cands, repeat=max(5, a.repeat), warmup=1)
    return [[c.name, f"{c.median / calls * 1e6:.1f}"] for c in cands], thr


# --- main -----------------------------------------------------------------------------------------
def main(argv=None):
    a = parse(argv)
    C.set_threads(a.threads)
    S = Setup(a)
    T, N = S.T, S.N
    item = torch.empty(0, dtype=S.dtype).element_size()
    per = (6 if S.train else 2) * item
    what = ("forward+backward" if S.train else "forward-only (inference)")
    C.header(f"{a.neuron.upper()} {a.mode}-step {what}, T={T}, N={N}, {a.dtype}, "
             f"surrogate {_surrogate.NAMES[S.cfg.surrogate]}", a.threads)
    print(f"# spikecore CPU backend: calls under cpu_backend.PARALLEL_MIN_ELEMENTS = "
          f"{cpu_backend.PARALLEL_MIN_ELEMENTS} neuron-steps run on one thread")
    tensor_mib = T * N * item / 2**20
    print(f"# one [T, N] tensor: {tensor_mib:.1f} MiB; the kernels stream "
          f"{per} bytes per neuron-step ({per * T * N / 2**20:.0f} MiB per call)")
    if S.single:
        print(f"# single-step calls also read and write V (and dL/dV) every step: "
              f"{(10 if S.train else 4) * item} bytes per neuron-step at least; the floor below "
              f"uses the {per}-byte multi-step convention")
    cands = build_candidates(S, a)
    print("checks (same input for all):")
    for line in first_calls(S, cands, a):
        print(line)
    t_line = check_threads(S, a)
    if t_line:
        print("  " + t_line)
    C.flush()

    copy_bytes = T * N * item
    copies = C.copy_candidates(copy_bytes, a.threads)
    C.interleave(cands + copies, a.repeat, warmup=1)
    bw = C.bandwidth(copies, copy_bytes)
    floor = per * T * N / bw
    print(f"copy bandwidth (read+write, {copy_bytes / 2**20:.1f} MiB buffers, {a.threads} "
          f"thread(s)): numpy {2 * copy_bytes / copies[0].median / 1e9:.1f} GB/s, torch "
          f"{2 * copy_bytes / copies[1].median / 1e9:.1f} GB/s, streaming "
          f"{2 * copy_bytes / copies[2].median / 1e9:.1f} GB/s -> floor {floor * 1e3:.3f} ms "
          f"per call ({per} B/neuron-step)")

    prim = cands[0]
    rows = []
    for c in cands:
        if c.skip is not None:
            rows.append([c.name, "-", "-", "-", "-", f"skipped: {c.skip}"])
            continue
        rows.append([c.name, C.fmt_ms(c.median), f"{min(c.times) * 1e3:.2f}",
                     f"{c.median / floor:.2f}",
                     f"{c.median / prim.median:.2f}" if prim.skip is None else "-",
                     f"{(T * N) / c.median / 1e6:.0f}"])
    print(f"\nmedian of {a.repeat} interleaved repetitions; speed-up = candidate / "
          f"'{prim.name}'")
    print(C.table(rows, ["candidate", "median ms", "min ms", "x floor", "speed-up",
                         "Mneuron-steps/s"]))
    if a.compare_threads and a.threads > 1:
        rows, n_thr = compare_threads(S, a)
        print(f"\n1 vs {a.threads} threads, same process, interleaved (with --threads "
              f"{a.threads} one call here runs on {n_thr} kernel thread(s): "
              f"PARALLEL_MIN_ELEMENTS = {cpu_backend.PARALLEL_MIN_ELEMENTS} neuron-steps)")
        print(C.table(rows, ["candidate", "1 thread ms", f"{a.threads} threads ms",
                             "speed-up"]))
    if a.overhead_neurons > 0:
        rows, thr = overhead(a)
        print(f"\nper-call overhead, single-step LIF, N={a.overhead_neurons} "
              f"({thr} kernel thread(s); median over batches of {a.overhead_calls} calls)")
        print(C.table(rows, ["call", "us per call"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
