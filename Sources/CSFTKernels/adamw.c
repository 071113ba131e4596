// AdamW (Loshchilov & Hutter 2019): Adam moments with decoupled weight decay, one fused pass
// over f32 master weights, gradients and both moments.
#include "cpu.h"

SFT_INLINE void sft_adamw_f32_impl(float *restrict p, const float *restrict g,
                                   float *restrict m, float *restrict v, int64_t n, float lr,
                                   float b1, float b2, float eps, float wd, float bc1,
                                   float bc2) {
    const float inv_bc1 = 1.0f / bc1, inv_bc2 = 1.0f / bc2;
    for (int64_t i = 0; i < n; i++) {
        float mi = b1 * m[i] + (1.0f - b1) * g[i];
        float vi = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * inv_bc1 / (__builtin_elementwise_sqrt(vi * inv_bc2) + eps) + wd * p[i]);
    }
}
SFT_DISPATCH_VOID(sft_adamw_f32,
                  (float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                   float b2, float eps, float wd, float bc1, float bc2),
                  (p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2))
