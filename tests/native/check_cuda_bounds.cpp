// Memory safety of the CUDA kernels, checked on the host (see cuda_host/cuda_runtime.h).
//
// Built by tests/test_cuda_emulation.py with AddressSanitizer and UBSan around the host build of
// cuda/neuron_kernels.cu (the rewritten file, included below). Every buffer is a separate
// allocation of exactly its size, so a read or a write one element past any of them stops the
// program, as an illegal address stops a GPU kernel; UBSan's alignment check stops a 16-byte
// access through a pointer that is not 16-byte aligned, which a GPU would refuse too. Each
// kernel runs for three dtypes, neuron counts that allow 16-byte groups and ones that do not,
// step counts around the unroll, aligned and misaligned buffers, given and absent states, and
// every surrogate on the backward from H.
//
//   g++ -std=c++17 -O1 -ffp-contract=off -fsanitize=address,undefined -fno-sanitize-recover=all \
//       -I tests/native/cuda_host -I cuda -I include -I BUILD -DKERNELS='"neuron_kernels_host.cpp"' \
//       tests/native/check_cuda_bounds.cpp -o check_cuda_bounds && ./check_cuda_bounds
//
// Prints the number of kernel calls made and exits 0; a CUDA error code exits 1.
#include KERNELS

#include <stdlib.h>

namespace {

const size_t ELEM[3] = {sizeof(float), sizeof(__half), sizeof(__nv_bfloat16)};

/* A buffer of exactly `count` elements; `shift` moves it one element off its allocation's
 * 16-byte alignment (the allocation then holds one more element in front, never behind). */
struct Buffer {
    char *base = nullptr;
    char *data = nullptr;
    Buffer(size_t count, size_t elem, bool shift) {
        base = (char *)malloc((count + (shift ? 1 : 0)) * elem + (count ? 0 : 1));
        data = base + (shift ? elem : 0);
    }
    ~Buffer() { free(base); }
    Buffer(const Buffer &) = delete;
    Buffer &operator=(const Buffer &) = delete;
};

void fill(Buffer &b, size_t count, int dtype, float lo, float hi, unsigned &seed) {
    for (size_t i = 0; i < count; ++i) {
        seed = seed * 1664525u + 1013904223u;
        const float value = lo + (hi - lo) * (float)(seed >> 8) / 16777216.0f;
        if (dtype == SC_FLOAT32)
            ((float *)b.data)[i] = value;
        else if (dtype == SC_FLOAT16)
            ((__half *)b.data)[i] = __float2half_rn(value);
        else
            ((__nv_bfloat16 *)b.data)[i] = __float2bfloat16_rn(value);
    }
}

long long calls = 0;
char err[256];

void check(int rc, const char *what) {
    ++calls;
    if (rc != 0) {
        fprintf(stderr, "%s failed: %s\n", what, err);
        exit(1);
    }
}

void run(int dtype, long long n, long long steps, bool shift, bool given_state, int surrogate) {
    const size_t elem = ELEM[dtype], seq = (size_t)(steps * n);
    Buffer x(seq, elem, shift), v(n, elem, shift), spike(seq, elem, shift),
        v_next(n, elem, shift), h(seq, elem, shift), v_seq(seq, elem, shift),
        gs2h(seq, elem, shift), gv2h(seq, elem, shift), gs(seq, elem, shift),
        gv(n, elem, shift), gx(seq, elem, shift), gv_out(n, elem, shift);
    Buffer tau(n, sizeof(float), shift);
    unsigned seed = 12345u + (unsigned)(n * 7 + steps);
    fill(x, seq, dtype, -0.2f, 1.4f, seed);
    fill(v, n, dtype, -0.2f, 0.9f, seed);
    fill(gs, seq, dtype, -1.0f, 1.0f, seed);
    fill(gv, n, dtype, -1.0f, 1.0f, seed);
    sc_params p{1, 1, 0, surrogate, 1.0f, 0.0f, 0.5f, 2.0f};   // LIF, hard reset to 0
    const void *v0 = given_state ? v.data : nullptr, *gv_next = given_state ? gv.data : nullptr;
    check(sc_cuda_forward(dtype, x.data, v0, spike.data, v_next.data, h.data, v_seq.data,
                          gs2h.data, gv2h.data, steps, n, p, 0, nullptr, err, sizeof err),
          "forward");
    check(sc_cuda_forward(dtype, x.data, v0, spike.data, v_next.data, nullptr, nullptr,
                          nullptr, nullptr, steps, n, p, 0, nullptr, err, sizeof err),
          "forward (spikes and V only)");
    check(sc_cuda_backward(dtype, gs.data, gv_next, h.data, nullptr, nullptr, gx.data,
                           gv_out.data, steps, n, p, 0, nullptr, err, sizeof err),
          "backward from H");
    check(sc_cuda_backward(dtype, gs.data, gv_next, nullptr, gs2h.data, gv2h.data, gx.data,
                           gv_out.data, steps, n, p, 0, nullptr, err, sizeof err),
          "backward from stored gradients");
    check(sc_cuda_backward_plif(dtype, gs.data, gv_next, h.data, v0, gx.data, gv_out.data,
                                (float *)tau.data, steps, n, p, 0, nullptr, err, sizeof err),
          "learnable-1/tau backward");
}

}  // namespace

int main() {
    sc_host_reset(1, 0);
    const long long counts[] = {1, 3, 8, 37, 40, 1029, 4096};
    const long long step_counts[] = {1, 3, 4, 5, 9};
    for (int dtype = 0; dtype < 3; ++dtype)
        for (long long n : counts)
            for (long long steps : step_counts)
                for (int shift = 0; shift < 2; ++shift)
                    for (int given = 0; given < 2; ++given)
                        run(dtype, n, steps, shift, given, (int)((n + steps) % 7));
    for (int dtype = 0; dtype < 3; ++dtype)   // every surrogate's own backward kernel
        for (int surrogate = 0; surrogate < spikecore::SG_COUNT; ++surrogate)
            run(dtype, 40, 5, false, true, surrogate);
    printf("checked %lld kernel calls\n", calls);
    return 0;
}
