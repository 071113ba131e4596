// Attention for generation: a few new query tokens against the KV cache (batch 1).
// Reference math per query i and head h (kv head g = h / (H/KV)), p = S - Tq + i:
//   x_j = scale * q_i,h · k_j,g,  s_j = cap tanh(x_j / cap) (softcap > 0, else x_j) - slope_h (p - j)
//   for j <= p;   o_i,h = sum_j softmax(s)_j v_j,g
// Two passes over the keys (scores, then weighted values); scores live in a heap row.
//
// Written so every loop vectorizes without reassociation flags: q·k takes four keys at a time
// with 16 partial sums each, exp is sft_expf, and the softmax sum keeps 8 (a plain
// `s += a*b` over D is a serial chain of dependent adds, which made decode at a few hundred
// tokens of context spend a fifth of its time here). Compiled per instruction set by
// SFT_DISPATCH.
#include "cpu.h"
#include <stdlib.h>

SFT_INLINE float fold16(float *acc) {
    for (int w = 8; w >= 1; w /= 2)
        for (int l = 0; l < w; l++) acc[l] += acc[l + w];
    return acc[0];
}

/// q · k_r for the four rows k_r, 16 partial sums each (four independent vector chains; the
/// tail goes to scalars so the partial sums can live in registers).
SFT_INLINE void dot4_f32(const float *restrict q, const float *k0, const float *k1, const float *k2,
                         const float *k3, int64_t n, float *out) {
    float a0[16] = {0}, a1[16] = {0}, a2[16] = {0}, a3[16] = {0};
    int64_t d = 0;
    for (; d + 16 <= n; d += 16)
        for (int l = 0; l < 16; l++) {
            a0[l] += q[d + l] * k0[d + l];
            a1[l] += q[d + l] * k1[d + l];
            a2[l] += q[d + l] * k2[d + l];
            a3[l] += q[d + l] * k3[d + l];
        }
    float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
    for (; d < n; d++) {
        t0 += q[d] * k0[d];
        t1 += q[d] * k1[d];
        t2 += q[d] * k2[d];
        t3 += q[d] * k3[d];
    }
    out[0] = fold16(a0) + t0;
    out[1] = fold16(a1) + t1;
    out[2] = fold16(a2) + t2;
    out[3] = fold16(a3) + t3;
}

/// o (n) = sum_j w_j v_j over rows v_j = v + j*ld, j < count: 64 columns at a time in two
/// register accumulators (even and odd j), so o is not reloaded per row.
SFT_INLINE void weighted_rows(const float *restrict w, const float *restrict v, int64_t ld,
                              int64_t count, int64_t n, float *restrict o) {
    int64_t c = 0;
    for (; c + 64 <= n; c += 64) {
        float e[64] = {0}, f[64] = {0};
        int64_t j = 0;
        for (; j + 2 <= count; j += 2) {
            const float *v0 = v + j * ld + c, *v1 = v0 + ld;
            for (int l = 0; l < 64; l++) {
                e[l] += w[j] * v0[l];
                f[l] += w[j + 1] * v1[l];
            }
        }
        if (j < count)
            for (int l = 0; l < 64; l++) e[l] += w[j] * v[j * ld + c + l];
        for (int l = 0; l < 64; l++) o[c + l] = e[l] + f[l];
    }
    for (; c < n; c++) {
        float t = 0;
        for (int64_t j = 0; j < count; j++) t += w[j] * v[j * ld + c];
        o[c] = t;
    }
}

SFT_INLINE void sft_attention_cached_f32_impl(const float *q, const float *kc, const float *vc, float *o,
                                              int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                                              float scale, const float *alibi, float softcap,
                                              int part, int nparts) {
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
            // Keys four at a time; the last group repeats key p for the rows past it.
            for (int64_t j = 0; j <= p; j += 4) {
                const float *k[4];
                for (int r = 0; r < 4; r++) k[r] = kc + ((j + r <= p ? j + r : p) * KV + g) * D;
                float s4[4];
                dot4_f32(qi, k[0], k[1], k[2], k[3], D, s4);
                for (int r = 0; r < 4 && j + r <= p; r++) scores[j + r] = scale * s4[r];
            }
            if (softcap > 0)
                for (int64_t j = 0; j <= p; j++) scores[j] = softcap * tanhf(scores[j] / softcap);
            if (alibi)
                for (int64_t j = 0; j <= p; j++) scores[j] -= alibi[h] * (float)(p - j);
            float mx = -INFINITY;
            for (int64_t j = 0; j <= p; j++) mx = scores[j] > mx ? scores[j] : mx;
            for (int64_t j = 0; j <= p; j++) scores[j] = sft_expf(scores[j] - mx);
            float part_sum[8] = {0};
            int64_t j = 0;
            for (; j + 8 <= p + 1; j += 8)
                for (int l = 0; l < 8; l++) part_sum[l] += scores[j + l];
            for (int l = 0; j <= p; j++, l++) part_sum[l] += scores[j];
            const float sum = ((part_sum[0] + part_sum[4]) + (part_sum[1] + part_sum[5])) +
                              ((part_sum[2] + part_sum[6]) + (part_sum[3] + part_sum[7]));
            const float inv = 1.0f / sum;
            for (int64_t j = 0; j <= p; j++) scores[j] *= inv;
            weighted_rows(scores, vc + g * D, KV * D, p + 1, D, o + (i * H + h) * D);
        }
    }
    free(scores);
}
SFT_DISPATCH_VOID(sft_attention_cached_f32,
                  (const float *q, const float *kc, const float *vc, float *o, int64_t Tq, int64_t S,
                   int64_t H, int64_t KV, int64_t D, float scale, const float *alibi, float softcap,
                   int part, int nparts),
                  (q, kc, vc, o, Tq, S, H, KV, D, scale, alibi, softcap, part, nparts))
