// Elementwise CPU kernels: fill, add, axpy, scale, mul, sum of squares, dtype casts (bf16, f16)
// and dropout. Plain loops that the compiler vectorizes per instruction set (cpu.h).
// The Swift side splits long arrays into per-core chunks; these take a pointer and a count.
#include "cpu.h"

SFT_INLINE void sft_fill_f32_impl(float *y, float value, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = value;
}
SFT_DISPATCH_VOID(sft_fill_f32, (float *y, float value, int64_t n), (y, value, n))

SFT_INLINE void sft_add_f32_impl(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}
SFT_DISPATCH_VOID(sft_add_f32, (const float *a, const float *b, float *y, int64_t n), (a, b, y, n))

// The residual add of mixed precision: y (f32) = a (f32) + b (bf16, widened exactly).
SFT_INLINE void sft_add_f32_bf16_impl(const float *a, const uint16_t *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + sft_bf16_load(b[i]);
}
SFT_DISPATCH_VOID(sft_add_f32_bf16, (const float *a, const uint16_t *b, float *y, int64_t n), (a, b, y, n))

SFT_INLINE void sft_axpy_f32_impl(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}
SFT_DISPATCH_VOID(sft_axpy_f32, (float alpha, const float *x, float *y, int64_t n), (alpha, x, y, n))

SFT_INLINE void sft_scale_f32_impl(float alpha, const float *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = alpha * x[i];
}
SFT_DISPATCH_VOID(sft_scale_f32, (float alpha, const float *x, float *y, int64_t n), (alpha, x, y, n))

SFT_INLINE void sft_mul_f32_impl(const float *a, const float *b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = a[i] * b[i];
}
SFT_DISPATCH_VOID(sft_mul_f32, (const float *a, const float *b, float *y, int64_t n), (a, b, y, n))

SFT_INLINE double sft_sumsq_f32_impl(const float *x, int64_t n) {
    // Accumulate in double: gradient norms over 100M+ elements lose digits in f32.
#pragma clang fp reassociate(on)
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * (double)x[i];
    return s;
}
SFT_DISPATCH(double, sft_sumsq_f32, (const float *x, int64_t n), (x, n))

// ---------------------------------------------------------------------------------------------
// bf16: the top 16 bits of an f32. Rounding to nearest even adds 0x7fff plus the lowest kept
// bit before truncating; NaN is kept a (quiet) NaN instead of rounding into infinity.
// ---------------------------------------------------------------------------------------------

SFT_INLINE void sft_bf16_to_f32_impl(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u = (uint32_t)x[i] << 16;
        memcpy(&y[i], &u, 4);
    }
}
SFT_DISPATCH_VOID(sft_bf16_to_f32, (const uint16_t *x, float *y, int64_t n), (x, y, n))

SFT_INLINE void sft_f32_to_bf16_impl(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t nan = (u >> 16) | 0x40u;
        y[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
    }
}
SFT_DISPATCH_VOID(sft_f32_to_bf16, (const float *x, uint16_t *y, int64_t n), (x, y, n))

// ---------------------------------------------------------------------------------------------
// f16 (IEEE binary16: 1 sign, 5 exponent, 10 mantissa bits). The generic path converts with
// integer arithmetic (readable reference); AVX2/AVX-512 use the F16C instructions, which do
// the same rounding (to nearest even) in hardware.
// ---------------------------------------------------------------------------------------------

/// binary16 bits -> f32, exact (every f16 is an f32).
static inline float f16_bits_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);          // inf, NaN (payload kept)
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);   // normal: rebias 15 -> 127
    } else if (man == 0) {
        u = sign;                                        // +-0
    } else {
        // Subnormal f16 = man * 2^-24: exact in f32, normalize by converting the integer.
        float f = (float)man * 5.9604644775390625e-08f;
        memcpy(&u, &f, 4);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/// f32 -> binary16 bits, rounding to nearest even; overflow gives inf, NaN stays NaN.
static inline uint16_t f32_to_f16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u | (uint16_t)((a >> 13) & 0x3ffu);  // NaN
    if (a >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf (or is inf)
    if (a < 0x38800000u) {
        // Below the smallest normal f16 (2^-14): result is subnormal or zero, a multiple of
        // 2^-24. Adding 0.5 (=2^-1) aligns the f32 mantissa so its low bits are that multiple,
        // and the FPU's own round-to-nearest-even does the rounding.
        float g;
        memcpy(&g, &a, 4);
        g += 0.5f;
        uint32_t v;
        memcpy(&v, &g, 4);
        return sign | (uint16_t)(v - 0x3f000000u);
    }
    // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
    uint32_t odd = (a >> 13) & 1u;
    a += ((uint32_t)(15 - 127) << 23) + 0xfffu + odd;
    return sign | (uint16_t)(a >> 13);
}

static void f16_to_f32_generic(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f16_bits_to_f32(x[i]);
}
static void f32_to_f16_generic(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16_bits(x[i]);
}

#if SFT_HAS_VARIANTS
SFT_TARGET_AVX2 static void f16_to_f32_f16c(const uint16_t *x, float *y, int64_t n) {
    const _Float16 *h = (const _Float16 *)x;
    for (int64_t i = 0; i < n; i++) y[i] = (float)h[i];
}
SFT_TARGET_AVX2 static void f32_to_f16_f16c(const float *x, uint16_t *y, int64_t n) {
    _Float16 *h = (_Float16 *)y;
    for (int64_t i = 0; i < n; i++) h[i] = (_Float16)x[i];
}
#endif

void sft_f16_to_f32(const uint16_t *x, float *y, int64_t n) {
#if SFT_HAS_VARIANTS
    if (sft_isa_level() >= 1) { f16_to_f32_f16c(x, y, n); return; }
#endif
    f16_to_f32_generic(x, y, n);
}

void sft_f32_to_f16(const float *x, uint16_t *y, int64_t n) {
#if SFT_HAS_VARIANTS
    if (sft_isa_level() >= 1) { f32_to_f16_f16c(x, y, n); return; }
#endif
    f32_to_f16_generic(x, y, n);
}

// ---------------------------------------------------------------------------------------------
// Dropout. The keep decision for element i is a pure function of (seed, offset + i), so every
// backend (and every chunking of the array) draws the same mask, and the backward pass is the
// same call applied to dy. The hash is two rounds of a 32-bit integer mixer:
//   c = offset + i;  h = mix(lo32(c) ^ lo32(seed));  h = mix(h ^ hi32(c) ^ hi32(seed))
//   mix(x): x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16
//   keep  <=>  (h >> 8) * 2^-24 >= p
// ---------------------------------------------------------------------------------------------

SFT_INLINE uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

SFT_INLINE void sft_dropout_f32_impl(const float *x, float *y, uint8_t *mask, int64_t n,
                                     float p, uint64_t seed, uint64_t offset) {
    const uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    for (int64_t i = 0; i < n; i++) {
        uint64_t c = offset + (uint64_t)i;
        uint32_t h = mix32((uint32_t)c ^ k0);
        h = mix32(h ^ (uint32_t)(c >> 32) ^ k1);
        float u = (float)(h >> 8) * 5.9604644775390625e-08f;   // 2^-24
        int keep = u >= p;
        y[i] = keep ? x[i] * keep_scale : 0.0f;
        if (mask) mask[i] = (uint8_t)keep;
    }
}
SFT_DISPATCH_VOID(sft_dropout_f32,
                  (const float *x, float *y, uint8_t *mask, int64_t n, float p, uint64_t seed,
                   uint64_t offset),
                  (x, y, mask, n, p, seed, offset))
