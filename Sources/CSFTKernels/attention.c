// Causal self-attention on CPU with GQA, packed documents and optional ALiBi; forward and
// backward, the FlashAttention way (Dao et al. 2022): no T×T matrix is ever stored.
//
//   score(t, s) = scale * q_t · k_s - slope_h (t - s)      for s in doc(t), s <= t
//   p(t, s)     = exp(score - lse_t),  lse_t = log sum_s exp(score(t, s))
//   o_t         = sum_s p(t, s) v_s
// Backward, with delta_t = do_t · o_t and dp = do_t · v_s:
//   ds = p (dp - delta_t);  dq_t += scale ds k_s;  dk_s += scale ds q_t;  dv_s += p do_t
//
// Forward walks each block of BQ query rows over tiles of BK keys with an online softmax
// (running max m, running sum l, output accumulator rescaled when m grows). A key tile is
// transposed to (D, BK) once, so the scores of R query rows are D steps of R x BK vector
// multiply-adds held in registers, with no horizontal sums; P V is the same kind of product.
// Backward recomputes p from the saved lse and runs two independent kinds of work: per
// (kv head, key tile) it sums dk, dv over every query that sees the tile (all heads of the
// group), and per (head, query block) it sums dq. Each output row has exactly one writer, so
// parts need no locks; they share only a counter to take the next unit (largest first).
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

/// Orders units largest first (the same order in every part) and, for the fixed split,
/// assigns them longest-processing-time-first to the least loaded part.
static void plan_units(unit_t *units, int64_t n, int nparts, int64_t *load) {
    qsort(units, (size_t)n, sizeof *units, by_cost_desc);
    for (int p = 0; p < nparts; p++) load[p] = 0;
    for (int64_t i = 0; i < n; i++) {
        int best = 0;
        for (int p = 1; p < nparts; p++) if (load[p] < load[best]) best = p;
        units[i].owner = best;
        load[best] += units[i].cost + 1;
    }
}

/// The next unit this part runs, or -1. With a shared counter (`next`), parts take units in
/// order as they finish the previous one, so uneven costs or a part the OS delays do not leave
/// the others idle; without one, a part runs the units planned for it (*cursor walks them).
static int64_t take_unit(int64_t *next, int64_t *cursor, const unit_t *units, int64_t n, int part) {
    if (next) {
        int64_t i = __atomic_fetch_add(next, 1, __ATOMIC_RELAXED);
        return i < n ? i : -1;
    }
    while (*cursor < n && units[*cursor].owner != part) ++*cursor;
    return *cursor < n ? (*cursor)++ : -1;
}

/// Sum over t in [t0, t1) of the number of keys t sees.
static int64_t query_pairs(const int32_t *start, int64_t t0, int64_t t1) {
    int64_t c = 0;
    for (int64_t t = t0; t < t1; t++) c += t - start[t] + 1;
    return c;
}

// ---------------------------------------------------------------------------------------------
// Inner loops: small matrix products on register tiles. `vf` is 16 floats (one AVX-512
// register, two AVX2 registers, four SSE registers); clang's vector extension lets one source
// serve every instruction set. R query rows are processed together so every loaded key/value
// vector feeds R multiply-adds.
// ---------------------------------------------------------------------------------------------

typedef float vf __attribute__((vector_size(64)));               // aligned (scratch tiles)
typedef float vfu __attribute__((vector_size(64), aligned(4)));  // any float address
enum { VL = 16, R = 4 };

/// Transposes 16 rows of 16 floats in registers: four rounds of interleaving row i with row
/// i + 8 (each round is a perfect shuffle of the 256 elements; four of them transpose 16 x 16).
SFT_INLINE void transpose16(vf r[VL]) {
    for (int round = 0; round < 4; round++) {
        vf t[VL];
        for (int i = 0; i < 8; i++) {
            t[2 * i] = __builtin_shufflevector(r[i], r[i + 8], 0, 16, 1, 17, 2, 18, 3, 19, 4, 20,
                                               5, 21, 6, 22, 7, 23);
            t[2 * i + 1] = __builtin_shufflevector(r[i], r[i + 8], 8, 24, 9, 25, 10, 26, 11, 27,
                                                   12, 28, 13, 29, 14, 30, 15, 31);
        }
        for (int i = 0; i < VL; i++) r[i] = t[i];
    }
}

/// xt[d][j] = x[j][d] for j < n rows of a (n, D) slice with row stride ld; zero for j >= n.
/// With `wide` (AVX-512 two-source permutes), whole 16 x 16 blocks go through registers.
SFT_INLINE void transpose_tile(int wide, const float *restrict x, int64_t ld, int64_t n,
                               int64_t D, float *restrict xt) {
    int64_t d0 = 0;
    for (; wide && d0 + VL <= D; d0 += VL)
        for (int64_t j0 = 0; j0 < BK; j0 += VL) {
            vf r[VL];
            for (int i = 0; i < VL; i++)
                r[i] = j0 + i < n ? *(const vfu *)(x + (j0 + i) * ld + d0) : (vf){0};
            transpose16(r);
            for (int i = 0; i < VL; i++) *(vf *)(xt + (d0 + i) * BK + j0) = r[i];
        }
    for (int64_t d = d0; d < D; d++) {
        float *row = xt + d * BK;
        for (int64_t j = 0; j < n; j++) row[j] = x[j * ld + d];
        for (int64_t j = n; j < BK; j++) row[j] = 0;
    }
}

/// s[r][j] = alpha * sum_d a_r[d] xt[d][j]: (R, D) rows times a transposed (D, BK) tile,
/// with an R x CB block of the result in registers for the whole loop over d (CB = BK columns
/// when `wide`, i.e. 16 AVX-512 registers; 16 columns otherwise, 8 AVX2 registers).
SFT_INLINE void rows_times_tile(int wide, const float *const a[R], float alpha,
                                const float *restrict xt, int64_t D, float *restrict s) {
    const int CB = wide ? BK / VL : 1;   // vectors per row in one column block
    for (int c0 = 0; c0 < BK / VL; c0 += CB) {
        vf acc[R][BK / VL];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < CB; c++) acc[r][c] = (vf){0};
        for (int64_t d = 0; d < D; d++) {
            const vf *row = (const vf *)(xt + d * BK) + c0;
            for (int r = 0; r < R; r++) {
                const float ar = a[r][d];
                for (int c = 0; c < CB; c++) acc[r][c] += ar * row[c];
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < CB; c++) *(vf *)(s + r * BK + (c0 + c) * VL) = acc[r][c] * alpha;
    }
}

/// o_r[d] += sum_{j<n} w[r][j] x_j[d] for R rows, x_j = x + j ldx; w rows are BK apart.
/// (R, n) weights times (n, D) rows, D handled 64 (when wide), then 16, then 1 column at a time.
SFT_INLINE void accumulate_rows(int wide, float *const o[R], const float *restrict w,
                                const float *restrict x, int64_t ldx, int64_t n, int64_t D) {
    int64_t d0 = 0;
    for (; wide && d0 + 4 * VL <= D; d0 += 4 * VL) {
        vf acc[R][4];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) acc[r][c] = *(const vfu *)(o[r] + d0 + c * VL);
        for (int64_t j = 0; j < n; j++) {
            const float *xj = x + j * ldx + d0;
            vf xv[4];
            for (int c = 0; c < 4; c++) xv[c] = *(const vfu *)(xj + c * VL);
            for (int r = 0; r < R; r++) {
                const float wr = w[r * BK + j];
                for (int c = 0; c < 4; c++) acc[r][c] += wr * xv[c];
            }
        }
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) *(vfu *)(o[r] + d0 + c * VL) = acc[r][c];
    }
    for (; d0 + VL <= D; d0 += VL) {
        vf acc[R];
        for (int r = 0; r < R; r++) acc[r] = *(const vfu *)(o[r] + d0);
        for (int64_t j = 0; j < n; j++) {
            const vf xv = *(const vfu *)(x + j * ldx + d0);
            for (int r = 0; r < R; r++) acc[r] += w[r * BK + j] * xv;
        }
        for (int r = 0; r < R; r++) *(vfu *)(o[r] + d0) = acc[r];
    }
    for (; d0 < D; d0++)
        for (int r = 0; r < R; r++) {
            float acc = o[r][d0];
            for (int64_t j = 0; j < n; j++) acc += w[r * BK + j] * x[j * ldx + d0];
            o[r][d0] = acc;
        }
}

/// t[j][d] += sum_r w[r][j] x_r[d] for j < n: a rank-R update of a (BK, D) tile (rows D apart).
SFT_INLINE void tile_add_outer(int wide, float *restrict t, const float *restrict w,
                               const float *const x[R], int64_t n, int64_t D) {
    int64_t d0 = 0;
    for (; wide && d0 + 4 * VL <= D; d0 += 4 * VL) {
        vf xv[R][4];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < 4; c++) xv[r][c] = *(const vfu *)(x[r] + d0 + c * VL);
        for (int64_t j = 0; j < n; j++) {
            float *tj = t + j * D + d0;
            vf acc[4];
            for (int c = 0; c < 4; c++) acc[c] = *(vfu *)(tj + c * VL);
            for (int r = 0; r < R; r++) {
                const float wr = w[r * BK + j];
                for (int c = 0; c < 4; c++) acc[c] += wr * xv[r][c];
            }
            for (int c = 0; c < 4; c++) *(vfu *)(tj + c * VL) = acc[c];
        }
    }
    for (; d0 + VL <= D; d0 += VL) {
        vf xv[R];
        for (int r = 0; r < R; r++) xv[r] = *(const vfu *)(x[r] + d0);
        for (int64_t j = 0; j < n; j++) {
            vf acc = *(vfu *)(t + j * D + d0);
            for (int r = 0; r < R; r++) acc += w[r * BK + j] * xv[r];
            *(vfu *)(t + j * D + d0) = acc;
        }
    }
    for (; d0 < D; d0++)
        for (int64_t j = 0; j < n; j++) {
            float acc = t[j * D + d0];
            for (int r = 0; r < R; r++) acc += w[r * BK + j] * x[r][d0];
            t[j * D + d0] = acc;
        }
}

#pragma clang fp reassociate(on)
SFT_INLINE float dot(const float *restrict a, const float *restrict b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
#pragma clang fp reassociate(off)

/// Keys [jlo, jhi) of the tile starting at s0 that query t sees (empty when jlo >= jhi).
SFT_INLINE void visible(const int32_t *start, int64_t t, int64_t s0, int64_t s1, int64_t *jlo,
                        int64_t *jhi) {
    *jlo = (start[t] > s0 ? start[t] : s0) - s0;
    *jhi = (t + 1 < s1 ? t + 1 : s1) - s0;
}

/// 64-byte aligned scratch (vector tiles), rounded up to whole lines.
static void *scratch(size_t bytes) { return aligned_alloc(64, (bytes + 63) / 64 * 64); }

/// max(m, p[j] for j in [lo, hi)), in VL lanes so it vectorizes without fast-math.
SFT_INLINE float max_row(const float *restrict p, float m, int64_t lo, int64_t hi) {
    float lane[VL];
    for (int i = 0; i < VL; i++) lane[i] = m;
    for (int j0 = 0; j0 < BK; j0 += VL)
        for (int i = 0; i < VL; i++) {
            const int j = j0 + i;
            const float x = (j >= lo && j < hi) ? p[j] : m;
            lane[i] = x > lane[i] ? x : lane[i];
        }
    for (int i = 0; i < VL; i++) m = lane[i] > m ? lane[i] : m;
    return m;
}

#pragma clang fp reassociate(on)
/// p[j] = exp(p[j] - m) for j in [lo, hi), 0 for the rest of the BK row; returns the sum.
SFT_INLINE float exp_row(float *restrict p, float m, int64_t lo, int64_t hi) {
    float sum = 0;
    for (int j = 0; j < BK; j++) {
        const float e = (j >= lo && j < hi) ? sft_expf(p[j] - m) : 0.0f;
        p[j] = e;
        sum += e;
    }
    return sum;
}
#pragma clang fp reassociate(off)

/// Subtracts the ALiBi bias slope (t - s) from a row of scores of the tile starting at s0.
SFT_INLINE void alibi_row(float *restrict p, float slope, int64_t t, int64_t s0) {
    const float base = (float)(t - s0);
    for (int j = 0; j < BK; j++) p[j] -= slope * (base - (float)j);
}

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

SFT_INLINE int sft_attention_fwd_f32_impl(int wide, const float *q, int64_t ldq, const float *k,
                                          int64_t ldk, const float *v, int64_t ldv, float *o,
                                          int64_t ldo, float *lse, const int32_t *doc,
                                          const float *alibi, int64_t B, int64_t T, int64_t H,
                                          int64_t KV, int64_t D, float scale, int64_t *next,
                                          int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ, nunits = B * H * nqb;
    const int64_t Dp = (D + VL - 1) / VL * VL;   // accumulator rows padded to whole vectors
    size_t floats = (size_t)(D * BK + BQ * Dp + R * BK + Dp + 2 * BQ);
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t);
    char *mem = scratch(bytes);
    if (!mem) return sft_set_error("attention forward: cannot allocate %zu bytes of scratch", bytes);
    float *kt = (float *)mem, *acc = kt + D * BK, *p = acc + BQ * Dp, *junk = p + R * BK;
    float *m = junk + Dp, *l = m + BQ;
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
    plan_units(units, nunits, nparts, load);

    for (int64_t u, cursor = 0; (u = take_unit(next, &cursor, units, nunits, part)) >= 0;) {
        const int64_t b = units[u].b, h = units[u].head, g = h / G;
        const int64_t t0 = (int64_t)units[u].block * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
        const int32_t *st = start + b * T;
        const float slope = alibi ? alibi[h] : 0.0f;
        memset(acc, 0, (size_t)(BQ * Dp) * sizeof(float));
        for (int64_t i = 0; i < BQ; i++) { m[i] = -INFINITY; l[i] = 0; }

        for (int64_t s0 = st[t0]; s0 < t1; s0 += BK) {
            const int64_t s1 = s0 + BK < t1 ? s0 + BK : t1;
            transpose_tile(wide, k + (b * T + s0) * ldk + g * D, ldk, s1 - s0, D, kt);
            for (int64_t tg = t0; tg < t1; tg += R) {
                // R query rows at a time; rows past t1 read row tg and write to `junk`
                // (a second pointer to a real row would store a stale copy over it).
                const float *qr[R];
                float *orow[R];
                int64_t lo[R], hi[R], jmin = BK, jmax = 0;
                for (int r = 0; r < R; r++) {
                    const int64_t t = tg + r;
                    if (t < t1) visible(st, t, s0, s1, &lo[r], &hi[r]); else lo[r] = hi[r] = 0;
                    qr[r] = q + (b * T + (t < t1 ? t : tg)) * ldq + h * D;
                    orow[r] = t < t1 ? acc + (t - t0) * Dp : junk;
                    if (lo[r] < hi[r]) { jmin = lo[r] < jmin ? lo[r] : jmin; jmax = hi[r] > jmax ? hi[r] : jmax; }
                }
                if (jmin >= jmax) continue;
                rows_times_tile(wide, qr, scale, kt, D, p);
                for (int r = 0; r < R; r++) {
                    float *pr = p + r * BK;
                    if (lo[r] >= hi[r]) { memset(pr, 0, BK * sizeof(float)); continue; }
                    const int64_t i = tg + r - t0;
                    if (alibi) alibi_row(pr, slope, tg + r, s0);
                    const float mx = max_row(pr, m[i], lo[r], hi[r]);
                    const float corr = sft_expf(m[i] - mx);   // 0 on the first tile (m = -inf)
                    l[i] = l[i] * corr + exp_row(pr, mx, lo[r], hi[r]);
                    m[i] = mx;
                    if (corr != 1.0f)
                        for (int64_t d = 0; d < D; d++) orow[r][d] *= corr;
                }
                accumulate_rows(wide, orow, p + jmin, v + (b * T + s0 + jmin) * ldv + g * D, ldv,
                                jmax - jmin, D);
            }
        }
        for (int64_t t = t0; t < t1; t++) {
            const int64_t i = t - t0;
            const float inv = 1.0f / l[i];
            float *orow = o + (b * T + t) * ldo + h * D;
            for (int64_t d = 0; d < D; d++) orow[d] = acc[i * Dp + d] * inv;
            lse[(b * H + h) * T + t] = m[i] + logf(l[i]);
        }
    }
    free(mem);
    return 0;
}
SFT_DISPATCH_WIDE(int, sft_attention_fwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, float *o, int64_t ldo, float *lse, const int32_t *doc,
              const float *alibi, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
              float scale, int64_t *next, int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, B, T, H, KV, D, scale, next, part,
              nparts))

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

/// For R query rows against one key tile: p = exp(score - lse) and ds = scale p (dp - delta),
/// both zero outside each row's visible keys. s holds the scaled q·k scores, dp the do·v ones.
SFT_INLINE void probabilities(float *restrict s, float *restrict dp, const int64_t lo[R],
                              const int64_t hi[R], const float L[R], const float delta[R],
                              float slope, int64_t tg, int64_t s0, float scale) {
    for (int r = 0; r < R; r++) {
        float *pr = s + r * BK, *dr = dp + r * BK;
        if (slope != 0.0f) alibi_row(pr, slope, tg + r, s0);
        for (int j = 0; j < BK; j++) {
            const float p = (j >= lo[r] && j < hi[r]) ? sft_expf(pr[j] - L[r]) : 0.0f;
            pr[j] = p;
            dr[j] = p * (dr[j] - delta[r]) * scale;
        }
    }
}

SFT_INLINE int sft_attention_bwd_f32_impl(
    int wide, const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
    const float *o, int64_t ldo, const float *dout, int64_t lddo, const float *lse,
    const int32_t *doc, const float *alibi, float *dq, int64_t lddq, float *dk, int64_t lddk,
    float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
    float scale, int64_t *next, int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ, nkb = (T + BK - 1) / BK;
    const int64_t nunits = B * KV * nkb + B * H * nqb;
    const int64_t Dp = (D + VL - 1) / VL * VL;
    size_t floats = (size_t)(2 * D * BK + 2 * BK * Dp + BQ * Dp + 2 * R * BK + Dp + BQ);
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t);
    char *mem = scratch(bytes);
    if (!mem) return sft_set_error("attention backward: cannot allocate %zu bytes of scratch", bytes);
    float *kt = (float *)mem, *vt = kt + D * BK, *dkt = vt + D * BK, *dvt = dkt + BK * Dp;
    float *dqa = dvt + BK * Dp, *sc = dqa + BQ * Dp, *dp = sc + R * BK, *junk = dp + R * BK;
    float *delta = junk + Dp;
    int32_t *start = (int32_t *)(delta + BQ), *end = start + B * T;
    unit_t *units = (unit_t *)(end + B * T);
    int64_t *load = (int64_t *)(units + nunits);

    for (int64_t b = 0; b < B; b++) doc_bounds(doc ? doc + b * T : NULL, T, start + b * T, end + b * T);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *st = start + b * T, *en = end + b * T;
        // kind 0: (kv head g, key tile) -> dk, dv. Cost: queries seeing each key, 4 products.
        for (int64_t g = 0; g < KV; g++)
            for (int64_t kb = 0; kb < nkb; kb++, n++) {
                int64_t s0 = kb * BK, s1 = s0 + BK < T ? s0 + BK : T, c = 0;
                for (int64_t s = s0; s < s1; s++) c += en[s] - s;
                units[n] = (unit_t){4 * G * c, 0, (int32_t)b, (int32_t)g, (int32_t)kb, 0, (int32_t)n};
            }
        // kind 1: (head h, query block) -> dq. Cost: keys each query sees, 3 products.
        for (int64_t h = 0; h < H; h++)
            for (int64_t qb = 0; qb < nqb; qb++, n++) {
                int64_t t0 = qb * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
                units[n] = (unit_t){3 * query_pairs(st, t0, t1), 1, (int32_t)b, (int32_t)h,
                                    (int32_t)qb, 0, (int32_t)n};
            }
    }
    plan_units(units, nunits, nparts, load);

    for (int64_t u, cursor = 0; (u = take_unit(next, &cursor, units, nunits, part)) >= 0;) {
        const int64_t b = units[u].b;
        const int32_t *st = start + b * T, *en = end + b * T;
        if (units[u].kind == 0) {
            // dk, dv for keys [s0, s1) of kv head g: sum over every query row that sees them.
            const int64_t g = units[u].head, s0 = (int64_t)units[u].block * BK;
            const int64_t s1 = s0 + BK < T ? s0 + BK : T, nk = s1 - s0, tend = en[s1 - 1];
            transpose_tile(wide, k + (b * T + s0) * ldk + g * D, ldk, nk, D, kt);
            transpose_tile(wide, v + (b * T + s0) * ldv + g * D, ldv, nk, D, vt);
            memset(dkt, 0, (size_t)(2 * BK * Dp) * sizeof(float));   // dkt and dvt
            for (int64_t h = g * G; h < (g + 1) * G; h++) {
                const float slope = alibi ? alibi[h] : 0.0f;
                for (int64_t tg = s0; tg < tend; tg += R) {
                    const float *qr[R], *dor[R];
                    int64_t lo[R], hi[R];
                    float L[R], dl[R];
                    int any = 0;
                    for (int r = 0; r < R; r++) {
                        const int64_t t = tg + r < tend ? tg + r : tg;
                        if (tg + r < tend) visible(st, t, s0, s1, &lo[r], &hi[r]); else lo[r] = hi[r] = 0;
                        any |= lo[r] < hi[r];
                        qr[r] = q + (b * T + t) * ldq + h * D;
                        dor[r] = dout + (b * T + t) * lddo + h * D;
                        L[r] = lse[(b * H + h) * T + t];
                        dl[r] = lo[r] < hi[r] ? dot(dor[r], o + (b * T + t) * ldo + h * D, D) : 0;
                    }
                    if (!any) continue;
                    rows_times_tile(wide, qr, scale, kt, D, sc);
                    rows_times_tile(wide, dor, 1.0f, vt, D, dp);
                    probabilities(sc, dp, lo, hi, L, dl, slope, tg, s0, scale);
                    tile_add_outer(wide, dvt, sc, dor, nk, D);   // dv_s += p do_t
                    tile_add_outer(wide, dkt, dp, qr, nk, D);    // dk_s += scale ds q_t
                }
            }
            for (int64_t j = 0; j < nk; j++) {
                memcpy(dk + (b * T + s0 + j) * lddk + g * D, dkt + j * D, (size_t)D * sizeof(float));
                memcpy(dv + (b * T + s0 + j) * lddv + g * D, dvt + j * D, (size_t)D * sizeof(float));
            }
        } else {
            // dq for queries [t0, t1) of head h: sum over the keys they see.
            const int64_t h = units[u].head, g = h / G, t0 = (int64_t)units[u].block * BQ;
            const int64_t t1 = t0 + BQ < T ? t0 + BQ : T;
            const float slope = alibi ? alibi[h] : 0.0f;
            for (int64_t t = t0; t < t1; t++)
                delta[t - t0] = dot(dout + (b * T + t) * lddo + h * D, o + (b * T + t) * ldo + h * D, D);
            memset(dqa, 0, (size_t)(BQ * Dp) * sizeof(float));
            for (int64_t s0 = st[t0]; s0 < t1; s0 += BK) {
                const int64_t s1 = s0 + BK < t1 ? s0 + BK : t1;
                transpose_tile(wide, k + (b * T + s0) * ldk + g * D, ldk, s1 - s0, D, kt);
                transpose_tile(wide, v + (b * T + s0) * ldv + g * D, ldv, s1 - s0, D, vt);
                for (int64_t tg = t0; tg < t1; tg += R) {
                    const float *qr[R], *dor[R];
                    float *dqr[R];
                    int64_t lo[R], hi[R], jmin = BK, jmax = 0;
                    float L[R], dl[R];
                    for (int r = 0; r < R; r++) {
                        const int64_t t = tg + r < t1 ? tg + r : tg;
                        if (tg + r < t1) visible(st, t, s0, s1, &lo[r], &hi[r]); else lo[r] = hi[r] = 0;
                        if (lo[r] < hi[r]) { jmin = lo[r] < jmin ? lo[r] : jmin; jmax = hi[r] > jmax ? hi[r] : jmax; }
                        qr[r] = q + (b * T + t) * ldq + h * D;
                        dor[r] = dout + (b * T + t) * lddo + h * D;
                        // rows past t1 add zeros into `junk` (never into a real row: the
                        // kernel loads all R rows before storing them)
                        dqr[r] = tg + r < t1 ? dqa + (t - t0) * Dp : junk;
                        L[r] = lse[(b * H + h) * T + t];
                        dl[r] = delta[t - t0];
                    }
                    if (jmin >= jmax) continue;
                    rows_times_tile(wide, qr, scale, kt, D, sc);
                    rows_times_tile(wide, dor, 1.0f, vt, D, dp);
                    probabilities(sc, dp, lo, hi, L, dl, slope, tg, s0, scale);
                    accumulate_rows(wide, dqr, dp + jmin, k + (b * T + s0 + jmin) * ldk + g * D, ldk,
                                    jmax - jmin, D);   // dq_t += scale ds k_s
                }
            }
            for (int64_t t = t0; t < t1; t++)
                memcpy(dq + (b * T + t) * lddq + h * D, dqa + (t - t0) * Dp, (size_t)D * sizeof(float));
        }
    }
    free(mem);
    return 0;
}
SFT_DISPATCH_WIDE(int, sft_attention_bwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, const float *o, int64_t ldo, const float *dout, int64_t lddo,
              const float *lse, const int32_t *doc, const float *alibi, float *dq, int64_t lddq,
              float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H,
              int64_t KV, int64_t D, float scale, int64_t *next, int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, dq, lddq, dk, lddk, dv,
              lddv, B, T, H, KV, D, scale, next, part, nparts))
