/* spikecore: float16 and bfloat16 values as 16-bit patterns, to and from float32 (CPU kernels).
 *
 * The CPU kernels compute in float32. For float16/bfloat16 tensors they convert each block's
 * inputs into float32 scratch memory that stays in cache, run the float32 kernel on it, and
 * convert the outputs back (pyx/cpu_kernels.pyx, "16-bit tensors"). The conversions here are
 * the ones PyTorch's scalar code applies, so the results carry the same bits as casting the
 * whole tensors with `.float()` and `.to(dtype)` around a float32 call:
 *   - widening (16 -> 32 bits) is exact;
 *   - narrowing rounds to nearest, ties to even; a NaN becomes the quiet NaN 0x7FC0 (bfloat16)
 *     or keeps its sign with the quiet pattern 0x7E00 (float16); float16 overflows to infinity
 *     from 65520 on and has subnormals below 2^-14.
 * Plain integer and float operations, so the loops that call them vectorise; float16 rows use
 * the F16C instructions where the build has them.
 */
#ifndef SPIKECORE_HALF_H
#define SPIKECORE_HALF_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) && defined(__AVX__)
#include <immintrin.h>
#define SC_HALF_F16C 1   /* the float16 rows go through the F16C conversion instructions */
#else
#define SC_HALF_F16C 0
#endif

namespace spikecore {

static inline uint32_t sc_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float sc_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* bfloat16 is the upper half of a float32. */
static inline float bf16_bits_to_float(uint16_t b) { return sc_from_bits((uint32_t)b << 16); }

static inline uint16_t float_to_bf16_bits(float f) {
    const uint32_t u = sc_bits(f);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    /* add just under half of the dropped 16 bits, plus one when the kept part is odd */
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

/* float16: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
static inline float f16_bits_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    if (exponent == 0)   /* zero or subnormal: mantissa * 2^-24, exact in float32 */
        return sc_from_bits(sign | sc_bits((float)mantissa * 5.9604644775390625e-8f));
    if (exponent == 0x1F)   /* infinity or NaN */
        return sc_from_bits(sign | 0x7F800000u | (mantissa << 13));
    return sc_from_bits(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

static inline uint16_t float_to_f16_bits(float f) {
    const uint32_t u = sc_bits(f);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t magnitude = u & 0x7FFFFFFFu;
    if (magnitude > 0x7F800000u) return sign | 0x7E00;    /* NaN */
    if (magnitude >= 0x477FF000u) return sign | 0x7C00;   /* 65520 and up round to infinity */
    if (magnitude >= 0x38800000u) {                        /* normal: 2^-14 and up */
        const uint32_t rebiased = magnitude - 0x38000000u;  /* exponent bias 127 -> 15 */
        return sign | (uint16_t)((rebiased + 0xFFFu + ((rebiased >> 13) & 1u)) >> 13);
    }
    /* subnormal or zero: a count of 2^-24 units, rounded to nearest even (1024 is 2^-14) */
    return sign | (uint16_t)nearbyintf(sc_from_bits(magnitude) * 16777216.0f);
}

/* dst[j] = widen(src[j]) and dst[j] = narrow(src[j]) for 0 <= j < n. Where the build has
 * F16C, float16 rows convert eight values per instruction (the same rounding: to nearest,
 * ties to even; a NaN stays a NaN), the tail by the rules above. */
static inline void half_row_to_float(const uint16_t* src, float* dst, long n, int is_f16) {
    long j = 0;
    if (!is_f16) {
        for (; j < n; ++j) dst[j] = bf16_bits_to_float(src[j]);
        return;
    }
#if SC_HALF_F16C
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(src + j))));
#endif
    for (; j < n; ++j) dst[j] = f16_bits_to_float(src[j]);
}

static inline void float_row_to_half(const float* src, uint16_t* dst, long n, int is_f16) {
    long j = 0;
    if (!is_f16) {
        for (; j < n; ++j) dst[j] = float_to_bf16_bits(src[j]);
        return;
    }
#if SC_HALF_F16C
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i*)(dst + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
    for (; j < n; ++j) dst[j] = float_to_f16_bits(src[j]);
}

}  // namespace spikecore

#endif  /* SPIKECORE_HALF_H */
