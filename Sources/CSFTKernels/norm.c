// RMSNorm (Zhang & Sennrich 2019, as in Llama) and LayerNorm (Ba et al. 2016) on CPU, forward
// and backward. Rows are independent in forward; backward splits rows for dx and columns for
// dweight/dbias, so parts never write the same memory.
#include "cpu.h"

#pragma clang fp reassociate(on)
SFT_INLINE float row_sum(const float *x, int64_t C) {
    float s = 0;
    for (int64_t c = 0; c < C; c++) s += x[c];
    return s;
}
SFT_INLINE float row_dot(const float *a, const float *b, int64_t C) {
    float s = 0;
    for (int64_t c = 0; c < C; c++) s += a[c] * b[c];
    return s;
}
SFT_INLINE float row_dot3(const float *a, const float *b, const float *w, int64_t C) {
    float s = 0;
    for (int64_t c = 0; c < C; c++) s += a[c] * b[c] * w[c];
    return s;
}
/// sum over c of (x[c] - mean)^2
SFT_INLINE float row_centered_sumsq(const float *x, float mean, int64_t C) {
    float s = 0;
    for (int64_t c = 0; c < C; c++) s += (x[c] - mean) * (x[c] - mean);
    return s;
}
#pragma clang fp reassociate(off)

// ---------------------------------------------------------------------------------------------
// RMSNorm: r = 1 / sqrt(mean(x^2) + eps);  y = x * r * w
// ---------------------------------------------------------------------------------------------

SFT_INLINE void sft_rmsnorm_fwd_f32_impl(const float *restrict x, const float *restrict w,
                                         float *restrict y, float *restrict rstd, int64_t N,
                                         int64_t C, float eps, int part, int nparts) {
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        float r = 1.0f / sqrtf(row_dot(xr, xr, C) / (float)C + eps);
        rstd[n] = r;
        for (int64_t c = 0; c < C; c++) yr[c] = xr[c] * r * w[c];
    }
}
SFT_DISPATCH_VOID(sft_rmsnorm_fwd_f32,
                  (const float *x, const float *w, float *y, float *rstd, int64_t N, int64_t C,
                   float eps, int part, int nparts),
                  (x, w, y, rstd, N, C, eps, part, nparts))

// With g = dy * w:  dx = r g - x r^3 mean(g x);   dw += dy x r (summed over rows).
SFT_INLINE void sft_rmsnorm_bwd_f32_impl(const float *restrict dy, const float *restrict x,
                                         const float *restrict w, const float *restrict rstd,
                                         float *restrict dx, float *restrict dw, int64_t N,
                                         int64_t C, int part, int nparts) {
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *dyr = dy + n * C, *xr = x + n * C;
        float *dxr = dx + n * C;
        float r = rstd[n];
        float k = row_dot3(dyr, xr, w, C) / (float)C * r * r * r;
        for (int64_t c = 0; c < C; c++) dxr[c] = r * dyr[c] * w[c] - k * xr[c];
    }
    if (!dw) return;
    int64_t c0, c1;
    sft_split(C, part, nparts, &c0, &c1);
    for (int64_t n = 0; n < N; n++) {
        const float *dyr = dy + n * C, *xr = x + n * C;
        float r = rstd[n];
        for (int64_t c = c0; c < c1; c++) dw[c] += dyr[c] * xr[c] * r;
    }
}
SFT_DISPATCH_VOID(sft_rmsnorm_bwd_f32,
                  (const float *dy, const float *x, const float *w, const float *rstd, float *dx,
                   float *dw, int64_t N, int64_t C, int part, int nparts),
                  (dy, x, w, rstd, dx, dw, N, C, part, nparts))

// ---------------------------------------------------------------------------------------------
// LayerNorm: mu = mean(x); r = 1 / sqrt(mean((x - mu)^2) + eps);  y = (x - mu) r w + b
// ---------------------------------------------------------------------------------------------

SFT_INLINE void sft_layernorm_fwd_f32_impl(const float *restrict x, const float *restrict w,
                                           const float *restrict b, float *restrict y,
                                           float *restrict mean, float *restrict rstd,
                                           int64_t N, int64_t C, float eps, int part,
                                           int nparts) {
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *xr = x + n * C;
        float *yr = y + n * C;
        float mu = row_sum(xr, C) / (float)C;
        float r = 1.0f / sqrtf(row_centered_sumsq(xr, mu, C) / (float)C + eps);
        mean[n] = mu;
        rstd[n] = r;
        if (b) {
            for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - mu) * r * w[c] + b[c];
        } else {
            for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - mu) * r * w[c];
        }
    }
}
SFT_DISPATCH_VOID(sft_layernorm_fwd_f32,
                  (const float *x, const float *w, const float *b, float *y, float *mean,
                   float *rstd, int64_t N, int64_t C, float eps, int part, int nparts),
                  (x, w, b, y, mean, rstd, N, C, eps, part, nparts))

// With xhat = (x - mu) r and g = dy * w:
//   dx = r (g - mean(g) - xhat mean(g xhat));  dw += dy xhat;  db += dy.
SFT_INLINE void sft_layernorm_bwd_f32_impl(const float *restrict dy, const float *restrict x,
                                           const float *restrict w, const float *restrict mean,
                                           const float *restrict rstd, float *restrict dx,
                                           float *restrict dw, float *restrict db, int64_t N,
                                           int64_t C, int part, int nparts) {
    int64_t lo, hi;
    sft_split(N, part, nparts, &lo, &hi);
    for (int64_t n = lo; n < hi; n++) {
        const float *dyr = dy + n * C, *xr = x + n * C;
        float *dxr = dx + n * C;
        float mu = mean[n], r = rstd[n];
        // mean(g) and mean(g xhat) = r (mean(g x) - mu mean(g))
        float g_mean = row_dot(dyr, w, C) / (float)C;
        float gx_mean = row_dot3(dyr, w, xr, C) / (float)C;
        float gxhat_mean = r * (gx_mean - mu * g_mean);
        for (int64_t c = 0; c < C; c++) {
            float xhat = (xr[c] - mu) * r;
            dxr[c] = r * (dyr[c] * w[c] - g_mean - xhat * gxhat_mean);
        }
    }
    int64_t c0, c1;
    sft_split(C, part, nparts, &c0, &c1);
    for (int64_t n = 0; n < N; n++) {
        const float *dyr = dy + n * C, *xr = x + n * C;
        float mu = mean[n], r = rstd[n];
        if (dw)
            for (int64_t c = c0; c < c1; c++) dw[c] += dyr[c] * (xr[c] - mu) * r;
        if (db)
            for (int64_t c = c0; c < c1; c++) db[c] += dyr[c];
    }
}
SFT_DISPATCH_VOID(sft_layernorm_bwd_f32,
                  (const float *dy, const float *x, const float *w, const float *mean,
                   const float *rstd, float *dx, float *dw, float *db, int64_t N, int64_t C,
                   int part, int nparts),
                  (dy, x, w, mean, rstd, dx, dw, db, N, C, part, nparts))
