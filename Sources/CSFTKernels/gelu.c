// GELU (Hendrycks & Gimpel 2016) and GeGLU (Shazeer 2020): y = gelu(x), or y = gelu(x) * u with
// an `up` operand (Gemma's MLP). Two forms, as PyTorch names them:
//   exact ("none"):  gelu(x) = x Φ(x) = 0.5 x (1 + erf(x / √2))
//   tanh:            gelu(x) = 0.5 x (1 + tanh(k (x + 0.044715 x³))),  k = √(2/π)
// Derivatives:
//   exact: Φ(x) + x φ(x),  φ(x) = exp(-x²/2) / √(2π)
//   tanh:  0.5 (1 + t) + 0.5 x (1 - t²) k (1 + 3 · 0.044715 x²),  t = tanh(k (x + 0.044715 x³))
// Backward writes dx (and du when u is given): dx = dy u gelu'(x), du = dy gelu(x).
#include "cpu.h"

static const float GELU_K = 0.7978845608028654f;   // √(2/π)
static const float GELU_C = 0.044715f;
static const float INV_SQRT2 = 0.7071067811865476f;
static const float INV_SQRT_2PI = 0.3989422804014327f;

/// gelu(x) and gelu'(x) in one place, for both directions.
SFT_INLINE void gelu_and_slope(float x, int tanh_form, float *g, float *slope) {
    if (tanh_form) {
        const float t = tanhf(GELU_K * (x + GELU_C * x * x * x));
        *g = 0.5f * x * (1.0f + t);
        *slope = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * GELU_K * (1.0f + 3.0f * GELU_C * x * x);
    } else {
        const float cdf = 0.5f * (1.0f + erff(x * INV_SQRT2));
        *g = x * cdf;
        *slope = cdf + x * INV_SQRT_2PI * sft_expf(-0.5f * x * x);
    }
}

// The loops are written once per form (a constant tanh_form): with the test inside, a call
// that may set errno (tanhf, erff) keeps the compiler from splitting the loop itself.
SFT_INLINE void gelu_fwd_loop(const float *restrict x, const float *restrict u, float *restrict y,
                              int64_t n, int tanh_form) {
    for (int64_t i = 0; i < n; i++) {
        float g, s;
        gelu_and_slope(x[i], tanh_form, &g, &s);
        y[i] = u ? g * u[i] : g;
    }
}
SFT_INLINE void sft_gelu_fwd_f32_impl(const float *restrict x, const float *restrict u, float *restrict y,
                                      int64_t n, int tanh_form) {
    if (tanh_form) gelu_fwd_loop(x, u, y, n, 1);
    else gelu_fwd_loop(x, u, y, n, 0);
}
SFT_DISPATCH_VOID(sft_gelu_fwd_f32, (const float *x, const float *u, float *y, int64_t n, int tanh_form),
                  (x, u, y, n, tanh_form))

SFT_INLINE void gelu_bwd_loop(const float *restrict dy, const float *restrict x,
                              const float *restrict u, float *restrict dx, float *restrict du,
                              int64_t n, int tanh_form) {
    for (int64_t i = 0; i < n; i++) {
        float g, s;
        gelu_and_slope(x[i], tanh_form, &g, &s);
        dx[i] = dy[i] * (u ? u[i] : 1.0f) * s;
        if (u && du) du[i] = dy[i] * g;
    }
}
SFT_INLINE void sft_gelu_bwd_f32_impl(const float *restrict dy, const float *restrict x,
                                      const float *restrict u, float *restrict dx, float *restrict du,
                                      int64_t n, int tanh_form) {
    if (tanh_form) gelu_bwd_loop(dy, x, u, dx, du, n, 1);
    else gelu_bwd_loop(dy, x, u, dx, du, n, 0);
}
SFT_DISPATCH_VOID(sft_gelu_bwd_f32,
                  (const float *dy, const float *x, const float *u, float *dx, float *du, int64_t n,
                   int tanh_form),
                  (dy, x, u, dx, du, n, tanh_form))

// bf16 activations (mixed precision): x (and up) read as bf16 and widened on a stack chunk, the
// f32 math above, y rounded to bf16 (nearest even). Backward: f32 dy, bf16 x / up, f32 dx / du.
SFT_INLINE void sft_gelu_fwd_bf16_impl(const uint16_t *restrict x, const uint16_t *restrict u,
                                       uint16_t *restrict y, int64_t n, int tanh_form) {
    float xf[SFT_BF16_CHUNK], uf[SFT_BF16_CHUNK], yf[SFT_BF16_CHUNK];
    for (int64_t s = 0; s < n; s += SFT_BF16_CHUNK) {
        const int64_t m = n - s < SFT_BF16_CHUNK ? n - s : SFT_BF16_CHUNK;
        sft_bf16_widen(x + s, xf, m);
        if (u) sft_bf16_widen(u + s, uf, m);
        sft_gelu_fwd_f32_impl(xf, u ? uf : NULL, yf, m, tanh_form);
        sft_bf16_narrow(yf, y + s, m);
    }
}
SFT_DISPATCH_VOID(sft_gelu_fwd_bf16, (const uint16_t *x, const uint16_t *u, uint16_t *y, int64_t n, int tanh_form),
                  (x, u, y, n, tanh_form))

SFT_INLINE void sft_gelu_bwd_bf16_impl(const float *restrict dy, const uint16_t *restrict x,
                                       const uint16_t *restrict u, float *restrict dx, float *restrict du,
                                       int64_t n, int tanh_form) {
    float xf[SFT_BF16_CHUNK], uf[SFT_BF16_CHUNK];
    for (int64_t s = 0; s < n; s += SFT_BF16_CHUNK) {
        const int64_t m = n - s < SFT_BF16_CHUNK ? n - s : SFT_BF16_CHUNK;
        sft_bf16_widen(x + s, xf, m);
        if (u) sft_bf16_widen(u + s, uf, m);
        sft_gelu_bwd_f32_impl(dy + s, xf, u ? uf : NULL, dx + s, du ? du + s : NULL, m, tanh_form);
    }
}
SFT_DISPATCH_VOID(sft_gelu_bwd_bf16,
                  (const float *dy, const uint16_t *x, const uint16_t *u, float *dx, float *du, int64_t n,
                   int tanh_form),
                  (dy, x, u, dx, du, n, tanh_form))
