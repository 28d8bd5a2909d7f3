/*
 * spikecore_stream.h -- how the CPU kernels write their large outputs.
 *
 * Design
 * ------
 * A kernel output such as S, the saved H or dL/dX is written once and read again only much
 * later (the next layer, the backward pass). A plain store first reads the destination cache
 * line into the cache ("read for ownership"), so every output byte costs a read and a write of
 * memory bandwidth. Non-temporal ("streaming") stores write whole cache lines straight to memory
 * without that read. That pays when the output would leave the cache before it is read anyway:
 * a copy through them reached 25-45% more bandwidth than a plain copy on the development
 * machine, while a layer small enough to stay in the last-level cache between calls ran slower
 * with them (benchmarks/RESULTS.md, "Where streaming stores pay"), hence a size threshold.
 *
 * The compiler does not emit streaming stores from plain C loops, so the kernels compute a short
 * chunk of a row into a small buffer that stays in L1 (the vectorised loop writes there) and
 * hand that chunk to sc_store_chunk, which moves it to its destination with the widest
 * streaming store the build's instruction set has (AVX-512, AVX, SSE2) or with memcpy when
 * streaming is off or unavailable. The bytes written are the same either way; only the route
 * to memory differs, so results do not depend on it.
 *
 * Streaming stores are weakly ordered: a thread calls sc_store_fence() after its last one,
 * before other threads (or the caller) may read what it wrote.
 *
 * For small outputs that the next operation reads straight from cache, streaming would push
 * them out to memory for nothing; the kernels decide per call from the output size.
 */
#ifndef SPIKECORE_STREAM_H
#define SPIKECORE_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#define SC_STREAM_AVAILABLE 1
#else
#define SC_STREAM_AVAILABLE 0
#endif

namespace spikecore {

#if defined(__AVX512F__)
enum { SC_STREAM_WIDTH = 64 };
static inline void sc_stream_line(char* dst, const char* src) {
    _mm512_stream_si512((__m512i*)dst, _mm512_loadu_si512((const void*)src));
}
#elif defined(__AVX__)
enum { SC_STREAM_WIDTH = 32 };
static inline void sc_stream_line(char* dst, const char* src) {
    _mm256_stream_si256((__m256i*)dst, _mm256_loadu_si256((const __m256i*)src));
}
#elif defined(__SSE2__)
enum { SC_STREAM_WIDTH = 16 };
static inline void sc_stream_line(char* dst, const char* src) {
    _mm_stream_si128((__m128i*)dst, _mm_loadu_si128((const __m128i*)src));
}
#endif

/* Copy n bytes from src (a chunk buffer) to dst, streaming when `stream` is non-zero. The
 * unaligned head and tail of dst go through memcpy, the aligned middle through streaming
 * stores. */
static inline void sc_store_chunk(void* dst, const void* src, size_t n, int stream) {
#if SC_STREAM_AVAILABLE
    if (stream) {
        char* d = (char*)dst;
        const char* s = (const char*)src;
        size_t head = (size_t)(-(uintptr_t)d) & (SC_STREAM_WIDTH - 1);
        if (head) {
            if (head > n) head = n;
            memcpy(d, s, head);
            d += head;
            s += head;
            n -= head;
        }
        for (; n >= SC_STREAM_WIDTH; n -= SC_STREAM_WIDTH, d += SC_STREAM_WIDTH,
                                     s += SC_STREAM_WIDTH)
            sc_stream_line(d, s);
        if (n) memcpy(d, s, n);
        return;
    }
#endif
    (void)stream;
    memcpy(dst, src, n);
}

/* Ask for the cache lines of [p, p + n) ahead of use. Each kernel reads its rows in segments of
 * a few dozen KiB, and the hardware prefetcher stops at every 4 KiB page; prefetching a few KiB
 * ahead in software keeps memory busy across those page boundaries. */
static inline void sc_prefetch(const void* p, size_t n) {
    const char* c = (const char*)p;
    for (size_t off = 0; off < n; off += 64) __builtin_prefetch(c + off, 0, 3);
}

/* Make this thread's streaming stores visible before anyone else reads them. */
static inline void sc_store_fence(void) {
#if SC_STREAM_AVAILABLE
    _mm_sfence();
#endif
}

}  // namespace spikecore

#endif  /* SPIKECORE_STREAM_H */
