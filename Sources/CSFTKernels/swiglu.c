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
