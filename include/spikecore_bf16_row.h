/* spikecore: a row of float32 H stored as bfloat16 bits (CPU kernels only).
 *
 * Design. The forward kernel can keep H for the backward in bfloat16 (half the memory). Each
 * value is rounded to nearest even and, where rounding would carry it across the threshold,
 * nudged back by one unit (bf16_keep_spike in spikecore_math.h, the one definition of the
 * result). Written per element with integer selects, that rule made the forward with
 * bfloat16 H slower than with float32 H, although it writes less.
 *
 * Where the build targets AVX512-BF16 (with AVX512-BW/VL for the 16-bit lanes),
 * bf16_keep_spike_row rounds sixteen values with one vcvtneps2bf16, checks the threshold on
 * the rounded values and nudges the lanes that crossed it with masked 16-bit adds, as next16
 * does. A group of sixteen goes to the scalar rule only where the instruction could differ
 * from it:
 *   - subnormal inputs (the instruction treats them as zero; the scalar rule keeps them),
 *   - NaN (the scalar rule's quiet NaN is the one that counts),
 *   - values that round to infinity (the scalar rule keeps a finite H finite), and infinities.
 * Every other float rounds the same way under both (round to nearest even; bfloat16 has
 * float32's exponent range, so a normal input never becomes subnormal). The result is the
 * same bits as bf16_keep_spike on every input, with or without AVX512-BF16; only the speed
 * differs. (Nudges are rare, about one value in a thousand near a busy threshold, but they
 * touch a few groups in a hundred, and handing those to the scalar rule cost the forward
 * 5-10% of its time on large layers.) Other builds run the scalar rule, which the compiler
 * vectorises.
 */
#ifndef SPIKECORE_BF16_ROW_H
#define SPIKECORE_BF16_ROW_H

#include <stddef.h>

#include "spikecore_math.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && \
    defined(__AVX512VL__)
#include <immintrin.h>
#define SC_BF16_ROW_VECTOR 1
#else
#define SC_BF16_ROW_VECTOR 0
#endif

namespace spikecore {

static inline void bf16_keep_spike_scalar_row(const float* h, const float* s, unsigned short* dst,
                                              ptrdiff_t n, float v_threshold) {
    for (ptrdiff_t j = 0; j < n; ++j)
        dst[j] = bf16_keep_spike(h[j], s[j], v_threshold);
}

/* dst[j] = bf16_keep_spike(h[j], s[j], v_threshold) for 0 <= j < n. */
static inline void bf16_keep_spike_row(const float* h, const float* s, unsigned short* dst,
                                       ptrdiff_t n, float v_threshold) {
    ptrdiff_t j = 0;
#if SC_BF16_ROW_VECTOR
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i rounding = _mm512_set1_epi32(0x7fff);
    const __m512i upper = _mm512_set1_epi32((int)0xffff0000u);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 threshold = _mm512_set1_ps(v_threshold);
    const __m256i one16 = _mm256_set1_epi16(1);
    const __m256i sign16 = _mm256_set1_epi16((short)0x8000);
    const __m256i magnitude16 = _mm256_set1_epi16(0x7fff);
    const __m256i past_positive_zero = _mm256_set1_epi16((short)0x8001);   /* from +0 down */
    const __m256i past_negative_zero = _mm256_set1_epi16(0x0001);          /* from -0 up */
    /* (a zero-masked shift with every lane set: GCC 12 warns about the undefined source
     * register of the unmasked form) */
    const __mmask16 all = (__mmask16)0xffff;
    for (; j + 16 <= n; j += 16) {
        const __m512 hv = _mm512_loadu_ps(h + j);
        const __m256i q = (__m256i)_mm512_cvtneps_pbh(hv);
        /* the rounded value back in float32 with integer operations (round to nearest even on
         * the upper 16 bits, as bf16_from_float): a widening shuffle of q would load the port
         * that the compares and the conversion already keep busy, and that port limits this
         * loop */
        const __m512i u = _mm512_castps_si512(hv);
        const __m512i lsb = _mm512_and_si512(_mm512_maskz_srli_epi32(all, u, 16), one);
        const __m512 back = _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_add_epi32(_mm512_add_epi32(u, rounding), lsb), upper));
        /* for the scalar rule: nonzero subnormals and NaNs (quiet or signalling) in, or an
         * infinity out (an infinite H, or a finite one that rounding overflowed) */
        const __mmask16 odd = _mm512_fpclass_ps_mask(hv, 0x20 | 0x01 | 0x80) |
                              _mm512_fpclass_ps_mask(back, 0x08 | 0x10);
        /* as the scalar rule: fired = s != 0 (unordered: NaN counts as fired); the rounded
         * value fires when back >= threshold (ordered: NaN does not) */
        const __mmask16 fired = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), zero, _CMP_NEQ_UQ);
        const __mmask16 fires = _mm512_cmp_ps_mask(back, threshold, _CMP_GE_OQ);
        if (odd) {
            bf16_keep_spike_scalar_row(h + j, s + j, dst + j, 16, v_threshold);
            continue;
        }
        const __mmask16 crossed = fired ^ fires;
        __m256i out = q;
        if (crossed) {   /* next16(q, fired) on the crossed lanes */
            const __mmask16 neg = _mm256_test_epi16_mask(q, sign16);
            const __mmask16 at_zero = (__mmask16)~_mm256_test_epi16_mask(q, magnitude16);
            const __mmask16 grow = crossed & (fired ^ neg);      /* away from zero */
            const __mmask16 toward = crossed & (__mmask16)~(fired ^ neg);
            out = _mm256_mask_add_epi16(out, grow, q, one16);
            out = _mm256_mask_sub_epi16(out, toward & (__mmask16)~at_zero, q, one16);
            out = _mm256_mask_mov_epi16(out, toward & at_zero,   /* past zero to the other side */
                                        _mm256_mask_blend_epi16(neg, past_positive_zero,
                                                                past_negative_zero));
        }
        _mm256_storeu_si256((__m256i*)(dst + j), out);
    }
#endif
    bf16_keep_spike_scalar_row(h + j, s + j, dst + j, n - j, v_threshold);
}

}  // namespace spikecore

#endif  /* SPIKECORE_BF16_ROW_H */
