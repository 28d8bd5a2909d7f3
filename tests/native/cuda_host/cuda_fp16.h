/*
 * cuda_fp16.h (host emulation; see cuda_runtime.h here) -- __half as its 16 bits, with the
 * conversions the kernels use: IEEE binary16, round to nearest even, as on the GPU.
 */
#ifndef SC_HOST_CUDA_FP16_H
#define SC_HOST_CUDA_FP16_H

#include "cuda_runtime.h"

struct __half { unsigned short bits; };   /* the value's bit pattern */

inline unsigned short __half_as_ushort(__half h) { return h.bits; }
inline __half __ushort_as_half(unsigned short b) { return __half{b}; }

inline float __half2float(__half h) {
    const uint32_t sign = (uint32_t)(h.bits & 0x8000u) << 16;
    const uint32_t exponent = (h.bits >> 10) & 0x1fu, mantissa = h.bits & 0x3ffu;
    if (exponent == 0) {                                  /* zero or subnormal: m * 2^-24 */
        const float magnitude = ldexpf((float)mantissa, -24);
        return sign ? -magnitude : magnitude;
    }
    const uint32_t bits = sign | (exponent == 31 ? 0x7f800000u | (mantissa << 13)
                                                 : ((exponent + 112u) << 23) | (mantissa << 13));
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

inline __half __float2half_rn(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    const unsigned short sign = (unsigned short)((u >> 16) & 0x8000u);
    const uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return __half{(unsigned short)(sign | 0x7e00u | ((a >> 13) & 0x3ffu))};
    if (a >= 0x477ff000u) return __half{(unsigned short)(sign | 0x7c00u)};  /* >= 65520: inf */
    if (a < 0x38800000u) {
        /* below 2^-14, a half subnormal: adding 0.5 leaves the value in units of 2^-24 in the
         * low mantissa bits, rounded to nearest even by the float addition itself */
        float magnitude;
        memcpy(&magnitude, &a, sizeof magnitude);
        magnitude += 0.5f;
        uint32_t r;
        memcpy(&r, &magnitude, sizeof r);
        return __half{(unsigned short)(sign | (r - 0x3f000000u))};
    }
    /* normal: rebias the exponent (127 -> 15) and round the 13 dropped bits to nearest even */
    const uint32_t odd = (a >> 13) & 1u;
    return __half{(unsigned short)(sign | ((a - (112u << 23) + 0xfffu + odd) >> 13))};
}

#endif /* SC_HOST_CUDA_FP16_H */
