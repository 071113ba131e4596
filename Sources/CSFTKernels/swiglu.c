// SwiGLU (Shazeer 2020, "GLU Variants Improve Transformer") as in the Llama MLP:
// h = silu(g) * u with silu(g) = g * sigmoid(g). Forward and backward over n elements.
#include "cpu.h"

SFT_INLINE void sft_swiglu_fwd_f32_impl(const float *restrict g, const float *restrict u,
                                        float *restrict h, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + sft_expf(-g[i]));
        h[i] = g[i] * sig * u[i];
    }
}
SFT_DISPATCH_VOID(sft_swiglu_fwd_f32, (const float *g, const float *u, float *h, int64_t n),
                  (g, u, h, n))

// d silu(g)/dg = sig (1 + g (1 - sig));  dg = dh u silu'(g);  du = dh silu(g)
SFT_INLINE void sft_swiglu_bwd_f32_impl(const float *restrict dh, const float *restrict g,
                                        const float *restrict u, float *restrict dg,
                                        float *restrict du, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float sig = 1.0f / (1.0f + sft_expf(-g[i]));
        float silu = g[i] * sig;
        dg[i] = dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
        du[i] = dh[i] * silu;
    }
}
SFT_DISPATCH_VOID(sft_swiglu_bwd_f32,
                  (const float *dh, const float *g, const float *u, float *dg, float *du,
                   int64_t n),
                  (dh, g, u, dg, du, n))

// bf16 activations (mixed precision): gate and up are read as bf16 and widened, the math is
// the f32 kernel's above on a stack chunk, and h is rounded to bf16 (nearest even). Backward
// reads bf16 gate and up with an f32 dh and writes f32 gradients.
SFT_INLINE void sft_swiglu_fwd_bf16_impl(const uint16_t *restrict g, const uint16_t *restrict u,
                                         uint16_t *restrict h, int64_t n) {
    float gf[SFT_BF16_CHUNK], uf[SFT_BF16_CHUNK], hf[SFT_BF16_CHUNK];
    for (int64_t s = 0; s < n; s += SFT_BF16_CHUNK) {
        const int64_t m = n - s < SFT_BF16_CHUNK ? n - s : SFT_BF16_CHUNK;
        sft_bf16_widen(g + s, gf, m);
        sft_bf16_widen(u + s, uf, m);
        sft_swiglu_fwd_f32_impl(gf, uf, hf, m);
        sft_bf16_narrow(hf, h + s, m);
    }
}
SFT_DISPATCH_VOID(sft_swiglu_fwd_bf16, (const uint16_t *g, const uint16_t *u, uint16_t *h, int64_t n),
                  (g, u, h, n))

SFT_INLINE void sft_swiglu_bwd_bf16_impl(const float *restrict dh, const uint16_t *restrict g,
                                         const uint16_t *restrict u, float *restrict dg,
                                         float *restrict du, int64_t n) {
    float gf[SFT_BF16_CHUNK], uf[SFT_BF16_CHUNK];
    for (int64_t s = 0; s < n; s += SFT_BF16_CHUNK) {
        const int64_t m = n - s < SFT_BF16_CHUNK ? n - s : SFT_BF16_CHUNK;
        sft_bf16_widen(g + s, gf, m);
        sft_bf16_widen(u + s, uf, m);
        sft_swiglu_bwd_f32_impl(dh + s, gf, uf, dg + s, du + s, m);
    }
}
SFT_DISPATCH_VOID(sft_swiglu_bwd_bf16,
                  (const float *dh, const uint16_t *g, const uint16_t *u, float *dg, float *du,
                   int64_t n),
                  (dh, g, u, dg, du, n))
