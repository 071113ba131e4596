// Attention for generation: a few new query tokens against the KV cache (batch 1).
// Reference math per query i and head h (kv head g = h / (H/KV)), p = S - Tq + i:
//   s_j = scale * q_i,h · k_j,g  for j <= p;   o_i,h = sum_j softmax(s)_j v_j,g
// Two passes over the keys (scores, then weighted values); scores live in a stack/heap row.
#include "sftkernels.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void sft_attention_cached_f32(const float *q, const float *kc, const float *vc, float *o,
                              int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                              float scale, int part, int nparts) {
    const int64_t group = H / KV;
    const int64_t h0 = H * part / nparts, h1 = H * (part + 1) / nparts;
    float *scores = malloc(sizeof(float) * (size_t)S);
    if (!scores) return;
    for (int64_t i = 0; i < Tq; i++) {
        const int64_t p = S - Tq + i;
        for (int64_t h = h0; h < h1; h++) {
            const int64_t g = h / group;
            const float *qi = q + (i * H + h) * D;
            float mx = -INFINITY;
            for (int64_t j = 0; j <= p; j++) {
                const float *kj = kc + (j * KV + g) * D;
                float s = 0;
                for (int64_t d = 0; d < D; d++) s += qi[d] * kj[d];
                s *= scale;
                scores[j] = s;
                if (s > mx) mx = s;
            }
            float sum = 0;
            for (int64_t j = 0; j <= p; j++) { scores[j] = expf(scores[j] - mx); sum += scores[j]; }
            const float inv = 1.0f / sum;
            float *oi = o + (i * H + h) * D;
            memset(oi, 0, sizeof(float) * (size_t)D);
            for (int64_t j = 0; j <= p; j++) {
                const float w = scores[j] * inv;
                const float *vj = vc + (j * KV + g) * D;
                for (int64_t d = 0; d < D; d++) oi[d] += w * vj[d];
            }
        }
    }
    free(scores);
}
