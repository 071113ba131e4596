// Attention for generation: a few new query tokens against the KV cache (batch 1).
// Reference math per query i and head h (kv head g = h / (H/KV)), p = S - Tq + i:
//   s_j = scale * q_i,h · k_j,g  for j <= p;   o_i,h = sum_j softmax(s)_j v_j,g
// Two passes over the keys (scores, then weighted values); scores live in a heap row.
//
// Written so every loop vectorizes without reassociation flags: the q·k dot keeps 16 partial
// sums, exp is sft_expf, and the softmax sum keeps 8 (a plain `s += a*b` over D is a serial
// chain of dependent adds, which made decode at a few hundred tokens of context spend a
// fifth of its time here). Compiled per instruction set by SFT_DISPATCH.
#include "cpu.h"
#include <stdlib.h>

SFT_INLINE float dot_f32(const float *restrict a, const float *restrict b, int64_t n) {
    float acc[16] = {0};
    int64_t d = 0;
    for (; d + 16 <= n; d += 16)
        for (int l = 0; l < 16; l++) acc[l] += a[d + l] * b[d + l];
    for (int l = 0; d < n; d++, l++) acc[l] += a[d] * b[d];
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

SFT_INLINE void sft_attention_cached_f32_impl(const float *q, const float *kc, const float *vc, float *o,
                                              int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                                              float scale, int part, int nparts) {
    const int64_t group = H / KV;
    int64_t h0, h1;
    sft_split(H, part, nparts, &h0, &h1);
    float *scores = malloc(sizeof(float) * (size_t)S);
    if (!scores) return;
    for (int64_t i = 0; i < Tq; i++) {
        const int64_t p = S - Tq + i;
        for (int64_t h = h0; h < h1; h++) {
            const int64_t g = h / group;
            const float *qi = q + (i * H + h) * D;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= p; j++) {
                const float s = scale * dot_f32(qi, kc + (j * KV + g) * D, D);
                scores[j] = s;
                mx = s > mx ? s : mx;
            }
            for (int64_t j = 0; j <= p; j++) scores[j] = sft_expf(scores[j] - mx);
            float part_sum[8] = {0};
            int64_t j = 0;
            for (; j + 8 <= p + 1; j += 8)
                for (int l = 0; l < 8; l++) part_sum[l] += scores[j + l];
            for (int l = 0; j <= p; j++, l++) part_sum[l] += scores[j];
            const float sum = ((part_sum[0] + part_sum[4]) + (part_sum[1] + part_sum[5])) +
                              ((part_sum[2] + part_sum[6]) + (part_sum[3] + part_sum[7]));
            const float inv = 1.0f / sum;
            float *restrict oi = o + (i * H + h) * D;
            memset(oi, 0, sizeof(float) * (size_t)D);
            for (int64_t j = 0; j <= p; j++) {
                const float w = scores[j] * inv;
                const float *restrict vj = vc + (j * KV + g) * D;
                for (int64_t d = 0; d < D; d++) oi[d] += w * vj[d];
            }
        }
    }
    free(scores);
}
SFT_DISPATCH_VOID(sft_attention_cached_f32,
                  (const float *q, const float *kc, const float *vc, float *o, int64_t Tq, int64_t S,
                   int64_t H, int64_t KV, int64_t D, float scale, int part, int nparts),
                  (q, kc, vc, o, Tq, S, H, KV, D, scale, part, nparts))
