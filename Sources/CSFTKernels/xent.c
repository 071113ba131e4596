// Cross-entropy over rows of logits, the second half of the fused LM head: the Swift side
// computes one chunk of logits with a GEMM, this turns it into loss and d loss / d logits in
// place, and the next GEMMs take the gradient back to x and W.
//   loss_r = logsumexp(z_r) - z_r[target_r];   dz_r = softmax(z_r) - onehot(target_r)
// With final-logit softcapping (Gemma 2; softcap > 0) the logits are first replaced in place by
// y = softcap tanh(z / softcap), the loss is taken over y, and
//   dz_r = (softmax(y_r) - onehot(target_r)) (1 - (y_r / softcap)^2).
#include "cpu.h"

enum { LANES = 16 };

/// max over n floats, in LANES independent lanes so it vectorizes without fast-math.
SFT_INLINE float row_max(const float *x, int64_t n) {
    float lane[LANES];
    for (int l = 0; l < LANES; l++) lane[l] = -INFINITY;
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int l = 0; l < LANES; l++) lane[l] = x[i + l] > lane[l] ? x[i + l] : lane[l];
    float m = -INFINITY;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    for (int l = 0; l < LANES; l++) m = lane[l] > m ? lane[l] : m;
    return m;
}

#pragma clang fp reassociate(on)
/// sum of exp(x - m) over n floats
SFT_INLINE float row_sum_exp(const float *x, float m, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += sft_expf(x[i] - m);
    return s;
}
#pragma clang fp reassociate(off)

SFT_INLINE double sft_xent_rows_f32_impl(float *logits, const int32_t *targets, int64_t n,
                                         int64_t V, int32_t ignore_index, float grad_scale,
                                         int want_grad, float softcap, int64_t *count, int part,
                                         int nparts) {
    int64_t lo, hi, counted = 0;
    sft_split(n, part, nparts, &lo, &hi);
    double loss = 0;
    for (int64_t r = lo; r < hi; r++) {
        float *z = logits + r * V;
        int32_t t = targets[r];
        if (t == ignore_index || t < 0 || t >= V) {
            if (want_grad) memset(z, 0, (size_t)V * sizeof(float));
            continue;
        }
        if (softcap > 0)
            for (int64_t j = 0; j < V; j++) z[j] = softcap * tanhf(z[j] / softcap);
        float m = row_max(z, V);
        float s = row_sum_exp(z, m, V);
        loss += (double)m + log((double)s) - (double)z[t];
        counted++;
        if (want_grad) {
            float k = grad_scale / s;
            if (softcap > 0) {
                const float inv = 1.0f / softcap, ut = z[t] * inv;
                for (int64_t j = 0; j < V; j++) {
                    const float u = z[j] * inv;
                    z[j] = sft_expf(z[j] - m) * k * (1.0f - u * u);
                }
                z[t] -= grad_scale * (1.0f - ut * ut);
            } else {
                for (int64_t j = 0; j < V; j++) z[j] = sft_expf(z[j] - m) * k;
                z[t] -= grad_scale;
            }
        }
    }
    *count = counted;
    return loss;
}
SFT_DISPATCH(double, sft_xent_rows_f32,
             (float *logits, const int32_t *targets, int64_t n, int64_t V, int32_t ignore_index,
              float grad_scale, int want_grad, float softcap, int64_t *count, int part, int nparts),
             (logits, targets, n, V, ignore_index, grad_scale, want_grad, softcap, count, part, nparts))
