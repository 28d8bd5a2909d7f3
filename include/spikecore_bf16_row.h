/* spikecore: a row of float32 H stored as bfloat16 bits (CPU kernels only).
 *
 * Design. The forward kernel can keep H for the backward in bfloat16 (half the memory). Each
 * value is rounded to nearest even and, where rounding would carry it across the threshold,
 * nudged back by one unit (bf16_keep_spike in spikecore_math.h, the one definition of the
 * result). Written per element with integer selects, that rule made the forward with
 * bfloat16 H slower than with float32 H, although it writes less.
 *
 * Where the build targets AVX512-BF16, bf16_keep_spike_row rounds sixteen values with one
 * vcvtneps2bf16 and checks the threshold on the rounded values, and hands a group of sixteen
 * to the scalar rule whenever that instruction could differ from it or a nudge is due:
 *   - subnormal inputs (the instruction treats them as zero; the scalar rule keeps them),
 *   - NaN (the scalar rule's quiet NaN is the one that counts),
 *   - any lane whose rounded value lies on the other side of the threshold than its spike.
 * Every other finite float rounds the same way under both (round to nearest even; bfloat16
 * has float32's exponent range, so a normal input never becomes subnormal). The result is the
 * same bits as bf16_keep_spike on every input, with or without AVX512-BF16; only the speed
 * differs. Other builds run the scalar rule, which the compiler vectorises.
 */
#ifndef SPIKECORE_BF16_ROW_H
#define SPIKECORE_BF16_ROW_H

#include <stddef.h>

#include "spikecore_math.h"

#if defined(__AVX512BF16__) && defined(__AVX512F__)
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
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i largest_subnormal = _mm512_set1_epi32(0x007fffff);
    const __m512i infinity = _mm512_set1_epi32(0x7f800000);
    const __m512 zero = _mm512_setzero_ps();
    const __m512 threshold = _mm512_set1_ps(v_threshold);
    for (; j + 16 <= n; j += 16) {
        const __m512 hv = _mm512_loadu_ps(h + j);
        const __m512i mag = _mm512_and_si512(_mm512_castps_si512(hv), magnitude);
        /* mag - 1 < 0x007fffff (unsigned): a nonzero subnormal; mag > infinity: NaN */
        const __mmask16 odd = _mm512_cmplt_epu32_mask(_mm512_sub_epi32(mag, one),
                                                      largest_subnormal)
                              | _mm512_cmpgt_epu32_mask(mag, infinity);
        const __m256i q = (__m256i)_mm512_cvtneps_pbh(hv);
        /* (zero-masked forms with every lane set: GCC 12 warns about the undefined source
         * register of the unmasked ones) */
        const __mmask16 all = (__mmask16)0xffff;
        const __m512 back = _mm512_castsi512_ps(
            _mm512_maskz_slli_epi32(all, _mm512_maskz_cvtepu16_epi32(all, q), 16));
        /* as the scalar rule: fired = s != 0 (unordered: NaN counts as fired); the rounded
         * value fires when back >= threshold (ordered: NaN does not) */
        const __mmask16 fired = _mm512_cmp_ps_mask(_mm512_loadu_ps(s + j), zero, _CMP_NEQ_UQ);
        const __mmask16 fires = _mm512_cmp_ps_mask(back, threshold, _CMP_GE_OQ);
        if (odd | (__mmask16)(fired ^ fires))
            bf16_keep_spike_scalar_row(h + j, s + j, dst + j, 16, v_threshold);
        else
            _mm256_storeu_si256((__m256i*)(dst + j), q);
    }
#endif
    bf16_keep_spike_scalar_row(h + j, s + j, dst + j, n - j, v_threshold);
}

}  // namespace spikecore

#endif  /* SPIKECORE_BF16_ROW_H */
