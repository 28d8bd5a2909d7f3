/*
 * cuda_bf16.h (host emulation; see cuda_runtime.h here) -- __nv_bfloat16 as its 16 bits. The
 * conversions are the ones of include/spikecore_math.h (round to nearest even), which the CPU
 * kernels use and the tests check against PyTorch's own bfloat16 conversion.
 */
#ifndef SC_HOST_CUDA_BF16_H
#define SC_HOST_CUDA_BF16_H

#include "cuda_runtime.h"
#include "spikecore_math.h"

struct __nv_bfloat16 { unsigned short bits; };   /* the value's bit pattern */

inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 h) { return h.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return __nv_bfloat16{b}; }
inline float __bfloat162float(__nv_bfloat16 h) { return spikecore::bf16_to_float(h.bits); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    return __nv_bfloat16{spikecore::bf16_from_float(f)};
}

#endif /* SC_HOST_CUDA_BF16_H */
