// cpu.h — private helpers for the CPU kernels: run-time ISA dispatch, a vectorizable exp, and
// the (part, nparts) work split. Not part of the public header.
//
// Dispatch: a kernel's math is written once, as a plain C function `NAME_impl` marked
// SFT_INLINE. SFT_DISPATCH compiles that body three times — for AVX-512, for AVX2+FMA and for
// baseline x86-64 (or whatever the target is) — and defines the public NAME, which calls the
// variant picked from cpuid at first use (see sft_isa_level in status.c). The generic variant
// is the readable reference of the math; the others differ only in what the vectorizer may use.
#ifndef SFT_CPU_H
#define SFT_CPU_H

#include "sftkernels.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#define SFT_INLINE static inline __attribute__((always_inline))
#define SFT_ARGS(...) __VA_ARGS__

/// 2 = AVX-512, 1 = AVX2+FMA, 0 = generic: detected once, lowered by sft_cpu_set_isa.
int sft_isa_level(void);

#if defined(__x86_64__) && defined(__clang__)
#define SFT_TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")))
#define SFT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define SFT_HAS_VARIANTS 1
#else
#define SFT_HAS_VARIANTS 0
#endif

#if SFT_HAS_VARIANTS
/// Defines `ret name params` dispatching to name_impl compiled per instruction set.
#define SFT_DISPATCH(ret, name, params, args)                                                  \
    SFT_TARGET_AVX512 static ret name##_avx512 params { return name##_impl args; }            \
    SFT_TARGET_AVX2 static ret name##_avx2 params { return name##_impl args; }                \
    static ret name##_generic params { return name##_impl args; }                             \
    ret name params {                                                                          \
        switch (sft_isa_level()) {                                                             \
        case 2: return name##_avx512 args;                                                     \
        case 1: return name##_avx2 args;                                                       \
        default: return name##_generic args;                                                   \
        }                                                                                      \
    }
/// The same for functions returning void.
#define SFT_DISPATCH_VOID(name, params, args)                                                  \
    SFT_TARGET_AVX512 static void name##_avx512 params { name##_impl args; }                  \
    SFT_TARGET_AVX2 static void name##_avx2 params { name##_impl args; }                      \
    static void name##_generic params { name##_impl args; }                                   \
    void name params {                                                                         \
        switch (sft_isa_level()) {                                                             \
        case 2: name##_avx512 args; break;                                                     \
        case 1: name##_avx2 args; break;                                                       \
        default: name##_generic args; break;                                                   \
        }                                                                                      \
    }
/// Like SFT_DISPATCH for kernels whose register tiling depends on the vector registers:
/// name_impl takes a leading `wide` flag, 1 with AVX-512 (32 registers of 16 floats), else 0.
#define SFT_DISPATCH_WIDE(ret, name, params, args)                                             \
    SFT_TARGET_AVX512 static ret name##_avx512 params { return name##_impl(1, SFT_ARGS args); } \
    SFT_TARGET_AVX2 static ret name##_avx2 params { return name##_impl(0, SFT_ARGS args); }     \
    static ret name##_generic params { return name##_impl(0, SFT_ARGS args); }                  \
    ret name params {                                                                          \
        switch (sft_isa_level()) {                                                             \
        case 2: return name##_avx512 args;                                                     \
        case 1: return name##_avx2 args;                                                       \
        default: return name##_generic args;                                                   \
        }                                                                                      \
    }
#else
#define SFT_DISPATCH(ret, name, params, args) ret name params { return name##_impl args; }
#define SFT_DISPATCH_WIDE(ret, name, params, args) \
    ret name params { return name##_impl(0, SFT_ARGS args); }
#define SFT_DISPATCH_VOID(name, params, args) void name params { name##_impl args; }
#endif

/// Rows [*lo, *hi) of n that part `part` of `nparts` owns (contiguous, sizes differ by <= 1).
SFT_INLINE void sft_split(int64_t n, int part, int nparts, int64_t *lo, int64_t *hi) {
    if (nparts < 1) nparts = 1;
    *lo = n * part / nparts;
    *hi = n * (part + 1) / nparts;
}

/// exp(x) in float, written so loops over it vectorize (no libm call, no branches):
/// x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor series to r^7 (error < 1e-8 relative),
/// 2^n built in the exponent bits. Inputs below -87.3 give 0, above 88.3 give e^88.3.
SFT_INLINE float sft_expf(float x) {
    const float hi = 88.3f, lo = -87.3f;
    float xc = x > hi ? hi : (x < lo ? lo : x);
    // Round x/ln2 to nearest with the 1.5 * 2^23 trick (exact for |n| < 2^22, branch free).
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693145751953125f;   // ln2 split in two so n*ln2 is exact
    r = r - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, 4);
    float y = p * scale;
    return x < lo ? 0.0f : y;
}

/// bf16 load and store for the kernels that read and write bf16 activations: a bf16 is the top
/// 16 bits of an f32; storing rounds to nearest even and keeps NaN a quiet NaN (as sft_f32_to_bf16).
SFT_INLINE float sft_bf16_load(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
SFT_INLINE uint16_t sft_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : rounded);
}
/// Chunk length of the bf16 kernels that widen a run of elements to f32 on the stack, run the
/// f32 math on it and round the results back.
enum { SFT_BF16_CHUNK = 256 };
SFT_INLINE void sft_bf16_widen(const uint16_t *x, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = sft_bf16_load(x[i]);
}
SFT_INLINE void sft_bf16_narrow(const float *x, uint16_t *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = sft_bf16_round(x[i]);
}

#endif // SFT_CPU_H
