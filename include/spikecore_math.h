/*
 * spikecore_math.h -- the scalar math of one neuron-step, shared by every compiled backend.
 *
 * Design
 * ------
 * Both the Cython/OpenMP CPU kernels (pyx/) and the CUDA kernels (cuda/) include this header, so
 * the formulas for charge, fire, reset and the surrogate derivatives exist exactly once in
 * compiled code. spikecore/reference.py is the same contract written with PyTorch ops; the
 * tests hold the two together.
 *
 * Charge, fire and reset are written in the same operation order as the reference, and the
 * kernels are compiled without floating-point contraction (-ffp-contract=off / --fmad=false) and
 * without fast-math, so the forward pass (H, S, V) is bit-identical to PyTorch's own arithmetic.
 * The surrogate derivatives are algebraically the reference's, with their own constants and
 * exp (sc_expf), so gradients agree within rounding rather than bit for bit. Hard
 * reset is computed literally as S*V_r + (1-S)*H (not as a select) so that NaN and Inf propagate
 * exactly as in the reference.
 *
 * Everything is a function template over the floating type T (float or double; the CUDA kernels
 * load half types and compute in float). Functions are `static inline` on the host and
 * `__host__ __device__` under nvcc.
 */
#ifndef SPIKECORE_MATH_H
#define SPIKECORE_MATH_H

#include <math.h>
#include <string.h>

#if defined(__CUDACC__)
#define SC_FN __host__ __device__ __forceinline__
#else
#define SC_FN static inline
#endif

namespace spikecore {

/* How H[t] is formed from X[t] and V[t-1] (docs: "Neuron models"). */
enum ChargeMode {
    CHARGE_IF = 0,               /* H = V + X                          */
    CHARGE_LIF = 1,              /* H = V + (X - (V - V_r)) / tau      */
    CHARGE_LIF_DETACH_INPUT = 2  /* H = V + X - (V - V_r) / tau        */
};

/* Surrogate indices; the order is part of the public API. */
enum SurrogateIndex {
    SG_ATAN = 0,
    SG_SIGMOID = 1,
    SG_PIECEWISE_QUADRATIC = 2,
    SG_SOFTSIGN = 3,
    SG_ERF = 4,
    SG_SUPERSPIKE = 5,
    SG_PIECEWISE_EXP = 6,
    SG_COUNT = 7
};

/* exp for float, written with arithmetic and selects only, so that a loop calling it vectorises
 * (a call to the C library's expf cannot) and every backend computes the same bits. Cephes'
 * method: x = n ln2 + r with |r| <= ln2/2 (n rounded by the 1.5 * 2^23 trick, ln2 split in two
 * so that n * ln2_hi is exact), exp(r) by a degree-6 minimax polynomial, 2^n built in the
 * exponent field. Error within 1 ulp of exp rounded to float, for every input with a normal
 * result (tests/native/check_exp.cpp checks them all); results below 2^-126 flush to 0;
 * +inf / -inf / NaN give +inf / 0 / NaN. */
SC_FN float sc_expf(float x) {
    const float lo = -87.33654f, hi = 88.72283f;        /* exp(lo) = 2^-126, exp(hi) ~ FLT_MAX */
    const int nan = x != x;
    const float xc = nan ? 0.0f : (x < lo ? lo : (x > hi ? hi : x));
    const float shifter = 12582912.0f;                  /* 1.5 * 2^23: rounds to an integer */
    const float n = (xc * 1.44269504088896341f + shifter) - shifter;
    const float r = (xc - n * 0.693359375f) - n * -2.12194440e-4f;
    const float z = r * r;
    const float p = ((((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r
                       + 4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f) * z
                     + r) + 1.0f;
    const int ni = (int)n;                              /* in [-126, 128] */
    const int top = ni > 127;                           /* 2^128 is not a float: 2^127 * 2 */
    const unsigned int bits = (unsigned int)((top ? 127 : ni) + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    const float y = p * scale * (top ? 2.0f : 1.0f);
    return nan ? x : (x < lo ? 0.0f : (x > hi ? HUGE_VALF : y));
}

SC_FN float sc_exp(float x) { return sc_expf(x); }
SC_FN double sc_exp(double x) { return exp(x); }
SC_FN float sc_abs(float x) { return fabsf(x); }
SC_FN double sc_abs(double x) { return fabs(x); }

/* Charge: the potential after integrating the input, before firing. v_reset is 0 under soft
 * reset (the caller passes 0). reciprocal_tau is ignored by the IF neuron. */
template <typename T>
SC_FN T charge(int mode, T x, T v, T v_reset, T reciprocal_tau) {
    if (mode == CHARGE_IF) return v + x;
    if (mode == CHARGE_LIF) return v + (x - (v - v_reset)) * reciprocal_tau;
    return v + x - (v - v_reset) * reciprocal_tau;
}

/* dH/dX and dH/dV[t-1]: constants of the neuron model. */
template <typename T>
SC_FN T charge_grad_x(int mode, T reciprocal_tau) {
    return mode == CHARGE_LIF ? reciprocal_tau : (T)1;
}
template <typename T>
SC_FN T charge_grad_v(int mode, T reciprocal_tau) {
    return mode == CHARGE_IF ? (T)1 : (T)1 - reciprocal_tau;
}

/* dH/d(1/tau) for a learnable time constant (ParametricLIF), from the saved H and V[t-1]:
 * LIF: H - V = (X - (V - V_r))/tau, so dH/d(1/tau) = X - (V - V_r) = (H - V) * tau;
 * LIF with detach_input: dH/d(1/tau) = -(V - V_r). Zero for IF. */
template <typename T>
SC_FN T charge_grad_tau(int mode, T h, T v, T v_reset, T reciprocal_tau) {
    if (mode == CHARGE_LIF) return (h - v) / reciprocal_tau;
    if (mode == CHARGE_LIF_DETACH_INPUT) return -(v - v_reset);
    return (T)0;
}

/* Fire: Heaviside step with Theta(0) = 1. */
template <typename T>
SC_FN T fire(T h, T v_threshold) {
    return h >= v_threshold ? (T)1 : (T)0;
}

/* Reset. */
template <typename T>
SC_FN T hard_reset(T h, T s, T v_reset) {
    return s * v_reset + ((T)1 - s) * h;
}
template <typename T>
SC_FN T soft_reset(T h, T s, T v_threshold) {
    return h - s * v_threshold;
}

/* The neighbouring 16-bit float above (up) or below a value, on sign-magnitude bits (valid for
 * float16 and bfloat16 alike). Written with selects only, so that loops over it vectorise. */
SC_FN unsigned short next16(unsigned short b, int up) {
    const unsigned int u = b;
    const int neg = (u & 0x8000u) != 0;
    const unsigned int away = u + 1u;                 /* larger magnitude, same sign */
    const unsigned int toward = u - 1u;               /* smaller magnitude, same sign */
    const unsigned int past_zero = neg ? 0x0001u : 0x8001u;   /* from +-0 to the other side */
    const int at_zero = (u & 0x7fffu) == 0;
    const int grow = up ? !neg : neg;                 /* moving away from zero? */
    return (unsigned short)(grow ? away : (at_zero ? past_zero : toward));
}

/* float <-> bfloat16 bits, round to nearest even (NaN stays NaN). */
SC_FN unsigned short bf16_from_float(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    const unsigned int rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const unsigned int quiet_nan = (u >> 16) | 0x40u;
    return (unsigned short)((u & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
}
SC_FN float bf16_to_float(unsigned short b) {
    const unsigned int u = (unsigned int)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* A finite h whose 16-bit rounding q overflowed to infinity, as the largest finite value of
 * its sign instead (inf_bits: the format's +infinity, whose predecessor is that value). A
 * stored H of inf would turn the backward's (V_r - H) * g' into inf * 0 = NaN where the float
 * H gives a finite gradient; the spike rule below may still move it to inf, when only inf
 * keeps S (a threshold above the format's range). */
SC_FN unsigned short finite16(unsigned short q, unsigned short inf_bits, float h) {
    const int overflowed = (q & 0x7fffu) == inf_bits && h - h == 0.0f;   /* h finite */
    return overflowed ? (unsigned short)((q & 0x8000u) | (inf_bits - 1u)) : q;
}

/* H kept in bfloat16 on the same side of the threshold as the H that decided the spike S, so
 * that a backward pass recomputing S from the stored H finds the same spike (a one-ulp nudge
 * where rounding would cross the threshold); finite where H is (finite16). */
SC_FN unsigned short bf16_keep_spike(float h, float s, float v_threshold) {
    const unsigned short q = finite16(bf16_from_float(h), 0x7f80u, h);
    const int fired = s != 0.0f;
    const int crossed = (bf16_to_float(q) >= v_threshold) != fired;
    return crossed ? next16(q, fired) : q;
}

/* a / b in the surrogate derivatives, whose denominators are at least 1. A CUDA build with
 * SPIKECORE_CUDA_FAST_DIV (a launch-shape variant for benchmarks/cuda_variants.py, off in the
 * package) divides in float with __fdividef: a reciprocal and a multiply, without the range
 * checks of the full-range division, which such denominators never need. Everywhere else it is
 * the plain division. */
template <typename T>
SC_FN T sc_div(T a, T b) {
#if defined(__CUDA_ARCH__) && defined(SPIKECORE_CUDA_FAST_DIV) && SPIKECORE_CUDA_FAST_DIV
    if constexpr (sizeof(T) == sizeof(float)) return __fdividef(a, b);
#endif
    return a / b;
}

/* Surrogate derivative g'(x; alpha), x = H - V_threshold. */
template <typename T>
SC_FN T surrogate_grad(int index, T x, T alpha) {
    const T half = (T)0.5;
    const T one = (T)1;
    switch (index) {
    case SG_ATAN: {
        const T z = (T)1.5707963267948966 * alpha * x;
        return sc_div(alpha * half, one + z * z);
    }
    case SG_SIGMOID: {
        const T sig = sc_div(one, one + sc_exp(-alpha * x));
        return alpha * sig * (one - sig);
    }
    case SG_PIECEWISE_QUADRATIC: {
        const T y = alpha - alpha * alpha * sc_abs(x);
        return y < (T)0 ? (T)0 : y;   /* written so that a NaN x gives NaN, as elsewhere */
    }
    case SG_SOFTSIGN: {
        const T d = one + alpha * sc_abs(x);
        return sc_div(alpha, (T)2 * d * d);
    }
    case SG_ERF: {
        const T z = alpha * x;
        return alpha * (T)0.5641895835477563 * sc_exp(-z * z); /* 1/sqrt(pi) */
    }
    case SG_SUPERSPIKE: {
        const T d = one + alpha * sc_abs(x);
        return sc_div(one, d * d);
    }
    default: /* SG_PIECEWISE_EXP */
        return alpha * half * sc_exp(-alpha * sc_abs(x));
    }
}

/* dV[t]/dH[t] given S and the surrogate value sg. hard != 0 selects hard reset. */
template <typename T>
SC_FN T reset_grad(int hard, int detach_reset, T h, T s, T sg, T v_threshold, T v_reset) {
    if (hard) {
        if (detach_reset) return (T)1 - s;
        return (T)1 - s + (v_reset - h) * sg;
    }
    if (detach_reset) return (T)1;
    return (T)1 - v_threshold * sg;
}

}  // namespace spikecore

#endif  /* SPIKECORE_MATH_H */
