// Causal self-attention on CPU with GQA, packed documents and optional ALiBi; forward and
// backward, the FlashAttention way (Dao et al. 2022): no T×T matrix is ever stored.
//
//   score(t, s) = scale * q_t · k_s - slope_h (t - s)      for s in doc(t), s <= t
//   p(t, s)     = exp(score - lse_t),  lse_t = log sum_s exp(score(t, s))
//   o_t         = sum_s p(t, s) v_s
// Backward, with delta_t = do_t · o_t and dp = do_t · v_s:
//   ds = p (dp - delta_t);  dq_t += scale ds k_s;  dk_s += scale ds q_t;  dv_s += p do_t
//
// Forward walks each block of query rows over tiles of BK keys with an online softmax (running
// max m, running sum l, output accumulator rescaled when m grows). A key tile is transposed to
// (D, BK) once, so a row's BK scores are D vector multiply-adds with no horizontal sums.
// Backward recomputes p from the saved lse and runs two independent kinds of work: per
// (kv head, key tile) it sums dk, dv over every query that sees the tile (all heads of the
// group), and per (head, query block) it sums dq. Each output row has exactly one writer, so
// parts need no locks or atomics; units are spread over parts by their cost (pairs of tokens).
//
// Documents are the maximal runs of equal ids in `doc`: a query sees keys from the start of its
// run, so tiles before that start are never touched.
#include "cpu.h"
#include <stdlib.h>

enum { BQ = 64, BK = 64 };

/// First token and one past the last token of t's document, for one row of doc ids.
static void doc_bounds(const int32_t *doc, int64_t T, int32_t *start, int32_t *end) {
    int32_t s = 0, e = (int32_t)T;
    for (int64_t t = 0; t < T; t++) {
        if (doc && t > 0 && doc[t] != doc[t - 1]) s = (int32_t)t;
        start[t] = s;
    }
    for (int64_t t = T - 1; t >= 0; t--) {
        if (doc && t < T - 1 && doc[t] != doc[t + 1]) e = (int32_t)(t + 1);
        end[t] = e;
    }
}

// ---------------------------------------------------------------------------------------------
// Work units and their assignment to parts
// ---------------------------------------------------------------------------------------------

typedef struct {
    int64_t cost;
    int32_t kind, b, head, block, owner, index;
} unit_t;

static int by_cost_desc(const void *pa, const void *pb) {
    const unit_t *a = pa, *b = pb;
    if (a->cost != b->cost) return a->cost > b->cost ? -1 : 1;
    return a->index - b->index;
}

/// Longest-processing-time-first: every part computes the same assignment and keeps its own.
/// Returns how many units `part` owns; they are moved to the front of `units`.
static int64_t assign_units(unit_t *units, int64_t n, int part, int nparts, int64_t *load) {
    qsort(units, (size_t)n, sizeof *units, by_cost_desc);
    for (int p = 0; p < nparts; p++) load[p] = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int p = 1; p < nparts; p++) if (load[p] < load[best]) best = p;
        units[i].owner = best;
        load[best] += units[i].cost + 1;
    }
    int64_t mine = 0;
    for (int64_t i = 0; i < n; i++) if (units[i].owner == part) units[mine++] = units[i];
    return mine;
}

/// Sum over t in [t0, t1) of the number of keys t sees.
static int64_t query_pairs(const int32_t *start, int64_t t0, int64_t t1) {
    int64_t c = 0;
    for (int64_t t = t0; t < t1; t++) c += t - start[t] + 1;
    return c;
}

// ---------------------------------------------------------------------------------------------
// Inner loops
// ---------------------------------------------------------------------------------------------

/// xt[d][j] = x[j][d] for j < n rows of a (n, D) slice with row stride ld; zero for j >= n.
SFT_INLINE void transpose_tile(const float *restrict x, int64_t ld, int64_t n, int64_t D,
                               float *restrict xt) {
    for (int64_t d = 0; d < D; d++) {
        float *row = xt + d * BK;
        for (int64_t j = 0; j < n; j++) row[j] = x[j * ld + d];
        for (int64_t j = n; j < BK; j++) row[j] = 0;
    }
}

/// out[j] = alpha * sum_d a[d] xt[d][j] for all BK columns of a transposed tile.
SFT_INLINE void row_times_tile(const float *restrict a, float alpha, const float *restrict xt,
                               int64_t D, float *restrict out) {
    for (int j = 0; j < BK; j++) out[j] = 0;
    for (int64_t d = 0; d < D; d++) {
        const float ad = a[d] * alpha;
        const float *row = xt + d * BK;
        for (int j = 0; j < BK; j++) out[j] += ad * row[j];
    }
}

#pragma clang fp reassociate(on)
SFT_INLINE float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
#pragma clang fp reassociate(off)

/// y += alpha x over n floats
SFT_INLINE void axpy(float alpha, const float *restrict x, float *restrict y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] += alpha * x[i];
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

SFT_INLINE int sft_attention_fwd_f32_impl(const float *q, int64_t ldq, const float *k,
                                          int64_t ldk, const float *v, int64_t ldv, float *o,
                                          int64_t ldo, float *lse, const int32_t *doc,
                                          const float *alibi, int64_t B, int64_t T, int64_t H,
                                          int64_t KV, int64_t D, float scale, int part,
                                          int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ, nunits = B * H * nqb;
    size_t floats = (size_t)(D * BK + BQ * D + BK + 2 * BQ);
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t);
    char *mem = malloc(bytes);
    if (!mem) return sft_set_error("attention forward: cannot allocate %zu bytes of scratch", bytes);
    float *kt = (float *)mem, *acc = kt + D * BK, *sc = acc + BQ * D, *m = sc + BK, *l = m + BQ;
    int32_t *start = (int32_t *)(l + BQ), *end = start + B * T;
    unit_t *units = (unit_t *)(end + B * T);
    int64_t *load = (int64_t *)(units + nunits);

    for (int64_t b = 0; b < B; b++) doc_bounds(doc ? doc + b * T : NULL, T, start + b * T, end + b * T);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t qb = 0; qb < nqb; qb++, n++) {
                int64_t t0 = qb * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
                units[n] = (unit_t){query_pairs(start + b * T, t0, t1), 0, (int32_t)b,
                                    (int32_t)h, (int32_t)qb, 0, (int32_t)n};
            }
    int64_t mine = assign_units(units, nunits, part, nparts, load);

    for (int64_t u = 0; u < mine; u++) {
        const int64_t b = units[u].b, h = units[u].head, g = h / G;
        const int64_t t0 = (int64_t)units[u].block * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
        const int32_t *st = start + b * T;
        const float slope = alibi ? alibi[h] : 0.0f;
        memset(acc, 0, (size_t)(BQ * D) * sizeof(float));
        for (int64_t r = 0; r < BQ; r++) { m[r] = -INFINITY; l[r] = 0; }

        for (int64_t s0 = st[t0]; s0 < t1; s0 += BK) {
            const int64_t s1 = s0 + BK < t1 ? s0 + BK : t1;
            transpose_tile(k + (b * T + s0) * ldk + g * D, ldk, s1 - s0, D, kt);
            for (int64_t t = t0; t < t1; t++) {
                const int64_t jlo = (st[t] > s0 ? st[t] : s0) - s0;
                const int64_t jhi = (t + 1 < s1 ? t + 1 : s1) - s0;
                if (jlo >= jhi) continue;
                const int64_t r = t - t0;
                row_times_tile(q + (b * T + t) * ldq + h * D, scale, kt, D, sc);
                if (alibi)
                    for (int64_t j = jlo; j < jhi; j++) sc[j] -= slope * (float)(t - s0 - j);
                float mx = m[r];
                for (int64_t j = jlo; j < jhi; j++) mx = sc[j] > mx ? sc[j] : mx;
                const float corr = sft_expf(m[r] - mx);   // 0 on the first tile (m = -inf)
                float psum = 0;
                for (int64_t j = jlo; j < jhi; j++) {
                    sc[j] = sft_expf(sc[j] - mx);
                    psum += sc[j];
                }
                l[r] = l[r] * corr + psum;
                m[r] = mx;
                float *a = acc + r * D;
                if (corr != 1.0f)
                    for (int64_t d = 0; d < D; d++) a[d] *= corr;
                for (int64_t j = jlo; j < jhi; j++)
                    axpy(sc[j], v + (b * T + s0 + j) * ldv + g * D, a, D);
            }
        }
        for (int64_t t = t0; t < t1; t++) {
            const int64_t r = t - t0;
            const float inv = 1.0f / l[r];
            float *orow = o + (b * T + t) * ldo + h * D;
            for (int64_t d = 0; d < D; d++) orow[d] = acc[r * D + d] * inv;
            lse[(b * H + h) * T + t] = m[r] + logf(l[r]);
        }
    }
    free(mem);
    return 0;
}
SFT_DISPATCH(int, sft_attention_fwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, float *o, int64_t ldo, float *lse, const int32_t *doc,
              const float *alibi, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
              float scale, int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, B, T, H, KV, D, scale, part,
              nparts))

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

SFT_INLINE int sft_attention_bwd_f32_impl(
    const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
    const float *o, int64_t ldo, const float *dout, int64_t lddo, const float *lse,
    const int32_t *doc, const float *alibi, float *dq, int64_t lddq, float *dk, int64_t lddk,
    float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
    float scale, int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ, nkb = (T + BK - 1) / BK;
    const int64_t nunits = B * KV * nkb + B * H * nqb;
    size_t floats = (size_t)(2 * D * BK + 2 * BK * D + BQ * D + 2 * BK + BQ);
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t);
    char *mem = malloc(bytes);
    if (!mem) return sft_set_error("attention backward: cannot allocate %zu bytes of scratch", bytes);
    float *kt = (float *)mem, *vt = kt + D * BK, *dkt = vt + D * BK, *dvt = dkt + BK * D;
    float *dqa = dvt + BK * D, *sc = dqa + BQ * D, *dp = sc + BK, *delta = dp + BK;
    int32_t *start = (int32_t *)(delta + BQ), *end = start + B * T;
    unit_t *units = (unit_t *)(end + B * T);
    int64_t *load = (int64_t *)(units + nunits);

    for (int64_t b = 0; b < B; b++) doc_bounds(doc ? doc + b * T : NULL, T, start + b * T, end + b * T);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *st = start + b * T, *en = end + b * T;
        // kind 0: (kv head g, key tile) -> dk, dv. Cost: queries seeing each key, 4 D-loops.
        for (int64_t g = 0; g < KV; g++)
            for (int64_t kb = 0; kb < nkb; kb++, n++) {
                int64_t s0 = kb * BK, s1 = s0 + BK < T ? s0 + BK : T, c = 0;
                for (int64_t s = s0; s < s1; s++) c += en[s] - s;
                units[n] = (unit_t){4 * G * c, 0, (int32_t)b, (int32_t)g, (int32_t)kb, 0, (int32_t)n};
            }
        // kind 1: (head h, query block) -> dq. Cost: keys each query sees, 3 D-loops.
        for (int64_t h = 0; h < H; h++)
            for (int64_t qb = 0; qb < nqb; qb++, n++) {
                int64_t t0 = qb * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
                units[n] = (unit_t){3 * query_pairs(st, t0, t1), 1, (int32_t)b, (int32_t)h,
                                    (int32_t)qb, 0, (int32_t)n};
            }
    }
    int64_t mine = assign_units(units, nunits, part, nparts, load);

    for (int64_t u = 0; u < mine; u++) {
        const int64_t b = units[u].b;
        const int32_t *st = start + b * T, *en = end + b * T;
        if (units[u].kind == 0) {
            // dk, dv for keys [s0, s1) of kv head g
            const int64_t g = units[u].head, s0 = (int64_t)units[u].block * BK;
            const int64_t s1 = s0 + BK < T ? s0 + BK : T, nk = s1 - s0;
            transpose_tile(k + (b * T + s0) * ldk + g * D, ldk, nk, D, kt);
            transpose_tile(v + (b * T + s0) * ldv + g * D, ldv, nk, D, vt);
            memset(dkt, 0, (size_t)(2 * BK * D) * sizeof(float));   // dkt and dvt
            for (int64_t t = s0; t < en[s1 - 1]; t++) {
                const int64_t jlo = (st[t] > s0 ? st[t] : s0) - s0;
                const int64_t jhi = (t + 1 < s1 ? t + 1 : s1) - s0;
                if (jlo >= jhi) continue;
                for (int64_t h = g * G; h < (g + 1) * G; h++) {
                    const float *qr = q + (b * T + t) * ldq + h * D;
                    const float *dor = dout + (b * T + t) * lddo + h * D;
                    const float dl = dot(dor, o + (b * T + t) * ldo + h * D, D);
                    const float L = lse[(b * H + h) * T + t];
                    const float slope = alibi ? alibi[h] : 0.0f;
                    row_times_tile(qr, scale, kt, D, sc);
                    row_times_tile(dor, 1.0f, vt, D, dp);
                    for (int64_t j = jlo; j < jhi; j++) {
                        const float p = sft_expf(sc[j] - slope * (float)(t - s0 - j) - L);
                        axpy(p, dor, dvt + j * D, D);
                        axpy(p * (dp[j] - dl) * scale, qr, dkt + j * D, D);
                    }
                }
            }
            for (int64_t j = 0; j < nk; j++) {
                memcpy(dk + (b * T + s0 + j) * lddk + g * D, dkt + j * D, (size_t)D * sizeof(float));
                memcpy(dv + (b * T + s0 + j) * lddv + g * D, dvt + j * D, (size_t)D * sizeof(float));
            }
        } else {
            // dq for queries [t0, t1) of head h
            const int64_t h = units[u].head, g = h / G, t0 = (int64_t)units[u].block * BQ;
            const int64_t t1 = t0 + BQ < T ? t0 + BQ : T;
            const float slope = alibi ? alibi[h] : 0.0f;
            for (int64_t t = t0; t < t1; t++)
                delta[t - t0] = dot(dout + (b * T + t) * lddo + h * D, o + (b * T + t) * ldo + h * D, D);
            memset(dqa, 0, (size_t)(BQ * D) * sizeof(float));
            for (int64_t s0 = st[t0]; s0 < t1; s0 += BK) {
                const int64_t s1 = s0 + BK < t1 ? s0 + BK : t1;
                transpose_tile(k + (b * T + s0) * ldk + g * D, ldk, s1 - s0, D, kt);
                transpose_tile(v + (b * T + s0) * ldv + g * D, ldv, s1 - s0, D, vt);
                for (int64_t t = t0; t < t1; t++) {
                    const int64_t jlo = (st[t] > s0 ? st[t] : s0) - s0;
                    const int64_t jhi = (t + 1 < s1 ? t + 1 : s1) - s0;
                    if (jlo >= jhi) continue;
                    const float *dor = dout + (b * T + t) * lddo + h * D;
                    const float L = lse[(b * H + h) * T + t];
                    row_times_tile(q + (b * T + t) * ldq + h * D, scale, kt, D, sc);
                    row_times_tile(dor, 1.0f, vt, D, dp);
                    float *a = dqa + (t - t0) * D;
                    for (int64_t j = jlo; j < jhi; j++) {
                        const float p = sft_expf(sc[j] - slope * (float)(t - s0 - j) - L);
                        axpy(p * (dp[j] - delta[t - t0]) * scale,
                             k + (b * T + s0 + j) * ldk + g * D, a, D);
                    }
                }
            }
            for (int64_t t = t0; t < t1; t++)
                memcpy(dq + (b * T + t) * lddq + h * D, dqa + (t - t0) * D, (size_t)D * sizeof(float));
        }
    }
    free(mem);
    return 0;
}
SFT_DISPATCH(int, sft_attention_bwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, const float *o, int64_t ldo, const float *dout, int64_t lddo,
              const float *lse, const int32_t *doc, const float *alibi, float *dq, int64_t lddq,
              float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H,
              int64_t KV, int64_t D, float scale, int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, dq, lddq, dk, lddk, dv,
              lddv, B, T, H, KV, D, scale, part, nparts))
