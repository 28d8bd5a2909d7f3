# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False, embedsignature=True
# distutils: language = c++
"""Fused CPU kernels for IF/LIF neurons: forward over time and backpropagation through time.

Design
------
Every kernel sees time-major, C-contiguous 2-D buffers ``[T, N]`` (a single step is ``T = 1``).
Neurons are independent and time is a recurrence, so the work is split over *neurons*: the
neuron axis is cut into contiguous blocks (at most ``BLOCK_MAX`` neurons, so a block's state
row stays in the core's L2 cache), ``prange`` hands the blocks to OpenMP threads with a static
schedule, and inside a block time runs outside and neurons inside. The inner loop thus streams
a contiguous row segment of every buffer, and the recurrent state of a block (the potential in
the forward pass, the carried dL/dV in the backward pass) lives in the output buffer ``v_next``
/ ``grad_v`` itself, which doubles as the per-neuron state array. The forward pass walks time in
tiles of ``TILE`` steps, each chunk of neurons running a whole tile with its potential in L1,
which keeps several input rows in flight. No element depends on how the blocks are assigned to
threads, so results are bit-identical for any thread count.

Speed comes from inner loops the compiler can vectorise: no branch may depend on anything but
the data. The hot paths (training forward, inference forward, BPTT from saved H) are therefore
specialised at compile time through *tag* fused types (``charge_kind``, ``reset_kind``): each
specialisation calls the shared formulas with constant arguments, which fold away their
switches. In the backward pass the surrogate derivative of a chunk is computed first, by one of
seven single-purpose loops, into an L1 buffer that the recursion then reads.
Rarely used outputs (the teaching path's local gradients, the potential sequence) take one
general loop.

Memory traffic decides the speed of these loops, so each row segment is processed in chunks of
``CHUNK`` neurons whose outputs are computed into small L1 buffers and then written out by
``include/spikecore_stream.h``: with streaming (non-temporal) stores when the output is large
(``stream_min_bytes``), which saves the read-for-ownership of every destination line, and with
plain stores otherwise (then the loop writes its outputs in place). Input rows
are prefetched ``PREFETCH_AHEAD`` neurons ahead, because the hardware prefetcher stops at page
boundaries. The bytes written never depend on the route, so results do not either.

BPTT can also start from the forward's input instead of a saved H (``backward_from_input``,
and ``backward_plif_from_input`` for a learnable 1/tau): each chunk of neurons first runs the
forward recursion again over all steps, keeping its H in a small scratch buffer that stays in
L1, then backpropagates from it with the same code as from a saved H. The same formulas in
the same order give the same H, so the gradients are the same bits; the forward pass then
writes no H at all, which suits layers small enough to live in cache (chunk-major access is
slower than the row-streaming kernels for large tensors).

float16 and bfloat16 tensors run the same float32 loops on rows converted in cache
(``forward_half``, ``backward_half``, at the end of this file).

The scalar formulas (charge, fire, reset, surrogate derivatives with their exponential, dV/dH)
come from ``include/spikecore_math.h``, the header the CUDA kernels include too. A float32
forward that keeps H in bfloat16 rounds each row with ``include/spikecore_bf16_row.h``
(sixteen values per instruction with AVX512-BF16, the same bits as the scalar rule).

Buffers are typed memoryviews; arguments marked ``# IN`` are read, ``# OUT`` are written. Any
object with the buffer protocol will do (numpy arrays in the tests); the Python layer passes
``TensorBuffer`` objects, thin views of torch tensors' memory that cost far less to make and
to acquire than numpy views (about 0.3 µs per tensor instead of 0.9). An
optional output that the caller does not want is passed as a ``[0, N]`` buffer and is then
neither read nor written. Two inputs may be absent the same way, which spares the caller a
tensor it would only fill with a constant: the initial potential ``v`` (every neuron then
starts at rest, ``v_reset`` under hard reset and 0 under soft reset: a fresh node) and the
incoming ``grad_v_next`` (zero: the last potential does not reach the loss). The Python layer
(``spikecore/dispatch.py``, ``spikecore/cpu_backend.py``) validates shapes, dtypes and
contiguity before it calls in here; these functions trust their arguments.
"""

from cpython.buffer cimport Py_buffer
from libc.stdlib cimport free, malloc
from cython.parallel cimport prange, threadid
from cython.view cimport array as cvarray

cdef extern from "spikecore_math.h" namespace "spikecore" nogil:
    cdef enum:
        CHARGE_IF
        CHARGE_LIF
        CHARGE_LIF_DETACH_INPUT
        SG_ATAN
        SG_SIGMOID
        SG_PIECEWISE_QUADRATIC
        SG_SOFTSIGN
        SG_ERF
        SG_SUPERSPIKE
        SG_PIECEWISE_EXP
    float charge(int mode, float x, float v, float v_reset, float reciprocal_tau)
    double charge(int mode, double x, double v, double v_reset, double reciprocal_tau)
    float charge_grad_x(int mode, float reciprocal_tau)
    double charge_grad_x(int mode, double reciprocal_tau)
    float charge_grad_v(int mode, float reciprocal_tau)
    double charge_grad_v(int mode, double reciprocal_tau)
    float fire(float h, float v_threshold)
    double fire(double h, double v_threshold)
    float hard_reset(float h, float s, float v_reset)
    double hard_reset(double h, double s, double v_reset)
    float soft_reset(float h, float s, float v_threshold)
    double soft_reset(double h, double s, double v_threshold)
    float surrogate_grad(int index, float x, float alpha)
    double surrogate_grad(int index, double x, double alpha)
    float charge_grad_tau(int mode, float h, float v, float v_reset, float reciprocal_tau)
    double charge_grad_tau(int mode, double h, double v, double v_reset, double reciprocal_tau)
    unsigned short bf16_keep_spike(float h, float s, float v_threshold)
    float bf16_to_float(unsigned short b)
    float reset_grad(int hard, int detach_reset, float h, float s, float sg,
                     float v_threshold, float v_reset)
    double reset_grad(int hard, int detach_reset, double h, double s, double sg,
                      double v_threshold, double v_reset)

cdef extern from "spikecore_bf16_row.h" namespace "spikecore" nogil:
    void bf16_keep_spike_row(const float* h, const float* s, unsigned short* dst, Py_ssize_t n,
                             float v_threshold)

cdef extern from "spikecore_bf16_row.h" nogil:
    const int SC_BF16_ROW_VECTOR  # a macro: 1 where the build rounds rows with AVX512-BF16

cdef extern from "spikecore_half.h" namespace "spikecore" nogil:
    void half_row_to_float(const unsigned short* src, float* dst, long n, int is_f16)
    void float_row_to_half(const float* src, unsigned short* dst, long n, int is_f16)

cdef extern from "spikecore_stream.h" namespace "spikecore" nogil:
    void sc_store_chunk(void* dst, const void* src, size_t n, int stream)
    void sc_store_fence()
    void sc_prefetch(const void* p, size_t n)

cdef extern from "spikecore_stream.h" nogil:
    const int SC_STREAM_AVAILABLE  # a macro: 1 where the build has streaming stores

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SPIKECORE_OPENMP 1
    #else
    #define SPIKECORE_OPENMP 0
    #endif
    """
    const int SPIKECORE_OPENMP

cdef extern from *:
    """
    #if defined(__AVX512F__)
    #define SPIKECORE_VECTOR_ISA "AVX-512"
    #elif defined(__AVX2__)
    #define SPIKECORE_VECTOR_ISA "AVX2"
    #elif defined(__AVX__)
    #define SPIKECORE_VECTOR_ISA "AVX"
    #elif defined(__SSE2__)
    #define SPIKECORE_VECTOR_ISA "SSE2"
    #elif defined(__ARM_NEON)
    #define SPIKECORE_VECTOR_ISA "NEON"
    #else
    #define SPIKECORE_VECTOR_ISA "none"
    #endif
    """
    const char* SPIKECORE_VECTOR_ISA

ctypedef fused real:
    float
    double

# How the saved H is stored: in the compute dtype, or as bfloat16 bits (half the memory and half
# the backward's reads of H; see bf16_keep_spike in the header).
ctypedef unsigned short BF16Bits
ctypedef fused hstore:
    float
    double
    BF16Bits

# Compile-time tags: distinct C types whose only use is to select a specialisation.
ctypedef signed char IFCharge
ctypedef short LIFCharge
ctypedef int LIFDetachInputCharge
ctypedef fused charge_kind:
    IFCharge
    LIFCharge
    LIFDetachInputCharge

ctypedef unsigned char HardReset
ctypedef unsigned short SoftReset
ctypedef fused reset_kind:
    HardReset
    SoftReset

cdef enum:
    # Blocks hold BLOCK_MIN..BLOCK_MAX neurons: long enough rows for the hardware prefetcher,
    # short enough that a block's state row (64 KiB of float32) stays in L2.
    BLOCK_MIN = 4096
    BLOCK_MAX = 16384
    # Neurons per chunk buffer: 512 B of float32 per buffer, so a chunk's buffers stay in L1.
    # On tensors far larger than the last-level cache 128 ran the backward 10% and the forward
    # 10% faster than 256 (more row segments in flight per step); 64 and 512 were slower.
    CHUNK = 128
    # Steps a chunk of neurons runs in a row in the forward pass (see _forward_fast): four
    # input rows in flight at once made the forward 15-20% faster on tensors far larger than
    # the last-level cache; two gave half of that, eight less.
    TILE = 4
    # How far ahead in a row (neurons) the kernels prefetch their streamed inputs.
    PREFETCH_AHEAD = 1024
    # Bytes of recomputed H a chunk of backward_from_input keeps (a share of a core's L1).
    SCRATCH_BYTES = 1 << 14
    # The learnable-1/tau backward adds its per-neuron sums in segments of SUM_SEGMENT
    # neurons (one thread each), each with SUM_LANES running sums (see _lane_sum).
    SUM_SEGMENT = 8192
    SUM_LANES = 16
    # Neurons per block of a 16-bit call (see forward_half): its float32 scratch rows, TILE
    # of each sequence, stay in a core's L2 cache.
    HALF_WIDTH = 4096

# Outputs of at least this many bytes per [T, N] tensor are written with streaming stores
# (include/spikecore_stream.h); smaller ones are likely still in cache when they are read next.
cdef Py_ssize_t _stream_min_bytes = 2 << 20


# --- torch tensors as buffers ---------------------------------------------------------------------
# Element kinds of a TensorBuffer, with their buffer-protocol formats.
FLOAT32, FLOAT64, BF16_BITS = 0, 1, 2
cdef const char* _FORMATS[3]
_FORMATS[:] = [b"f", b"d", b"H"]
cdef Py_ssize_t _ITEMSIZES[3]
_ITEMSIZES[:] = [4, 8, 2]


cdef class TensorBuffer:
    """``TensorBuffer(address, rows, cols, kind, owner=None)``: the C-contiguous memory at
    ``address`` as a ``[rows, cols]`` buffer (``rows=-1``: a ``[cols]`` vector) of ``kind``
    (``FLOAT32``, ``FLOAT64`` or ``BF16_BITS``, the bits of bfloat16 as unsigned 16-bit
    integers), for the kernels' typed memoryviews.

    ``owner`` (the tensor whose memory it is) is kept alive as long as the buffer, so a
    temporary made for the call (a contiguous copy) cannot be freed under the kernel. Address 0
    with no elements stands for an absent buffer.
    """
    cdef char* data
    cdef Py_ssize_t shape[2]
    cdef Py_ssize_t strides[2]
    cdef int ndim
    cdef int kind
    cdef object owner

    def __cinit__(self, size_t address, Py_ssize_t rows, Py_ssize_t cols, int kind,
                  object owner=None):
        if kind < 0 or kind > 2:
            raise ValueError(f"kind must be FLOAT32, FLOAT64 or BF16_BITS, got {kind}")
        if rows < -1 or cols < 0:
            raise ValueError(f"invalid buffer shape [{rows}, {cols}]")
        self.data = <char*>address
        self.kind = kind
        self.owner = owner
        self.ndim = 1 if rows == -1 else 2
        if self.ndim == 1:
            self.shape[0] = cols
            self.strides[0] = _ITEMSIZES[kind]
        else:
            self.shape[0], self.shape[1] = rows, cols
            self.strides[0], self.strides[1] = cols * _ITEMSIZES[kind], _ITEMSIZES[kind]

    def __getbuffer__(self, Py_buffer* buf, int flags):
        buf.buf = self.data
        buf.obj = self
        buf.len = self.shape[0] * self.strides[0]
        buf.readonly = 0
        buf.itemsize = _ITEMSIZES[self.kind]
        buf.format = <char*>_FORMATS[self.kind]
        buf.ndim = self.ndim
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer* buf):
        pass


def openmp_enabled():
    """True when this module was compiled with OpenMP."""
    return SPIKECORE_OPENMP == 1


def vector_isa():
    """The widest vector instruction set this module was compiled for ("AVX-512" for a native
    build on such a CPU, "SSE2" for a portable x86-64 build, ...); streaming stores use it."""
    return SPIKECORE_VECTOR_ISA.decode()


def stream_min_bytes(new=None):
    """The size (bytes of one [T, N] output) from which outputs are streamed to memory; with an
    argument, set it (0 streams everything) and return the previous value."""
    global _stream_min_bytes
    old = _stream_min_bytes
    if new is not None:
        if new < 0:
            raise ValueError(f"stream_min_bytes must be >= 0, got {new}")
        _stream_min_bytes = new
    return old


def bf16_rows_vectorised():
    """Whether this build rounds rows of H to bfloat16 with AVX512-BF16 (``vcvtneps2bf16``)
    rather than with the per-element integer rule; the bits are the same either way."""
    return bool(SC_BF16_ROW_VECTOR)


cdef inline int _should_stream(Py_ssize_t nbytes) noexcept nogil:
    # without streaming stores in this build, writing in place beats copying from a buffer
    return SC_STREAM_AVAILABLE and nbytes >= _stream_min_bytes


cdef int _check_threads(int n_threads) except -1:
    """OpenMP needs at least one thread (0 would divide by zero below, -1 makes libgomp abort);
    every entry point calls this before its parallel loop."""
    if n_threads < 1:
        raise ValueError(f"n_threads must be >= 1, got {n_threads}")
    return 0


cdef inline Py_ssize_t _block_size(Py_ssize_t n, int n_threads) noexcept nogil:
    cdef Py_ssize_t per_thread = (n + n_threads - 1) // n_threads
    if per_thread < BLOCK_MIN:
        per_thread = BLOCK_MIN
    if per_thread > BLOCK_MAX:
        per_thread = BLOCK_MAX
    return (per_thread + 15) // 16 * 16


cdef inline Py_ssize_t _chunk_len(Py_ssize_t c, Py_ssize_t hi) noexcept nogil:
    """Neurons in the chunk that starts at c, in a block that ends at hi."""
    return CHUNK if c + CHUNK <= hi else hi - c


cdef inline void _prefetch_ahead(const void* row, size_t item, Py_ssize_t c, Py_ssize_t m,
                                 Py_ssize_t hi) noexcept nogil:
    """Prefetch the chunk PREFETCH_AHEAD neurons after ``row`` (neuron c, ``item`` bytes each)
    when the block still has it."""
    if c + PREFETCH_AHEAD + m <= hi:
        sc_prefetch(<const char*>row + PREFETCH_AHEAD * item, m * item)


cdef inline void _pass_through(real* dst, const real* src, Py_ssize_t lo,
                               Py_ssize_t hi) noexcept nogil:
    """dst[lo:hi] = src[lo:hi]: what a zero-step call does to the state."""
    cdef Py_ssize_t j
    for j in range(lo, hi):
        dst[j] = src[j]


cdef inline bint _start_state(real* state, const real[::1] given, real fill, bint copy,
                              Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Prepare the recurrent state row ``state[lo:hi]`` before the first step. When the input
    ``given`` is absent ([0]), the state starts as ``fill`` and True is returned: the first step
    then reads ``state``. Otherwise ``given`` is copied in if ``copy`` (else the first step reads
    it directly) and False is returned."""
    cdef Py_ssize_t j
    if given.shape[0] == 0:
        for j in range(lo, hi):
            state[j] = fill
        return True
    if copy:
        _pass_through(state, &given[0], lo, hi)
    return False


cdef inline void _put_h(hstore[:, ::1] h_seq, Py_ssize_t t, Py_ssize_t i, real h, real s,
                        real v_threshold) noexcept nogil:
    if hstore is BF16Bits:
        h_seq[t, i] = bf16_keep_spike(<float>h, <float>s, <float>v_threshold)
    else:
        h_seq[t, i] = <hstore>h


cdef inline double _h_value(hstore q) noexcept nogil:
    """A stored H as a number: float -> double -> float is exact, so callers that cast back
    lose nothing; bfloat16 bits are widened."""
    if hstore is BF16Bits:
        return bf16_to_float(q)
    else:
        return q


cdef inline int _mode(charge_kind tag) noexcept nogil:
    if charge_kind is IFCharge:
        return CHARGE_IF
    elif charge_kind is LIFCharge:
        return CHARGE_LIF
    else:
        return CHARGE_LIF_DETACH_INPUT


# --- forward -----------------------------------------------------------------------------------
cdef void _forward_fast(charge_kind ck, reset_kind rk,
                        const real[:, ::1] x, const real[::1] v0,
                        real[:, ::1] spike, real[::1] v_out, hstore[:, ::1] h_seq,
                        real v_threshold, real v_reset, real reciprocal_tau,
                        Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    """Training (h_seq given) or inference forward, specialised on charge and reset.

    Rows are processed in chunks of CHUNK neurons, and time in tiles of TILE steps: a chunk
    runs all steps of a tile before the next chunk, with the potential between them in an L1
    buffer, so the tile's input rows are read side by side and the block's state row is read
    and written once per tile. Without streaming the loop writes its outputs in place; with
    streaming it writes S and H (and, on the last step, V) into L1 buffers that sc_store_chunk
    then streams out."""
    cdef Py_ssize_t t, t0, u, n_u, j, k, c, m, steps = x.shape[0], last = x.shape[0] - 1
    cdef int mode = _mode(ck)
    cdef bint save_h = h_seq.shape[0] != 0
    cdef real v_rest = v_reset if reset_kind is HardReset else <real>0
    cdef real h, s
    cdef const real* x_row
    cdef const real* v_in
    cdef real* s_dst
    cdef real* v_dst
    cdef hstore* h_dst = NULL
    cdef real s_buf[TILE][CHUNK]
    cdef hstore h_buf[TILE][CHUNK]
    cdef real v_tile[CHUNK]
    cdef real v_buf[CHUNK]
    cdef float h_row[CHUNK]   # float32 H of one row, rounded to bfloat16 bits after the row
    cdef bint at_rest = _start_state(&v_out[0], v0, v_rest, steps == 0, lo, hi)
    t0 = 0
    while t0 < steps:
        n_u = TILE if t0 + TILE <= steps else steps - t0
        for k in range((hi - lo + CHUNK - 1) // CHUNK):
            c = lo + k * CHUNK
            m = _chunk_len(c, hi)
            for u in range(n_u):
                t = t0 + u
                x_row = &x[t, c]
                _prefetch_ahead(x_row, sizeof(real), c, m, hi)
                if u > 0:
                    v_in = &v_tile[0]
                elif t == 0 and not at_rest:
                    v_in = &v0[c]
                else:
                    v_in = &v_out[c]
                if u < n_u - 1:
                    v_dst = &v_tile[0]
                elif stream and t == last:
                    v_dst = &v_buf[0]
                else:
                    v_dst = &v_out[c]
                s_dst = &s_buf[u][0] if stream else &spike[t, c]
                if save_h:
                    h_dst = &h_buf[u][0] if stream else &h_seq[t, c]
                for j in range(m):
                    h = charge(mode, x_row[j], v_in[j], v_rest, reciprocal_tau)
                    s = fire(h, v_threshold)
                    s_dst[j] = s
                    if save_h:
                        if hstore is BF16Bits and real is float:
                            h_row[j] = h
                        elif hstore is BF16Bits:
                            h_dst[j] = bf16_keep_spike(<float>h, <float>s, <float>v_threshold)
                        else:
                            h_dst[j] = <hstore>h
                    if reset_kind is HardReset:
                        v_dst[j] = hard_reset(h, s, v_reset)
                    else:
                        v_dst[j] = soft_reset(h, s, v_threshold)
                if hstore is BF16Bits and real is float and save_h:
                    bf16_keep_spike_row(h_row, s_dst, h_dst, m, v_threshold)
            if stream:
                for u in range(n_u):
                    sc_store_chunk(&spike[t0 + u, c], &s_buf[u][0], m * sizeof(real), 1)
                    if save_h:
                        sc_store_chunk(&h_seq[t0 + u, c], &h_buf[u][0], m * sizeof(hstore), 1)
                if t0 + n_u - 1 == last:
                    sc_store_chunk(&v_out[c], v_buf, m * sizeof(real), 1)
        t0 = t0 + n_u
    if stream:
        sc_store_fence()


cdef void _forward_general(const real[:, ::1] x, const real[::1] v0,
                           real[:, ::1] spike, real[::1] v_out,
                           hstore[:, ::1] h_seq, real[:, ::1] v_seq,
                           real[:, ::1] grad_s_to_h, real[:, ::1] grad_v_to_h,
                           int mode, int hard, int detach_reset, int sg_index,
                           real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """Every option at once (teaching path, potential sequence): one loop, not specialised."""
    cdef Py_ssize_t t, i
    cdef bint save_h = h_seq.shape[0] != 0
    cdef bint save_v = v_seq.shape[0] != 0
    cdef bint with_grad = grad_s_to_h.shape[0] != 0
    cdef real v_rest = v_reset if hard else <real>0
    cdef real h, s, sg
    _start_state(&v_out[0], v0, v_rest, True, lo, hi)
    for t in range(x.shape[0]):
        for i in range(lo, hi):
            h = charge(mode, x[t, i], v_out[i], v_rest, reciprocal_tau)
            s = fire(h, v_threshold)
            spike[t, i] = s
            if save_h:
                _put_h(h_seq, t, i, h, s, v_threshold)
            if with_grad:
                sg = surrogate_grad(sg_index, h - v_threshold, alpha)
                grad_s_to_h[t, i] = sg
                grad_v_to_h[t, i] = reset_grad(hard, detach_reset, h, s, sg, v_threshold, v_reset)
            if hard:
                v_out[i] = hard_reset(h, s, v_reset)
            else:
                v_out[i] = soft_reset(h, s, v_threshold)
            if save_v:
                v_seq[t, i] = v_out[i]


cdef void _forward_block(const real[:, ::1] x, const real[::1] v0,
                         real[:, ::1] spike, real[::1] v_out,
                         hstore[:, ::1] h_seq, real[:, ::1] v_seq,
                         real[:, ::1] grad_s_to_h, real[:, ::1] grad_v_to_h,
                         int mode, int hard, int detach_reset, int sg_index,
                         real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                         Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    if v_seq.shape[0] != 0 or grad_s_to_h.shape[0] != 0:
        _forward_general(x, v0, spike, v_out, h_seq, v_seq, grad_s_to_h, grad_v_to_h, mode,
                         hard, detach_reset, sg_index, v_threshold, v_reset, reciprocal_tau,
                         alpha, lo, hi)
    elif mode == CHARGE_IF and hard:
        _forward_fast(<IFCharge>0, <HardReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)
    elif mode == CHARGE_IF:
        _forward_fast(<IFCharge>0, <SoftReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)
    elif mode == CHARGE_LIF and hard:
        _forward_fast(<LIFCharge>0, <HardReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)
    elif mode == CHARGE_LIF:
        _forward_fast(<LIFCharge>0, <SoftReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)
    elif hard:
        _forward_fast(<LIFDetachInputCharge>0, <HardReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)
    else:
        _forward_fast(<LIFDetachInputCharge>0, <SoftReset>0, x, v0, spike, v_out, h_seq,
                      v_threshold, v_reset, reciprocal_tau, lo, hi, stream)


def forward(const real[:, ::1] x,           # IN  [T, N] input current
            const real[::1] v,              # IN  [N] potential before the first step, or
                                            #     [0]: every neuron starts at rest
            real[:, ::1] spike,             # OUT [T, N] spikes
            real[::1] v_next,               # OUT [N] potential after the last step
            hstore[:, ::1] h_seq,           # OUT [T, N] charged potential H (compute dtype, or
                                            #     bfloat16 bits), or [0, N]
            real[:, ::1] v_seq,             # OUT [T, N] potential after reset, or [0, N]
            real[:, ::1] grad_s_to_h,       # OUT [T, N] dS/dH, or [0, N]
            real[:, ::1] grad_v_to_h,       # OUT [T, N] dV/dH, or [0, N] (iff grad_s_to_h is)
            int mode, bint hard, bint detach_reset, int sg_index,
            double v_threshold, double v_reset, double reciprocal_tau, double alpha,
            int n_threads):
    """Run ``T`` steps of charge, fire and reset; optionally keep H, V and the local gradients."""
    _check_threads(n_threads)
    cdef Py_ssize_t n = x.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t b, lo, hi
    cdef int stream = _should_stream(x.shape[0] * n * <Py_ssize_t>sizeof(real))
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        _forward_block(x, v, spike, v_next, h_seq, v_seq, grad_s_to_h, grad_v_to_h,
                       mode, hard, detach_reset, sg_index,
                       <real>v_threshold, <real>v_reset, <real>reciprocal_tau, <real>alpha,
                       lo, hi, stream)


# --- backward ----------------------------------------------------------------------------------
cdef void _surrogate_row(int index, const hstore* h_row, real* out, real v_threshold,
                         real alpha, Py_ssize_t m) noexcept nogil:
    """out[j] = g'(H[j] - θ) for the m values of H at h_row: one loop per surrogate, so each
    vectorises."""
    cdef Py_ssize_t j
    if index == SG_ATAN:
        for j in range(m):
            out[j] = surrogate_grad(SG_ATAN, <real>_h_value(h_row[j]) - v_threshold, alpha)
    elif index == SG_SIGMOID:
        for j in range(m):
            out[j] = surrogate_grad(SG_SIGMOID, <real>_h_value(h_row[j]) - v_threshold, alpha)
    elif index == SG_PIECEWISE_QUADRATIC:
        for j in range(m):
            out[j] = surrogate_grad(SG_PIECEWISE_QUADRATIC, <real>_h_value(h_row[j]) - v_threshold,
                                    alpha)
    elif index == SG_SOFTSIGN:
        for j in range(m):
            out[j] = surrogate_grad(SG_SOFTSIGN, <real>_h_value(h_row[j]) - v_threshold, alpha)
    elif index == SG_ERF:
        for j in range(m):
            out[j] = surrogate_grad(SG_ERF, <real>_h_value(h_row[j]) - v_threshold, alpha)
    elif index == SG_SUPERSPIKE:
        for j in range(m):
            out[j] = surrogate_grad(SG_SUPERSPIKE, <real>_h_value(h_row[j]) - v_threshold, alpha)
    else:
        for j in range(m):
            out[j] = surrogate_grad(SG_PIECEWISE_EXP, <real>_h_value(h_row[j]) - v_threshold, alpha)


cdef inline real _grad_h(int hard, int detach_reset, real grad_s, real grad_v, real h, real sg,
                         real v_threshold, real v_reset) noexcept nogil:
    """dL/dH[t] = dL/dS[t]·sg[t] + dL/dV[t]·dV[t]/dH[t], S and dV/dH recomputed from H."""
    return grad_s * sg + grad_v * reset_grad(hard, detach_reset, h, fire(h, v_threshold), sg,
                                             v_threshold, v_reset)


cdef inline void _stream_grad_chunk(real[:, ::1] grad_x, real[::1] grad_v, const real* gx_buf,
                                    const real* gv_buf, Py_ssize_t t, Py_ssize_t c,
                                    Py_ssize_t m) noexcept nogil:
    """Stream a chunk's dL/dX[t] out of its L1 buffer, and dL/dV[-1] after the last step (t=0)."""
    sc_store_chunk(&grad_x[t, c], gx_buf, m * sizeof(real), 1)
    if t == 0:
        sc_store_chunk(&grad_v[c], gv_buf, m * sizeof(real), 1)


cdef void _backward_from_h(reset_kind rk,
                           const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                           const hstore* h_base, Py_ssize_t h_stride, Py_ssize_t h_first,
                           real[:, ::1] grad_x, real[::1] grad_v,
                           int detach_reset, int sg_index, real v_threshold, real v_reset,
                           real alpha, real dh_dx, real dh_dv,
                           Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    """BPTT recomputing S, dS/dH and dV/dH from H; specialised on the reset. H of neuron i at
    step t is ``h_base[t * h_stride + i - h_first]``: the saved [T, N] H (stride N, first 0) or
    a block's H recomputed into scratch memory (stride and first of the block).

    Rows are processed in chunks of CHUNK neurons: the surrogate of the chunk first (its own
    vectorised loop, into an L1 buffer), then the recursion. Outputs are written in place, or
    (streaming) into L1 buffers that sc_store_chunk streams out."""
    cdef Py_ssize_t t, j, k, c, m, last = grad_spike.shape[0] - 1
    cdef int hard = reset_kind is HardReset
    cdef real h, sg, grad_h
    cdef const real* gs_row
    cdef const hstore* h_row
    cdef const real* gv_in
    cdef real* gx_dst
    cdef real* gv_dst
    cdef real sg_buf[CHUNK]
    cdef real gx_buf[CHUNK]
    cdef real gv_buf[CHUNK]
    cdef bint no_carry = _start_state(&grad_v[0], grad_v_last, 0, grad_spike.shape[0] == 0,
                                      lo, hi)
    for t in range(last, -1, -1):
        for k in range((hi - lo + CHUNK - 1) // CHUNK):
            c = lo + k * CHUNK
            m = _chunk_len(c, hi)
            gs_row = &grad_spike[t, c]
            h_row = h_base + t * h_stride + (c - h_first)
            _prefetch_ahead(gs_row, sizeof(real), c, m, hi)
            _prefetch_ahead(h_row, sizeof(hstore), c, m, hi)
            gv_in = &grad_v_last[c] if t == last and not no_carry else &grad_v[c]
            gx_dst = &gx_buf[0] if stream else &grad_x[t, c]
            gv_dst = &gv_buf[0] if stream and t == 0 else &grad_v[c]
            _surrogate_row(sg_index, h_row, sg_buf, v_threshold, alpha, m)
            for j in range(m):
                h = <real>_h_value(h_row[j])
                sg = sg_buf[j]
                grad_h = _grad_h(hard, detach_reset, gs_row[j], gv_in[j], h, sg, v_threshold,
                                 v_reset)
                gx_dst[j] = grad_h * dh_dx
                gv_dst[j] = grad_h * dh_dv
            if stream:
                _stream_grad_chunk(grad_x, grad_v, gx_buf, gv_buf, t, c, m)
    if stream:
        sc_store_fence()


cdef void _backward_stored(const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                           const real[:, ::1] grad_s_to_h, const real[:, ::1] grad_v_to_h,
                           real[:, ::1] grad_x, real[::1] grad_v, real dh_dx, real dh_dv,
                           Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """BPTT from the stored local gradients of the teaching path."""
    cdef Py_ssize_t t, i
    cdef real grad_h
    _start_state(&grad_v[0], grad_v_last, 0, True, lo, hi)
    for t in range(grad_spike.shape[0] - 1, -1, -1):
        for i in range(lo, hi):
            grad_h = grad_spike[t, i] * grad_s_to_h[t, i] + grad_v[i] * grad_v_to_h[t, i]
            grad_x[t, i] = grad_h * dh_dx
            grad_v[i] = grad_h * dh_dv


def backward(const real[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t]
             const real[::1] grad_v_next,     # IN  [N] dL/dV[T-1], or [0]: zero
             const hstore[:, ::1] h_seq,      # IN  [T, N] saved H (recompute route), or [0, N]
             const real[:, ::1] grad_s_to_h,  # IN  [T, N] dS/dH (stored route), or [0, N]
             const real[:, ::1] grad_v_to_h,  # IN  [T, N] dV/dH (stored route), or [0, N]
             real[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
             real[::1] grad_v,                # OUT [N] dL/dV[-1]
             int mode, bint hard, bint detach_reset, int sg_index,
             double v_threshold, double v_reset, double reciprocal_tau, double alpha,
             int n_threads):
    """Backpropagate through ``T`` steps, from saved H (recomputing S and the surrogate) or from
    the stored local gradients dS/dH and dV/dH."""
    _check_threads(n_threads)
    cdef Py_ssize_t n = grad_spike.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t b, lo, hi
    cdef bint recompute = h_seq.shape[0] != 0
    cdef real dh_dx = charge_grad_x(mode, <real>reciprocal_tau)
    cdef real dh_dv = charge_grad_v(mode, <real>reciprocal_tau)
    cdef int stream = _should_stream(grad_spike.shape[0] * n * <Py_ssize_t>sizeof(real))
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        if not recompute:
            _backward_stored(grad_spike, grad_v_next, grad_s_to_h, grad_v_to_h, grad_x, grad_v,
                             dh_dx, dh_dv, lo, hi)
        elif hard:
            _backward_from_h(<HardReset>0, grad_spike, grad_v_next, &h_seq[0, 0], n, 0, grad_x,
                             grad_v, detach_reset, sg_index, <real>v_threshold, <real>v_reset,
                             <real>alpha, dh_dx, dh_dv, lo, hi, stream)
        else:
            _backward_from_h(<SoftReset>0, grad_spike, grad_v_next, &h_seq[0, 0], n, 0, grad_x,
                             grad_v, detach_reset, sg_index, <real>v_threshold, <real>v_reset,
                             <real>alpha, dh_dx, dh_dv, lo, hi, stream)


# --- backward from the input: H recomputed, not saved -------------------------------------------
cdef void _recompute_h(charge_kind ck, reset_kind rk, const real[:, ::1] x, const real[::1] v0,
                       real* state, real* h_out, real v_threshold, real v_reset,
                       real reciprocal_tau, Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    """The forward recursion of neurons [lo, hi) again, keeping only H: ``h_out[t * (hi - lo) +
    i - lo]`` = H[t, i]. ``state`` (the caller's grad_v row, free until the BPTT starts) holds
    the potential. Same formulas, same order as _forward_fast, so every H is bit-identical to
    the one the forward pass computed."""
    cdef Py_ssize_t t, j, k, c, m, width = hi - lo
    cdef int mode = _mode(ck)
    cdef real v_rest = v_reset if reset_kind is HardReset else <real>0
    cdef real h, s
    cdef const real* x_row
    cdef real* h_dst
    _start_state(state, v0, v_rest, True, lo, hi)
    for t in range(x.shape[0]):
        for k in range((width + CHUNK - 1) // CHUNK):
            c = lo + k * CHUNK
            m = _chunk_len(c, hi)
            x_row = &x[t, c]
            _prefetch_ahead(x_row, sizeof(real), c, m, hi)
            h_dst = h_out + t * width + (c - lo)
            for j in range(m):
                h = charge(mode, x_row[j], state[c + j], v_rest, reciprocal_tau)
                s = fire(h, v_threshold)
                h_dst[j] = h
                if reset_kind is HardReset:
                    state[c + j] = hard_reset(h, s, v_reset)
                else:
                    state[c + j] = soft_reset(h, s, v_threshold)


cdef inline void _recompute_chunk(reset_kind rk, const real[:, ::1] x, const real[::1] v0,
                                  real* state, real* scratch, int mode, real v_threshold,
                                  real v_reset, real reciprocal_tau, Py_ssize_t lo,
                                  Py_ssize_t hi) noexcept nogil:
    """_recompute_h of neurons [lo, hi), specialised on the charge ``mode``."""
    if mode == CHARGE_IF:
        _recompute_h(<IFCharge>0, rk, x, v0, state, scratch, v_threshold, v_reset,
                     reciprocal_tau, lo, hi)
    elif mode == CHARGE_LIF:
        _recompute_h(<LIFCharge>0, rk, x, v0, state, scratch, v_threshold, v_reset,
                     reciprocal_tau, lo, hi)
    else:
        _recompute_h(<LIFDetachInputCharge>0, rk, x, v0, state, scratch, v_threshold, v_reset,
                     reciprocal_tau, lo, hi)


cdef void _from_input_chunk(reset_kind rk,
                            const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                            const real[:, ::1] x, const real[::1] v0, real* scratch,
                            real[:, ::1] grad_x, real[::1] grad_v, double* grad_tau,
                            bint learn_tau, int mode, int detach_reset, int sg_index,
                            real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                            Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    """Neurons [lo, hi): H of every step recomputed into ``scratch`` (the potential kept in
    the grad_v row, free until the BPTT starts), then BPTT from it, with the sums for a
    learnable 1/tau when ``learn_tau``; specialised on the reset."""
    _recompute_chunk(rk, x, v0, &grad_v[0], scratch, mode, v_threshold, v_reset,
                     reciprocal_tau, lo, hi)
    if learn_tau:
        _backward_plif_block(grad_spike, grad_v_last, scratch, hi - lo, lo, v0, grad_x, grad_v,
                             grad_tau, mode, reset_kind is HardReset, detach_reset, sg_index,
                             v_threshold, v_reset, reciprocal_tau, alpha, lo, hi, stream)
    else:
        _backward_from_h(rk, grad_spike, grad_v_last, <const real*>scratch, hi - lo, lo,
                         grad_x, grad_v, detach_reset, sg_index, v_threshold, v_reset, alpha,
                         charge_grad_x(mode, reciprocal_tau), charge_grad_v(mode, reciprocal_tau),
                         lo, hi, stream)


cdef int _from_input_blocks(const real[:, ::1] grad_spike, const real[::1] grad_v_next,
                            const real[:, ::1] x, const real[::1] v, real[:, ::1] grad_x,
                            real[::1] grad_v, double* grad_tau, bint learn_tau, int mode,
                            bint hard, bint detach_reset, int sg_index, real v_threshold,
                            real v_reset, real reciprocal_tau, real alpha,
                            int n_threads) except -1:
    """The blocks of a backward from the input, each with its own scratch for the recomputed
    H of one chunk of neurons (at most CHUNK, fewer for long sequences) at a time."""
    cdef Py_ssize_t steps = grad_spike.shape[0], n = grad_spike.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t width = _recompute_width(steps, sizeof(real))
    cdef Py_ssize_t b, lo, hi, c, end
    cdef int stream = _should_stream(steps * n * <Py_ssize_t>sizeof(real))
    cdef int failed = 0
    cdef real* scratch
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        scratch = <real*>malloc(max(steps * width, 1) * sizeof(real))
        if scratch == NULL:
            failed += 1
        else:
            c = lo
            while c < hi:
                end = min(c + width, hi)
                if hard:
                    _from_input_chunk(<HardReset>0, grad_spike, grad_v_next, x, v, scratch,
                                      grad_x, grad_v, grad_tau, learn_tau, mode, detach_reset,
                                      sg_index, v_threshold, v_reset, reciprocal_tau, alpha, c,
                                      end, stream)
                else:
                    _from_input_chunk(<SoftReset>0, grad_spike, grad_v_next, x, v, scratch,
                                      grad_x, grad_v, grad_tau, learn_tau, mode, detach_reset,
                                      sg_index, v_threshold, v_reset, reciprocal_tau, alpha, c,
                                      end, stream)
                c = end
            free(scratch)
    if failed:
        raise MemoryError("no memory for the recomputed H of a block of neurons")
    return 0


cdef inline Py_ssize_t _recompute_width(Py_ssize_t steps, size_t item) noexcept nogil:
    """Neurons per chunk of the backward from the input: as many as CHUNK, but few enough that
    their recomputed H (steps x width values) stays within SCRATCH_BYTES, in L1; at least 16."""
    cdef Py_ssize_t width = SCRATCH_BYTES // (max(steps, 1) * <Py_ssize_t>item) // 16 * 16
    if width < 16:
        return 16
    return width if width < CHUNK else CHUNK


def backward_from_input(const real[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t]
                        const real[::1] grad_v_next,     # IN  [N] dL/dV[T-1], or [0]: zero
                        const real[:, ::1] x,            # IN  [T, N] the forward's input
                        const real[::1] v,               # IN  [N] V[-1], or [0]: at rest
                        real[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
                        real[::1] grad_v,                # OUT [N] dL/dV[-1]
                        int mode, bint hard, bint detach_reset, int sg_index,
                        double v_threshold, double v_reset, double reciprocal_tau, double alpha,
                        int n_threads):
    """BPTT from the forward's input instead of a saved H: each chunk of neurons (at most
    CHUNK, fewer for long sequences) first runs the forward recursion again from ``x`` and
    ``v``, keeping its H in a scratch buffer that stays in L1, then backpropagates from it
    exactly as :func:`backward` does from a saved H. The gradients are bit-identical to that
    route; the forward pass need not write H. Faster inside a training step for tensors that
    fit in cache; slower than :func:`backward` on large ones, whose rows it cannot stream."""
    _check_threads(n_threads)
    _from_input_blocks(grad_spike, grad_v_next, x, v, grad_x, grad_v, NULL, False, mode, hard,
                       detach_reset, sg_index, <real>v_threshold, <real>v_reset,
                       <real>reciprocal_tau, <real>alpha, n_threads)


# --- learnable time constant (ParametricLIF) ----------------------------------------------------
cdef void _backward_plif_rows(charge_kind ck, reset_kind rk,
                              const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                              const real* h_base, Py_ssize_t h_stride, Py_ssize_t h_first,
                              const real[::1] v0,
                              real[:, ::1] grad_x, real[::1] grad_v, double* grad_tau,
                              int detach_reset, int sg_index, real v_threshold, real v_reset,
                              real reciprocal_tau, real alpha,
                              Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    """BPTT from H that also sums dL/dH[t] * dH[t]/d(1/tau) over time for each neuron,
    specialised on charge and reset, in chunks like _backward_from_h (H addressed as there:
    the saved H, or a block's H recomputed into scratch memory). V[t-1] is rebuilt from H[t-1]
    exactly as the forward pass computed it (V[-1] = v0), a chunk at a time."""
    cdef Py_ssize_t t, j, k, c, m, last = grad_spike.shape[0] - 1
    cdef int mode = _mode(ck)
    cdef int hard = reset_kind is HardReset
    cdef real dh_dx = charge_grad_x(mode, reciprocal_tau)
    cdef real dh_dv = charge_grad_v(mode, reciprocal_tau)
    cdef real v_rest = v_reset if reset_kind is HardReset else <real>0
    cdef real h, h_prev, sg, grad_h
    cdef const real* gs_row
    cdef const real* h_row
    cdef const real* h_prev_row
    cdef const real* gv_in
    cdef real* gx_dst
    cdef real* gv_dst
    cdef real sg_buf[CHUNK]
    cdef real vp_buf[CHUNK]
    cdef real gx_buf[CHUNK]
    cdef real gv_buf[CHUNK]
    cdef bint no_carry = _start_state(&grad_v[0], grad_v_last, 0, grad_spike.shape[0] == 0,
                                      lo, hi)
    cdef bint at_rest = v0.shape[0] == 0
    for j in range(lo, hi):
        grad_tau[j] = 0
    for t in range(last, -1, -1):
        for k in range((hi - lo + CHUNK - 1) // CHUNK):
            c = lo + k * CHUNK
            m = _chunk_len(c, hi)
            gs_row = &grad_spike[t, c]
            h_row = h_base + t * h_stride + (c - h_first)
            _prefetch_ahead(gs_row, sizeof(real), c, m, hi)
            _prefetch_ahead(h_row, sizeof(real), c, m, hi)
            gv_in = &grad_v_last[c] if t == last and not no_carry else &grad_v[c]
            gx_dst = &gx_buf[0] if stream else &grad_x[t, c]
            gv_dst = &gv_buf[0] if stream and t == 0 else &grad_v[c]
            _surrogate_row(sg_index, h_row, sg_buf, v_threshold, alpha, m)
            if t > 0:  # V[t-1] from H[t-1]
                h_prev_row = h_row - h_stride
                for j in range(m):
                    h_prev = h_prev_row[j]
                    if reset_kind is HardReset:
                        vp_buf[j] = hard_reset(h_prev, fire(h_prev, v_threshold), v_reset)
                    else:
                        vp_buf[j] = soft_reset(h_prev, fire(h_prev, v_threshold), v_threshold)
            else:
                for j in range(m):
                    vp_buf[j] = v_rest if at_rest else v0[c + j]
            for j in range(m):
                h = h_row[j]
                sg = sg_buf[j]
                grad_h = _grad_h(hard, detach_reset, gs_row[j], gv_in[j], h, sg, v_threshold,
                                 v_reset)
                grad_tau[c + j] += grad_h * charge_grad_tau(mode, h, vp_buf[j], v_rest,
                                                            reciprocal_tau)
                gx_dst[j] = grad_h * dh_dx
                gv_dst[j] = grad_h * dh_dv
            if stream:
                _stream_grad_chunk(grad_x, grad_v, gx_buf, gv_buf, t, c, m)
    if stream:
        sc_store_fence()


cdef void _backward_plif_block(const real[:, ::1] grad_spike, const real[::1] grad_v_last,
                               const real* h_base, Py_ssize_t h_stride, Py_ssize_t h_first,
                               const real[::1] v0,
                               real[:, ::1] grad_x, real[::1] grad_v, double* grad_tau,
                               int mode, int hard, int detach_reset, int sg_index,
                               real v_threshold, real v_reset, real reciprocal_tau, real alpha,
                               Py_ssize_t lo, Py_ssize_t hi, int stream) noexcept nogil:
    """_backward_plif_rows specialised on the charge ``mode`` and the reset."""
    if mode == CHARGE_IF and hard:
        _backward_plif_rows(<IFCharge>0, <HardReset>0, grad_spike, grad_v_last, h_base,
                            h_stride, h_first, v0, grad_x, grad_v, grad_tau, detach_reset,
                            sg_index, v_threshold, v_reset, reciprocal_tau, alpha, lo, hi,
                            stream)
    elif mode == CHARGE_IF:
        _backward_plif_rows(<IFCharge>0, <SoftReset>0, grad_spike, grad_v_last, h_base,
                            h_stride, h_first, v0, grad_x, grad_v, grad_tau, detach_reset,
                            sg_index, v_threshold, v_reset, reciprocal_tau, alpha, lo, hi,
                            stream)
    elif mode == CHARGE_LIF and hard:
        _backward_plif_rows(<LIFCharge>0, <HardReset>0, grad_spike, grad_v_last, h_base,
                            h_stride, h_first, v0, grad_x, grad_v, grad_tau, detach_reset,
                            sg_index, v_threshold, v_reset, reciprocal_tau, alpha, lo, hi,
                            stream)
    elif mode == CHARGE_LIF:
        _backward_plif_rows(<LIFCharge>0, <SoftReset>0, grad_spike, grad_v_last, h_base,
                            h_stride, h_first, v0, grad_x, grad_v, grad_tau, detach_reset,
                            sg_index, v_threshold, v_reset, reciprocal_tau, alpha, lo, hi,
                            stream)
    elif hard:
        _backward_plif_rows(<LIFDetachInputCharge>0, <HardReset>0, grad_spike, grad_v_last,
                            h_base, h_stride, h_first, v0, grad_x, grad_v, grad_tau,
                            detach_reset, sg_index, v_threshold, v_reset, reciprocal_tau, alpha,
                            lo, hi, stream)
    else:
        _backward_plif_rows(<LIFDetachInputCharge>0, <SoftReset>0, grad_spike, grad_v_last,
                            h_base, h_stride, h_first, v0, grad_x, grad_v, grad_tau,
                            detach_reset, sg_index, v_threshold, v_reset, reciprocal_tau, alpha,
                            lo, hi, stream)


cdef inline double _lane_sum(const double* a, Py_ssize_t count) noexcept nogil:
    """a[0] + ... + a[count - 1] in an order fixed by ``count`` alone: term i goes into running
    sum i % SUM_LANES, and the lanes are then added pairwise. A plain loop would chain every
    add on the one before (its latency, not its throughput, would set the pace); the lanes are
    independent, so they fill whole vectors of doubles."""
    cdef double lanes[SUM_LANES]
    cdef Py_ssize_t k, width, i = 0
    for k in range(SUM_LANES):
        lanes[k] = 0
    while i + SUM_LANES <= count:
        for k in range(SUM_LANES):
            lanes[k] += a[i + k]
        i = i + SUM_LANES
    for k in range(count - i):
        lanes[k] += a[i + k]
    width = SUM_LANES // 2
    while width > 0:
        for k in range(width):
            lanes[k] += lanes[k + width]
        width = width // 2
    return lanes[0]


cdef inline double* _sums(double[::1] grad_tau) noexcept nogil:
    """The per-neuron sums' memory (NULL for no neurons)."""
    return &grad_tau[0] if grad_tau.shape[0] != 0 else NULL


cdef double _neuron_total(double[::1] grad_tau, int n_threads) except? -1.0:
    """The sum of the per-neuron values ``grad_tau``, in an order that depends on N alone:
    segments of SUM_SEGMENT neurons summed in parallel (each in SUM_LANES lanes), then the
    segment sums the same way. Bit-identical for any thread count."""
    cdef Py_ssize_t n = grad_tau.shape[0], n_segments = (n + SUM_SEGMENT - 1) // SUM_SEGMENT
    cdef Py_ssize_t b, lo, hi
    cdef double total
    cdef double* segment_sums
    if n == 0:
        return 0.0
    segment_sums = <double*>malloc(n_segments * sizeof(double))
    if segment_sums == NULL:
        raise MemoryError("no memory for the segment sums of dL/d(1/tau)")
    for b in prange(n_segments, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * SUM_SEGMENT
        hi = lo + SUM_SEGMENT
        if hi > n:
            hi = n
        segment_sums[b] = _lane_sum(&grad_tau[lo], hi - lo)
    total = _lane_sum(segment_sums, n_segments)
    free(segment_sums)
    return total


def backward_plif(const real[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t]
                  const real[::1] grad_v_next,     # IN  [N] dL/dV[T-1], or [0]: zero
                  const real[:, ::1] h_seq,        # IN  [T, N] saved H
                  const real[::1] v,               # IN  [N] V[-1], the potential before step 0,
                                                   #     or [0]: at rest
                  real[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
                  real[::1] grad_v,                # OUT [N] dL/dV[-1]
                  double[::1] grad_tau,            # OUT [N] per-neuron sum over t (scratch)
                  int mode, bint hard, bint detach_reset, int sg_index,
                  double v_threshold, double v_reset, double reciprocal_tau, double alpha,
                  int n_threads):
    """BPTT from saved H for a learnable 1/tau; returns dL/d(1/tau) summed over neurons and time.

    Each neuron sums its own terms over time (no shared accumulator, so no race); the neuron
    sums are then added in an order that depends on N alone (see _neuron_total), so the result
    is bit-identical for any thread count."""
    _check_threads(n_threads)
    cdef Py_ssize_t n = grad_spike.shape[1]
    cdef Py_ssize_t blk = _block_size(n, n_threads)
    cdef Py_ssize_t n_blocks = (n + blk - 1) // blk
    cdef Py_ssize_t b, lo, hi
    cdef int stream = _should_stream(grad_spike.shape[0] * n * <Py_ssize_t>sizeof(real))
    cdef const real* h_base = &h_seq[0, 0] if h_seq.shape[0] != 0 else NULL
    cdef double* sums = _sums(grad_tau)
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        _backward_plif_block(grad_spike, grad_v_next, h_base, n, 0, v, grad_x, grad_v,
                             sums, mode, hard, detach_reset, sg_index, <real>v_threshold,
                             <real>v_reset, <real>reciprocal_tau, <real>alpha, lo, hi, stream)
    return _neuron_total(grad_tau, n_threads)


def backward_plif_from_input(const real[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t]
                             const real[::1] grad_v_next,     # IN  [N] dL/dV[T-1], or [0]: zero
                             const real[:, ::1] x,            # IN  [T, N] the forward's input
                             const real[::1] v,               # IN  [N] V[-1], or [0]: at rest
                             real[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
                             real[::1] grad_v,                # OUT [N] dL/dV[-1]
                             double[::1] grad_tau,            # OUT [N] per-neuron sums
                             int mode, bint hard, bint detach_reset, int sg_index,
                             double v_threshold, double v_reset, double reciprocal_tau,
                             double alpha, int n_threads):
    """:func:`backward_plif` from the forward's input instead of a saved H, as
    :func:`backward_from_input` is to :func:`backward`: each chunk of neurons recomputes its H
    into an L1 scratch buffer and backpropagates from it with the same code. Same bits as
    :func:`backward_plif` from the forward's H, dL/d(1/tau) included."""
    _check_threads(n_threads)
    _from_input_blocks(grad_spike, grad_v_next, x, v, grad_x, grad_v, _sums(grad_tau), True,
                       mode, hard, detach_reset, sg_index, <real>v_threshold, <real>v_reset,
                       <real>reciprocal_tau, <real>alpha, n_threads)
    return _neuron_total(grad_tau, n_threads)


# --- bandwidth probe ----------------------------------------------------------------------------
def copy_bytes(const unsigned char[::1] src, unsigned char[::1] dst, bint stream, int n_threads):
    """Copy ``src`` into ``dst`` through the kernels' store path (streaming or not), split over
    threads like the kernels. The benchmarks time it to measure the memory floor."""
    _check_threads(n_threads)
    cdef Py_ssize_t n = src.shape[0]
    cdef Py_ssize_t blk = 1 << 20
    cdef Py_ssize_t b, lo, hi
    if dst.shape[0] != n:
        raise ValueError(f"dst must have {n} bytes like src, got {dst.shape[0]}")
    for b in prange((n + blk - 1) // blk, nogil=True, schedule='static', num_threads=n_threads):
        lo = b * blk
        hi = lo + blk
        if hi > n:
            hi = n
        sc_store_chunk(&dst[lo], &src[lo], hi - lo, stream)
        sc_store_fence()


# --- 16-bit tensors: float32 kernels on rows converted in cache --------------------------------
# float16 and bfloat16 tensors arrive as their 16-bit patterns. Each thread takes a block of
# HALF_WIDTH neurons and walks time in tiles of TILE steps: it widens the tile's input rows into
# float32 scratch rows that stay in its cache, runs the float32 kernel of the block on them
# (the state carried from tile to tile in float32), and narrows the tile's outputs back
# (include/spikecore_half.h), streaming them out like the float32 kernels do. Memory then holds
# only the 16-bit tensors and the float32 H. Widening is exact and narrowing rounds as PyTorch
# does, so the results are the bits of a float32 call on the widened tensors, narrowed after.
ctypedef unsigned short Bits16


cdef float[:, :, ::1] _scratch(Py_ssize_t workers, Py_ssize_t rows, Py_ssize_t pad):
    """Per-thread float32 scratch rows: ``[workers, rows, HALF_WIDTH + pad]``, of which the
    kernels use the first HALF_WIDTH columns at most. Each scratch array gets its own ``pad``
    (floats), so that rows read and written together are not a multiple of 4 KiB apart (loads
    and stores at the same address modulo 4 KiB stall each other)."""
    return cvarray(shape=(workers, rows, HALF_WIDTH + pad), itemsize=sizeof(float), format="f")


cdef Bits16[:, ::1] _scratch16(Py_ssize_t workers):
    """Per-thread rows of 16-bit patterns, ``[workers, HALF_WIDTH]``: a narrowed row on its
    way out."""
    return cvarray(shape=(workers, HALF_WIDTH), itemsize=sizeof(Bits16), format="H")


cdef inline Py_ssize_t _half_block(Py_ssize_t c, Py_ssize_t n, const Bits16[::1] state,
                                    float* dst, bint is_f16) noexcept nogil:
    """The number of neurons of the block that starts at neuron ``c`` (of ``n``); the block's
    part of the 16-bit ``state`` row (absent: ``[0]``) is widened into ``dst`` first."""
    cdef Py_ssize_t w = n - c if n - c < HALF_WIDTH else HALF_WIDTH
    if state.shape[0] != 0:
        half_row_to_float(&state[c], dst, w, is_f16)
    return w


cdef inline void _widen_rows(const Bits16* src, Py_ssize_t src_stride, Py_ssize_t ahead,
                             float[:, ::1] dst, Py_ssize_t rows, Py_ssize_t w,
                             bint is_f16) noexcept nogil:
    """dst[u, :w] = widen(src[u * src_stride : ... + w]) for u < rows, prefetching the row
    ``ahead`` rows further on (negative: back; 0: none): each row segment is its own run of
    pages, where the hardware prefetcher stops."""
    cdef Py_ssize_t u
    for u in range(rows):
        if ahead:
            sc_prefetch(src + (u + ahead) * src_stride, w * sizeof(Bits16))
        half_row_to_float(src + u * src_stride, &dst[u, 0], w, is_f16)


cdef inline void _narrow_rows(const float[:, ::1] src, Bits16* row, Bits16* dst,
                              Py_ssize_t dst_stride, Py_ssize_t rows, Py_ssize_t w, bint is_f16,
                              int stream) noexcept nogil:
    """dst[u * dst_stride : ... + w] = narrow(src[u, :w]) for u < rows, through ``row``."""
    cdef Py_ssize_t u
    for u in range(rows):
        float_row_to_half(&src[u, 0], row, w, is_f16)
        sc_store_chunk(dst + u * dst_stride, row, w * sizeof(Bits16), stream)


def forward_half(const Bits16[:, ::1] x,     # IN  [T, N] input current (16-bit patterns)
                 const Bits16[::1] v,        # IN  [N] potential before the first step, or [0]
                 Bits16[:, ::1] spike,       # OUT [T, N] spikes
                 Bits16[::1] v_next,         # OUT [N] potential after the last step
                 float[:, ::1] h_seq,        # OUT [T, N] H in float32, or [0, N]
                 bint is_f16,                # float16 (else bfloat16) patterns
                 int mode, bint hard, bint detach_reset, int sg_index,
                 double v_threshold, double v_reset, double reciprocal_tau, double alpha,
                 int n_threads):
    """:func:`forward` (training or inference) for float16/bfloat16 tensors, computed in
    float32 a tile of rows at a time."""
    _check_threads(n_threads)
    cdef Py_ssize_t steps = x.shape[0], n = x.shape[1]
    cdef Py_ssize_t n_blocks = (n + HALF_WIDTH - 1) // HALF_WIDTH
    cdef Py_ssize_t workers = n_threads if n_threads < n_blocks else n_blocks
    cdef bint save_h = h_seq.shape[0] != 0, given = v.shape[0] != 0
    if n == 0:
        return
    cdef float[:, :, ::1] xs = _scratch(workers, TILE, 16)
    cdef float[:, :, ::1] ss = _scratch(workers, TILE, 48)
    cdef float[:, :, ::1] hs = _scratch(workers, TILE, 80)
    cdef float[:, :, ::1] vs = _scratch(workers, 2, 112)   # the state, in and out by turns
    cdef Bits16[:, ::1] row = _scratch16(workers)
    cdef int stream = _should_stream(steps * n * <Py_ssize_t>sizeof(float))
    cdef Py_ssize_t b, c, w, t, t0, k
    cdef int tid, cur
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=workers):
        tid = threadid()
        c = b * HALF_WIDTH
        w = _half_block(c, n, v, &vs[tid, 0, 0], is_f16)
        cur = 0
        t0 = 0
        while True:   # (runs once for zero steps: the state passes through)
            k = steps - t0 if steps - t0 < TILE else TILE
            if k > 0:
                _widen_rows(&x[t0, c], n, TILE if t0 + k + TILE <= steps else 0, xs[tid], k,
                            w, is_f16)
            _forward_block(xs[tid, :k], vs[tid, cur, :w] if given or t0 > 0 else vs[tid, cur, :0],
                           ss[tid, :k], vs[tid, 1 - cur], hs[tid, :k] if save_h else hs[tid, :0],
                           ss[tid, :0], ss[tid, :0], ss[tid, :0], mode, hard, detach_reset,
                           sg_index, <float>v_threshold, <float>v_reset, <float>reciprocal_tau,
                           <float>alpha, 0, w, 0)
            cur = 1 - cur
            if k > 0:
                _narrow_rows(ss[tid], &row[tid, 0], &spike[t0, c], n, k, w, is_f16, stream)
                if save_h:
                    for t in range(k):
                        sc_store_chunk(&h_seq[t0 + t, c], &hs[tid, t, 0], w * sizeof(float),
                                       stream)
            t0 = t0 + k
            if t0 >= steps:
                break
        float_row_to_half(&vs[tid, cur, 0], &v_next[c], w, is_f16)
        if stream:
            sc_store_fence()


def backward_half(const Bits16[:, ::1] grad_spike,   # IN  [T, N] dL/dS[t] (16-bit patterns)
                  const Bits16[::1] grad_v_next,     # IN  [N] dL/dV[T-1], or [0]: zero
                  const float[:, ::1] h_seq,         # IN  [T, N] saved H in float32
                  Bits16[:, ::1] grad_x,             # OUT [T, N] dL/dX[t]
                  Bits16[::1] grad_v,                # OUT [N] dL/dV[-1]
                  bint is_f16,
                  int mode, bint hard, bint detach_reset, int sg_index,
                  double v_threshold, double v_reset, double reciprocal_tau, double alpha,
                  int n_threads):
    """:func:`backward` from a float32 H for float16/bfloat16 gradients, computed in float32 a
    tile of rows at a time, from the last step back."""
    _check_threads(n_threads)
    cdef Py_ssize_t steps = grad_spike.shape[0], n = grad_spike.shape[1]
    cdef Py_ssize_t n_blocks = (n + HALF_WIDTH - 1) // HALF_WIDTH
    cdef Py_ssize_t workers = n_threads if n_threads < n_blocks else n_blocks
    cdef bint given = grad_v_next.shape[0] != 0
    cdef float dh_dx = charge_grad_x(mode, <float>reciprocal_tau)
    cdef float dh_dv = charge_grad_v(mode, <float>reciprocal_tau)
    if n == 0:
        return
    cdef float[:, :, ::1] gs = _scratch(workers, TILE, 16)
    cdef float[:, :, ::1] gx = _scratch(workers, TILE, 48)
    cdef float[:, :, ::1] gv = _scratch(workers, 2, 112)   # the carried dL/dV, by turns
    cdef Bits16[:, ::1] row = _scratch16(workers)
    cdef int stream = _should_stream(steps * n * <Py_ssize_t>sizeof(Bits16))
    cdef const float* h_base = &h_seq[0, 0] if steps > 0 else NULL
    cdef Py_ssize_t b, c, w, t, t0, t1, k
    cdef int tid, cur
    for b in prange(n_blocks, nogil=True, schedule='static', num_threads=workers):
        tid = threadid()
        c = b * HALF_WIDTH
        w = _half_block(c, n, grad_v_next, &gv[tid, 0, 0], is_f16)
        cur = 0
        t1 = steps
        while True:   # tiles from the last step back (once for zero steps)
            k = t1 if t1 < TILE else TILE
            t0 = t1 - k
            if k > 0:
                _widen_rows(&grad_spike[t0, c], n, -TILE if t0 >= TILE else 0, gs[tid], k, w,
                            is_f16)   # (prefetching the next tile back)
            if hard:
                _backward_from_h(<HardReset>0, gs[tid, :k],
                                 gv[tid, cur, :w] if given or t1 < steps else gv[tid, cur, :0],
                                 h_base + t0 * n + c if k > 0 else NULL, n, 0, gx[tid, :k],
                                 gv[tid, 1 - cur], detach_reset, sg_index, <float>v_threshold,
                                 <float>v_reset, <float>alpha, dh_dx, dh_dv, 0, w, 0)
            else:
                _backward_from_h(<SoftReset>0, gs[tid, :k],
                                 gv[tid, cur, :w] if given or t1 < steps else gv[tid, cur, :0],
                                 h_base + t0 * n + c if k > 0 else NULL, n, 0, gx[tid, :k],
                                 gv[tid, 1 - cur], detach_reset, sg_index, <float>v_threshold,
                                 <float>v_reset, <float>alpha, dh_dx, dh_dv, 0, w, 0)
            cur = 1 - cur
            if k > 0:
                _narrow_rows(gx[tid], &row[tid, 0], &grad_x[t0, c], n, k, w, is_f16, stream)
            t1 = t0
            if t1 <= 0:
                break
        float_row_to_half(&gv[tid, cur, 0], &grad_v[c], w, is_f16)
        if stream:
            sc_store_fence()


def half_to_float(const Bits16[::1] src, float[::1] dst, bint is_f16):
    """``dst[:] = src`` widened from float16/bfloat16 patterns (the kernels' conversion)."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError(f"dst must have {src.shape[0]} elements like src, got {dst.shape[0]}")
    if src.shape[0]:
        half_row_to_float(&src[0], &dst[0], src.shape[0], is_f16)


def float_to_half(const float[::1] src, Bits16[::1] dst, bint is_f16):
    """``dst[:] = src`` narrowed to float16/bfloat16 patterns (the kernels' conversion)."""
    if dst.shape[0] != src.shape[0]:
        raise ValueError(f"dst must have {src.shape[0]} elements like src, got {dst.shape[0]}")
    if src.shape[0]:
        float_row_to_half(&src[0], &dst[0], src.shape[0], is_f16)
