// Causal self-attention on CPU with GQA, packed documents and optional ALiBi; forward and
// backward, the FlashAttention way (Dao et al. 2022): no T×T matrix is ever stored.
//
//   x(t, s)     = scale * q_t · k_s,   y = cap tanh(x / cap) with a softcap (Gemma 2), else x
//   score(t, s) = y - slope_h (t - s)                      for s in doc(t), t - window < s <= t
//   p(t, s)     = exp(score - lse_t),  lse_t = log sum_s exp(score(t, s))
//   o_t         = sum_s p(t, s) v_s
// Backward, with delta_t = do_t · o_t and dp = do_t · v_s:
//   ds = p (dp - delta_t) dy/dx,  dy/dx = 1 - (y / cap)^2 (1 without a softcap);
//   dq_t += scale ds k_s;  dk_s += scale ds q_t;  dv_s += p do_t
//
// Forward walks each block of BQ query rows over tiles of BK keys with an online softmax
// (running max m, running sum l, output accumulator rescaled when m grows), scores kept
// transposed so that 16 rows share a vector (see the Forward section). Backward recomputes p
// from the saved lse once per (query row, key) and runs all five products on it, per kv head
// and run of key tiles (see the Backward section). Every product is a small matrix product on
// a block of vectors held in registers for its whole inner loop, written once with clang's
// vector extension for every instruction set (`wide` picks the register blocking for
// AVX-512's 32 registers). Parts share only a counter to take the next unit (largest first).
//
// bf16 (mixed precision): sft_attention_fwd_bf16 / _bwd_bf16 are this kernel with q, k, v, o read
// as bf16 (widened as each tile is loaded) and o rounded as stored. The bf16 forward also rounds
// P to bf16 (nearest even) for O = P V, as FlashAttention does and as the CUDA backend does: p is
// exp(score - m) against the running max m of the row at that key tile (BK aligned keys), and
// the softmax statistics (m, l, lse) are the f32 kernel's, from the unrounded p. The backward is
// the f32 kernel's on the widened values (the gradient of the unrounded softmax, as
// FlashAttention's). Their reference: Ref.attentionRoundedP in the tests (the f32 kernel on the
// widened values for lse and the backward). Where the CPU has AVX512_BF16 (the bf16 GEMM's
// variant is avx512bf16) and D is even, the forward's products run on vdpbf16ps (see "The
// forward's products with vdpbf16ps"): the same semantics, S differs only in summation order.
//
// Documents are the maximal runs of equal ids in `doc`: a query sees keys from the start of its
// run (or of its sliding window, when later), so tiles before that start are never touched.
#include "cpu.h"
#include <stdlib.h>

enum { BQ = 64, BK = 64 };

/// For one row of doc ids: start[t], the first key query t sees (its document's first token,
/// or t - window + 1 when later), and end[s], one past the last query that sees key s (its
/// document's end, or s + window when earlier). window <= 0: no window. Both are
/// non-decreasing in t, which the tile loops below rely on.
static void doc_bounds(const int32_t *doc, int64_t T, int64_t window, int32_t *start, int32_t *end) {
    int32_t s = 0, e = (int32_t)T;
    for (int64_t t = 0; t < T; t++) {
        if (doc && t > 0 && doc[t] != doc[t - 1]) s = (int32_t)t;
        start[t] = window > 0 && t - window + 1 > s ? (int32_t)(t - window + 1) : s;
    }
    for (int64_t t = T - 1; t >= 0; t--) {
        if (doc && t < T - 1 && doc[t] != doc[t + 1]) e = (int32_t)(t + 1);
        end[t] = window > 0 && t + window < e ? (int32_t)(t + window) : e;
    }
}

// ---------------------------------------------------------------------------------------------
// Work units and their assignment to parts
// ---------------------------------------------------------------------------------------------

/// A unit of work: forward (b, head h, query block), backward (b, kv head, run of key tiles).
typedef struct {
    int64_t cost;
    int32_t b, head, block, owner, index;
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
// Vectors. `vf` is 16 floats (one AVX-512 register, two AVX2 registers, four SSE registers);
// clang's vector extension lets one source serve every instruction set. Every product below
// keeps a block of vector accumulators in registers for its whole inner loop, where each
// loaded vector and each broadcast element feed several multiply-adds (R = 4 query rows at a
// time in the backward's row-major products).
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

typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));
typedef uint16_t vhu __attribute__((vector_size(32), aligned(2)));   // 16 bf16 at any address
// Helpers below pass 64-byte vectors by value; they are always inlined, so the calling
// convention clang warns about for the non-AVX-512 variants never applies.
#pragma clang diagnostic ignored "-Wpsabi"

// ---------------------------------------------------------------------------------------------
// Element types. q, k, v and o are f32, or bf16 in the mixed-precision entry points (`bf`: a
// constant in every compiled kernel, so the tests below fold away). bf16 values are widened
// exactly to f32 as a tile is loaded (never a whole tensor) and o is rounded to nearest even
// as it is stored; everything in between (scores, max, sums, lse, p, dS) is the f32 kernel's,
// except that the forward rounds P to bf16 for O = P V (the sum l keeps the unrounded p).
// ---------------------------------------------------------------------------------------------

/// The address of element i of an operand of element type f32 or bf16.
SFT_INLINE const void *elem_at(int bf, const void *p, int64_t i) {
    return (const char *)p + i * (bf ? 2 : 4);
}
/// Element i as f32.
SFT_INLINE float elem(int bf, const void *p, int64_t i) {
    return bf ? sft_bf16_load(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
/// Elements [i, i + 16) as f32 (any alignment).
SFT_INLINE vf vload(int bf, const void *p, int64_t i) {
    if (!bf) return *(const vfu *)((const float *)p + i);
    return (vf)(__builtin_convertvector(*(const vhu *)((const uint16_t *)p + i), vu) << 16);
}
/// Stores x to element i (rounded to nearest even when bf16, NaN kept a quiet NaN).
SFT_INLINE void elem_store(int bf, void *p, int64_t i, float x) {
    if (bf) ((uint16_t *)p)[i] = sft_bf16_round(x);
    else ((float *)p)[i] = x;
}
/// The bf16 bits of the 16 lanes of x (rounded as sft_bf16_round), in the low halves of words.
SFT_INLINE vu vround_bf16(vf x) {
    const vu u = (vu)x, rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    const vu isnan = (vu)((vi)(u & 0x7fffffffu) > 0x7f800000);
    return (rounded & ~isnan) | (nan & isnan);
}
/// x rounded to bf16 (as vround_bf16), as f32.
SFT_INLINE vf vbf16_rounded(vf x) { return (vf)(vround_bf16(x) << 16); }
/// Stores the 16 lanes of x to elements [i, i + 16), rounded as elem_store.
SFT_INLINE void vstore(int bf, void *p, int64_t i, vf x) {
    if (bf) *(vhu *)((uint16_t *)p + i) = __builtin_convertvector(vround_bf16(x), vhu);
    else *(vfu *)((float *)p + i) = x;
}

/// xt[d][j] = alpha x[j][d] for j < n rows of a (n, D) slice with row stride ld; zero for
/// j >= n. With `wide` (AVX-512 two-source permutes), whole 16 x 16 blocks go through registers.
SFT_INLINE void transpose_tile(int wide, int bf, const void *restrict x, int64_t ld, int64_t n,
                               int64_t D, float alpha, float *restrict xt) {
    int64_t d0 = 0;
    for (; wide && d0 + VL <= D; d0 += VL)
        for (int64_t j0 = 0; j0 < BK; j0 += VL) {
            vf r[VL];
            for (int i = 0; i < VL; i++)
                r[i] = j0 + i < n ? vload(bf, x, (j0 + i) * ld + d0) : (vf){0};
            transpose16(r);
            for (int i = 0; i < VL; i++) *(vf *)(xt + (d0 + i) * BK + j0) = r[i] * alpha;
        }
    for (int64_t d = d0; d < D; d++) {
        float *row = xt + d * BK;
        for (int64_t j = 0; j < n; j++) row[j] = alpha * elem(bf, x, j * ld + d);
        for (int64_t j = n; j < BK; j++) row[j] = 0;
    }
}

/// dst (n rows of D floats) = the n rows of a bf16 slice (rows ld apart), widened: the bf16
/// forward's K and V tiles, converted once per tile.
SFT_INLINE void widen_tile(const uint16_t *restrict x, int64_t ld, int64_t n, int64_t D,
                           float *restrict dst) {
    for (int64_t j = 0; j < n; j++) sft_bf16_widen(x + j * ld, dst + j * D, D);
}

SFT_INLINE vf vsplat(float x) { return (vf){0} + x; }
/// a where m is set (all ones), b where it is clear.
SFT_INLINE vf vsel(vi m, vf a, vf b) { return (vf)(((vi)a & m) | ((vi)b & ~m)); }
SFT_INLINE vf vmaxf(vf a, vf b) { return vsel(a > b, a, b); }
SFT_INLINE vf vminf(vf a, vf b) { return vsel(a < b, a, b); }
static const vf lane_index = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/// exp(r) for |r| <= ln2/2: a degree-6 polynomial fitted for relative error on that interval
/// (1.1e-7 in float arithmetic). A macro, as it is shared with a function of another target.
#define SFT_EXP_REDUCED(r)                                                                     \
    ((((((0.0013843650231137872f * (r) + 0.008374156430363655f) * (r) +                       \
         0.04166800156235695f) * (r) + 0.16666431725025177f) * (r) + 0.4999999403953552f) *    \
      (r) + 1.0f) * (r) + 1.0f)

#if SFT_HAS_VARIANTS
#include <immintrin.h>
/// vexp with AVX-512's vrndscaleps and vscalefps (2^n applied in one instruction; a large n
/// gives inf, so only the lower clamp is needed: below -104, 2^n p underflows to exactly 0).
/// Not always_inline, and vectors passed by address: it may only be inlined into (and its
/// 64-byte vectors only passed by value within) the AVX-512 variants.
SFT_TARGET_AVX512 static inline void vexp_avx512(const vf *x, vf *y) {
    const __m512 xc = _mm512_max_ps((__m512)*x, _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vf r = (vf)xc - (vf)n * 0.693145751953125f;   // ln2 in two parts, so n * ln2 is exact
    r = r - (vf)n * 1.428606765330187045e-06f;
    *y = (vf)_mm512_scalef_ps((__m512)SFT_EXP_REDUCED(r), n);
}
#endif

/// exp on 16 lanes: x = n ln2 + r with |r| <= ln2/2, exp(r) by SFT_EXP_REDUCED, 2^n applied by
/// vscalefps with AVX-512 (`wide`) and otherwise built in the exponent bits: n rounded by the
/// 1.5 * 2^23 trick, which also leaves n in the low bits of t. There inputs are clamped to
/// [-88, 88]: below -87.68 n is -127, whose exponent bits make 2^n exactly 0. Either way masked
/// scores (-1e30) and -inf give exactly 0.
SFT_INLINE vf vexp(int wide, vf x) {
#if SFT_HAS_VARIANTS
    if (wide) {
        vf y;
        vexp_avx512(&x, &y);
        return y;
    }
#endif
    x = vminf(vmaxf(x, vsplat(-88.0f)), vsplat(88.0f));
    const vf t = x * 1.44269504088896341f + 12582912.0f;
    const vf n = t - 12582912.0f;
    vf r = x - n * 0.693145751953125f;
    r = r - n * 1.428606765330187045e-06f;
    const vi e = ((vi)t - (0x4B400000 - 127)) << 23;
    return SFT_EXP_REDUCED(r) * (vf)e;
}

/// cap tanh(x / cap) on 16 lanes (attention-logit softcapping), with tanh(y) = 1 - 2 / (e^2y + 1):
/// exact at both ends (e^2y overflowing to inf, or 0), absolute error about cap · 1e-7 near 0.
SFT_INLINE vf vsoftcap(int wide, vf x, float cap) {
    return cap - (2.0f * cap) / (vexp(wide, x * (2.0f / cap)) + 1.0f);
}

#pragma clang fp reassociate(on)
SFT_INLINE float dot(const float *restrict a, int bf, const void *restrict b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * elem(bf, b, i);
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

/// Asks for the cache lines of the n bytes at x.
SFT_INLINE void prefetch_row(const void *x, int64_t n) {
    const char *p = (const char *)x, *e = p + n;
    for (p -= (uintptr_t)p % 64; p < e; p += 64) __builtin_prefetch(p);
}

/// dst[0, n) = alpha src[0, n) (0 when src is NULL; src f32, or bf16 when bf) and
/// dst[n, np) = 0: rows of q, dO, dq, dk, with the softmax scale applied on the way where due.
SFT_INLINE void copy_row(float *restrict dst, int bf, const void *restrict src, int64_t n, int64_t np,
                         float alpha) {
    int64_t i = 0;
    if (src)
        for (; i < n; i++) dst[i] = alpha * elem(bf, src, i);
    for (; i < np; i++) dst[i] = 0.0f;
}

// ---------------------------------------------------------------------------------------------
// Forward
//
// A unit is (b, h, block of BQ query rows). Scores are kept transposed, st[j][r] for key j of
// the tile and row r of the block, so a vector holds 16 rows: the running max, the running sum
// and the output rescaling are vertical operations on (BQ / 16) vectors, with no horizontal
// sums. st = K_tile Q^T takes each key's elements as broadcasts against rows of Q^T (D, BQ),
// built once per unit; o^T (D, BQ) += V_tile^T P^T takes value elements as broadcasts against
// rows of P^T. K and V are read in place, so no tile is transposed.
// ---------------------------------------------------------------------------------------------

enum { NRV = BQ / VL };   // row vectors of a block

/// st[j][rv] = sum_{d<D} k_j[d] qt[d][rv] for JN keys from kj (rows ldk apart) and the row
/// vectors [RV0, RV1): a JN x (RV1 - RV0) block of vectors in registers for the loop over d.
/// With mx, also mx[rv] = max(mx[rv], st[j][rv]) over the block's keys.
SFT_INLINE void fwd_scores_blk(const float *restrict kj, int64_t ldk, const float *restrict qt,
                               int64_t D, int JN, int RV0, int RV1, float *restrict st,
                               vf *restrict mx) {
    vf acc[6][NRV];
    for (int jj = 0; jj < JN; jj++)
        for (int rv = RV0; rv < RV1; rv++) acc[jj][rv] = (vf){0};
    for (int64_t d = 0; d < D; d++) {
        const vf *qrow = (const vf *)(qt + d * BQ);
        for (int jj = 0; jj < JN; jj++) {
            const float kv = kj[jj * ldk + d];
            for (int rv = RV0; rv < RV1; rv++) acc[jj][rv] += kv * qrow[rv];
        }
    }
    for (int jj = 0; jj < JN; jj++)
        for (int rv = RV0; rv < RV1; rv++) *(vf *)(st + jj * BQ + rv * VL) = acc[jj][rv];
    if (mx)
        for (int rv = RV0; rv < RV1; rv++) {
            vf m = mx[rv];
            for (int jj = 0; jj < JN; jj++) m = vmaxf(m, acc[jj][rv]);
            mx[rv] = m;
        }
}

/// Scores of keys [0, jend) of a tile (rows of k, ldk apart) against the row vectors [0, nrv)
/// of the block's Q^T. On the diagonal tile (`diag`: the tile starts at the block's first row)
/// a key j is seen by no row before j, so row vectors below j / 16 are skipped (and never read
/// afterwards). Keys go 6 at a time with AVX-512 (4 otherwise); a last group of fewer keys is
/// copied to kpad with zero rows after it (rows past T may be past the end of k), and st gets
/// scores for those zero rows too, which no one reads. With mx (tiles without masking), the
/// running max of each row vector is updated on the way.
SFT_INLINE void fwd_scores(int wide, const float *k, int64_t ldk, const float *qt, int64_t D,
                           int64_t jend, int diag, int nrv, float *st, vf *mx, float *kpad) {
    const int JW = wide ? 6 : 4;
    for (int64_t j0 = 0; j0 < jend;) {
        const int rv0 = diag ? (int)(j0 / VL) : 0;
        const float *kj = k + j0 * ldk;
        int64_t lk = ldk;
        int jn = JW;
        float *s = st + j0 * BQ;
        if (wide && j0 + 4 == jend) {
            jn = 4;   // e.g. the last 4 of 64 keys
        } else if (j0 + JW > jend) {
            for (int jj = 0; jj < JW; jj++)
                for (int64_t d = 0; d < D; d++) kpad[jj * D + d] = j0 + jj < jend ? kj[jj * ldk + d] : 0.0f;
            kj = kpad, lk = D;
        }
        if (wide && nrv == NRV) {
            switch (rv0 * 2 + (jn == 6)) {
            case 0: fwd_scores_blk(kj, lk, qt, D, 4, 0, NRV, s, mx); break;
            case 1: fwd_scores_blk(kj, lk, qt, D, 6, 0, NRV, s, mx); break;
            case 2: fwd_scores_blk(kj, lk, qt, D, 4, 1, NRV, s, mx); break;
            case 3: fwd_scores_blk(kj, lk, qt, D, 6, 1, NRV, s, mx); break;
            case 4: fwd_scores_blk(kj, lk, qt, D, 4, 2, NRV, s, mx); break;
            case 5: fwd_scores_blk(kj, lk, qt, D, 6, 2, NRV, s, mx); break;
            case 6: fwd_scores_blk(kj, lk, qt, D, 4, 3, NRV, s, mx); break;
            default: fwd_scores_blk(kj, lk, qt, D, 6, 3, NRV, s, mx); break;
            }
        } else {   // a partial block (or no AVX-512): one row vector at a time
            for (int rv = rv0; rv < nrv; rv++) {
                if (jn == 6) fwd_scores_blk(kj, lk, qt, D, 6, rv, rv + 1, s, mx);
                else fwd_scores_blk(kj, lk, qt, D, 4, rv, rv + 1, s, mx);
            }
        }
        j0 += jn;
    }
}

/// ot[d][rv] = ot[d][rv] (* corr[rv] when corr) + sum_{j in [ja, jb)} v_j[d] pt[j][rv] for the
/// ND columns from d0 and row vectors [RV0, RV1); v rows ldv apart.
SFT_INLINE void fwd_pv_blk(float *restrict ot, const float *restrict v, int64_t ldv,
                           const float *restrict pt, int64_t d0, int ND, int RV0, int RV1,
                           int64_t ja, int64_t jb, const vf *corr) {
    vf acc[6][NRV];
    for (int dd = 0; dd < ND; dd++)
        for (int rv = RV0; rv < RV1; rv++) {
            acc[dd][rv] = *(const vf *)(ot + (d0 + dd) * BQ + rv * VL);
            if (corr) acc[dd][rv] *= corr[rv];
        }
    for (int64_t j = ja; j < jb; j++) {
        const vf *prow = (const vf *)(pt + j * BQ);
        for (int dd = 0; dd < ND; dd++) {
            const float vv = v[j * ldv + d0 + dd];
            for (int rv = RV0; rv < RV1; rv++) acc[dd][rv] += vv * prow[rv];
        }
    }
    for (int dd = 0; dd < ND; dd++)
        for (int rv = RV0; rv < RV1; rv++) *(vf *)(ot + (d0 + dd) * BQ + rv * VL) = acc[dd][rv];
}

/// o^T (D, BQ) = o^T * corr + V^T P^T for keys [ja, jb) and row vectors [RV0, nrv) (corr
/// NULL: no rescaling). With AVX-512 and a whole block, 6 columns x the row vectors at a time,
/// then the last D % 6 columns together; otherwise 6 (AVX-512) or 4 columns x one row vector,
/// then single columns.
SFT_INLINE void fwd_pv(int wide, float *ot, const float *v, int64_t ldv, const float *pt,
                       int64_t D, int RV0, int nrv, int64_t ja, int64_t jb, const vf *corr) {
    int64_t d0 = 0;
    if (wide && nrv == NRV) {
#define PV_RV(ND)                                                                              \
    switch (RV0) {                                                                             \
    case 0: fwd_pv_blk(ot, v, ldv, pt, d0, ND, 0, NRV, ja, jb, corr); break;                  \
    case 1: fwd_pv_blk(ot, v, ldv, pt, d0, ND, 1, NRV, ja, jb, corr); break;                  \
    case 2: fwd_pv_blk(ot, v, ldv, pt, d0, ND, 2, NRV, ja, jb, corr); break;                  \
    default: fwd_pv_blk(ot, v, ldv, pt, d0, ND, 3, NRV, ja, jb, corr); break;                 \
    }
        for (; d0 + 6 <= D; d0 += 6) PV_RV(6)
        switch (D - d0) {
        case 1: PV_RV(1) break;
        case 2: PV_RV(2) break;
        case 3: PV_RV(3) break;
        case 4: PV_RV(4) break;
        case 5: PV_RV(5) break;
        default: break;
        }
#undef PV_RV
        return;
    }
    for (int rv = RV0; rv < nrv; rv++) {
        d0 = 0;
        if (wide)
            for (; d0 + 6 <= D; d0 += 6) fwd_pv_blk(ot, v, ldv, pt, d0, 6, rv, rv + 1, ja, jb, corr);
        for (; d0 + 4 <= D; d0 += 4) fwd_pv_blk(ot, v, ldv, pt, d0, 4, rv, rv + 1, ja, jb, corr);
        for (; d0 < D; d0++) fwd_pv_blk(ot, v, ldv, pt, d0, 1, rv, rv + 1, ja, jb, corr);
    }
}

/// o rows: o_i[d] = ot[d][i] * inv[i] for the block's nr rows; 16 x 16 blocks of o^T through
/// registers with AVX-512, the rest element by element.
SFT_INLINE void write_rows(int wide, int bf, const float *restrict ot, const float *restrict inv,
                           int64_t nr, int64_t D, void *restrict o, int64_t ldo) {
    int64_t d0 = 0;
    for (; wide && d0 + VL <= D; d0 += VL)
        for (int64_t i0 = 0; i0 < nr; i0 += VL) {
            vf r[VL];
            for (int i = 0; i < VL; i++) r[i] = *(const vf *)(ot + (d0 + i) * BQ + i0);
            transpose16(r);
            for (int i = 0; i < VL && i0 + i < nr; i++)
                vstore(bf, o, (i0 + i) * ldo + d0, r[i] * inv[i0 + i]);
        }
    for (; d0 < D; d0++)
        for (int64_t i = 0; i < nr; i++) elem_store(bf, o, i * ldo + d0, ot[d0 * BQ + i] * inv[i]);
}

// ---------------------------------------------------------------------------------------------
// The forward's products with vdpbf16ps (AVX512_BF16; bf16 inputs, even D). The instruction
// multiplies pairs of bf16 — one 32-bit word (x[2p], x[2p + 1]), the lower index in the low
// half — and adds both products to an f32 lane, so each product is laid out in pairs along its
// sum: S = K Q^T sums over d, with Q^T packed as pairs of columns (qt2: D/2 rows of BQ words)
// and each key's word broadcast straight from its bf16 row; O^T += V^T P^T sums over keys, with
// P (rounded to bf16 by the softmax, as in every bf16 forward) packed into pairs of keys (pt2:
// BK/2 rows of BQ words) and V^T packed as pairs of keys (vt2: D rows of BK/2 words). Products
// of two bf16 are exact in f32 and the sums are f32, so S and O differ from the widening
// kernel's only in summation order. These functions carry the instruction's target and are not
// inlined into the other variants (see sft_attention_fwd_bf16 below for when they run).
// ---------------------------------------------------------------------------------------------

/// One 32-bit word from two consecutive bf16 (any alignment).
SFT_INLINE uint32_t pair_at(const uint16_t *x) {
    uint32_t w;
    memcpy(&w, x, 4);
    return w;
}

/// qt2[p][i] = (q_i[2p], q_i[2p + 1]) for the block's nr rows (rows ldq apart), 0 for i >= nr.
SFT_INLINE void pack_q_pairs(const uint16_t *restrict q, int64_t ldq, int64_t nr, int64_t D,
                             uint32_t *restrict qt2) {
    for (int64_t i = 0; i < BQ; i++)
        for (int64_t p = 0; p < D / 2; p++) qt2[p * BQ + i] = i < nr ? pair_at(q + i * ldq + 2 * p) : 0;
}

/// vt2[d][p] = (v_2p[d], v_2p+1[d]) for the tile's keys [0, n) (rows ldv apart), 0 past n.
SFT_INLINE void pack_v_pairs(const uint16_t *restrict v, int64_t ldv, int64_t n, int64_t D,
                             uint32_t *restrict vt2) {
    for (int64_t p = 0; p < (n + 1) / 2; p++) {
        const uint16_t *v0 = v + 2 * p * ldv, *v1 = v0 + ldv;
        const int two = 2 * p + 1 < n;
        for (int64_t d = 0; d < D; d++) vt2[d * (BK / 2) + p] = v0[d] | (two ? (uint32_t)v1[d] << 16 : 0u);
    }
}

/// pt2[p][rv] = P^T rows 2p and 2p + 1 (0 past n), already rounded to bf16, paired as bf16
/// bits, for row vectors [0, nrv).
SFT_INLINE void pack_p_pairs(const float *restrict pt, int64_t n, int nrv, uint32_t *restrict pt2) {
    for (int64_t p = 0; p < (n + 1) / 2; p++)
        for (int rv = 0; rv < nrv; rv++) {
            const vu lo = *(const vu *)(pt + 2 * p * BQ + rv * VL) >> 16;
            const vu hi = 2 * p + 1 < n ? *(const vu *)(pt + (2 * p + 1) * BQ + rv * VL) >> 16 : (vu){0};
            *(vu *)(pt2 + p * BQ + rv * VL) = lo | hi << 16;
        }
}

#if SFT_HAS_VARIANTS
#define SFT_TARGET_AVX512BF16 \
    __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c,avx512bf16")))

/// fwd_scores_blk with vdpbf16ps: st[j][rv] = scale sum_p k_j[2p, 2p+1] . qt2[p][rv].
SFT_TARGET_AVX512BF16 SFT_INLINE void fwd_scores_dp_blk(const uint16_t *restrict kj, int64_t ldk, const uint32_t *restrict qt2,
                                  int64_t D, int JN, int RV0, int RV1, float scale, float *restrict st,
                                  vf *restrict mx) {
    __m512 acc[6][NRV];
    for (int jj = 0; jj < JN; jj++)
        for (int rv = RV0; rv < RV1; rv++) acc[jj][rv] = _mm512_setzero_ps();
    for (int64_t p = 0; p < D / 2; p++) {
        const __m512i *qrow = (const __m512i *)(qt2 + p * BQ);
        for (int jj = 0; jj < JN; jj++) {
            const __m512bh kw = (__m512bh)_mm512_set1_epi32((int)pair_at(kj + jj * ldk + 2 * p));
            for (int rv = RV0; rv < RV1; rv++) acc[jj][rv] = _mm512_dpbf16_ps(acc[jj][rv], (__m512bh)qrow[rv], kw);
        }
    }
    for (int jj = 0; jj < JN; jj++)
        for (int rv = RV0; rv < RV1; rv++) *(vf *)(st + jj * BQ + rv * VL) = (vf)acc[jj][rv] * scale;
    if (mx)
        for (int rv = RV0; rv < RV1; rv++) {
            __m512 m = (__m512)mx[rv];
            for (int jj = 0; jj < JN; jj++) m = _mm512_max_ps(m, (__m512)((vf)acc[jj][rv] * scale));
            mx[rv] = (vf)m;
        }
}

/// fwd_scores with vdpbf16ps (the same schedule; kpad: 6 rows of D bf16).
SFT_TARGET_AVX512BF16 static void fwd_scores_dp(const uint16_t *k, int64_t ldk, const uint32_t *qt2,
                                                int64_t D, int64_t jend, int diag, int nrv, float scale,
                                                float *st, vf *mx, uint16_t *kpad) {
    for (int64_t j0 = 0; j0 < jend;) {
        const int rv0 = diag ? (int)(j0 / VL) : 0;
        const uint16_t *kj = k + j0 * ldk;
        int64_t lk = ldk;
        int jn = 6;
        float *s = st + j0 * BQ;
        if (j0 + 4 == jend) {
            jn = 4;
        } else if (j0 + 6 > jend) {
            for (int jj = 0; jj < 6; jj++)
                for (int64_t d = 0; d < D; d++) kpad[jj * D + d] = j0 + jj < jend ? kj[jj * ldk + d] : 0;
            kj = kpad, lk = D;
        }
        if (nrv == NRV) {
            switch (rv0 * 2 + (jn == 6)) {
            case 0: fwd_scores_dp_blk(kj, lk, qt2, D, 4, 0, NRV, scale, s, mx); break;
            case 1: fwd_scores_dp_blk(kj, lk, qt2, D, 6, 0, NRV, scale, s, mx); break;
            case 2: fwd_scores_dp_blk(kj, lk, qt2, D, 4, 1, NRV, scale, s, mx); break;
            case 3: fwd_scores_dp_blk(kj, lk, qt2, D, 6, 1, NRV, scale, s, mx); break;
            case 4: fwd_scores_dp_blk(kj, lk, qt2, D, 4, 2, NRV, scale, s, mx); break;
            case 5: fwd_scores_dp_blk(kj, lk, qt2, D, 6, 2, NRV, scale, s, mx); break;
            case 6: fwd_scores_dp_blk(kj, lk, qt2, D, 4, 3, NRV, scale, s, mx); break;
            default: fwd_scores_dp_blk(kj, lk, qt2, D, 6, 3, NRV, scale, s, mx); break;
            }
        } else {
            for (int rv = rv0; rv < nrv; rv++) {
                if (jn == 6) fwd_scores_dp_blk(kj, lk, qt2, D, 6, rv, rv + 1, scale, s, mx);
                else fwd_scores_dp_blk(kj, lk, qt2, D, 4, rv, rv + 1, scale, s, mx);
            }
        }
        j0 += jn;
    }
}

/// fwd_pv_blk with vdpbf16ps over the key pairs [pa, pb).
SFT_TARGET_AVX512BF16 SFT_INLINE void fwd_pv_dp_blk(float *restrict ot, const uint32_t *restrict vt2, const uint32_t *restrict pt2,
                              int64_t d0, int ND, int RV0, int RV1, int64_t pa, int64_t pb, const vf *corr) {
    __m512 acc[6][NRV];
    for (int dd = 0; dd < ND; dd++)
        for (int rv = RV0; rv < RV1; rv++) {
            vf a = *(const vf *)(ot + (d0 + dd) * BQ + rv * VL);
            if (corr) a *= corr[rv];
            acc[dd][rv] = (__m512)a;
        }
    for (int64_t p = pa; p < pb; p++) {
        const __m512i *prow = (const __m512i *)(pt2 + p * BQ);
        for (int dd = 0; dd < ND; dd++) {
            const __m512bh vw = (__m512bh)_mm512_set1_epi32((int)vt2[(d0 + dd) * (BK / 2) + p]);
            for (int rv = RV0; rv < RV1; rv++) acc[dd][rv] = _mm512_dpbf16_ps(acc[dd][rv], (__m512bh)prow[rv], vw);
        }
    }
    for (int dd = 0; dd < ND; dd++)
        for (int rv = RV0; rv < RV1; rv++) *(vf *)(ot + (d0 + dd) * BQ + rv * VL) = (vf)acc[dd][rv];
}

/// fwd_pv with vdpbf16ps: keys [ja, jb) (ja even; a key past the tile's last is a zero pair).
SFT_TARGET_AVX512BF16 static void fwd_pv_dp(float *ot, const uint32_t *vt2, const uint32_t *pt2, int64_t D,
                                            int RV0, int nrv, int64_t ja, int64_t jb, const vf *corr) {
    const int64_t pa = ja / 2, pb = (jb + 1) / 2;
    int64_t d0 = 0;
    if (nrv == NRV) {
#define PV_DP_RV(ND)                                                                           \
    switch (RV0) {                                                                             \
    case 0: fwd_pv_dp_blk(ot, vt2, pt2, d0, ND, 0, NRV, pa, pb, corr); break;                 \
    case 1: fwd_pv_dp_blk(ot, vt2, pt2, d0, ND, 1, NRV, pa, pb, corr); break;                 \
    case 2: fwd_pv_dp_blk(ot, vt2, pt2, d0, ND, 2, NRV, pa, pb, corr); break;                 \
    default: fwd_pv_dp_blk(ot, vt2, pt2, d0, ND, 3, NRV, pa, pb, corr); break;                \
    }
        for (; d0 + 6 <= D; d0 += 6) PV_DP_RV(6)
        for (; d0 < D; d0++) PV_DP_RV(1)
#undef PV_DP_RV
        return;
    }
    for (int rv = RV0; rv < nrv; rv++) {
        for (d0 = 0; d0 + 6 <= D; d0 += 6) fwd_pv_dp_blk(ot, vt2, pt2, d0, 6, rv, rv + 1, pa, pb, corr);
        for (; d0 < D; d0++) fwd_pv_dp_blk(ot, vt2, pt2, d0, 1, rv, rv + 1, pa, pb, corr);
    }
}
#endif

/// O^T (+)= V^T P^T for keys [ja, jb) and row vectors [RV0, nrv) (see fwd_pv), with vdpbf16ps
/// on the packed pairs when dp.
SFT_INLINE void tile_pv(int wide, int dp, float *ot, const float *v, int64_t ldv, const float *pt,
                        const uint32_t *vt2, const uint32_t *pt2, int64_t D, int RV0, int nrv,
                        int64_t ja, int64_t jb, const vf *corr) {
#if SFT_HAS_VARIANTS
    if (dp) {
        fwd_pv_dp(ot, vt2, pt2, D, RV0, nrv, ja, jb, corr);
        return;
    }
#endif
    (void)vt2, (void)pt2;
    fwd_pv(wide, ot, v, ldv, pt, D, RV0, nrv, ja, jb, corr);
}

/// The forward for q, k, v, o of element type f32 or bf16 (bf); dp: with vdpbf16ps (bf16, even D).
SFT_INLINE int attention_fwd(int wide, int bf, int dp, const void *q, int64_t ldq, const void *k,
                             int64_t ldk, const void *v, int64_t ldv, void *o, int64_t ldo,
                             float *lse, const int32_t *doc, const float *alibi, int64_t window,
                             int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D, float scale,
                             float softcap, int64_t *next, int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ, nunits = B * H * nqb;
    size_t floats = (size_t)(2 * D * BQ + (BK + 8) * BQ + VL * D + 5 * BQ + (bf ? 2 * BK * D + BK / 2 * BQ : 0));
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t);
    char *mem = scratch(bytes);
    if (!mem) return sft_set_error("attention forward: cannot allocate %zu bytes of scratch", bytes);
    // Per block: Q^T and o^T (D, BQ), P^T (BK + 8, BQ: see fwd_scores), the last few keys of a
    // tile (VL rows of D, so what follows stays 64-byte aligned for vector loads); per row:
    // running max m, running sum l, the tile's rescaling, the row's position and its
    // document's start (as floats for vector compares); with bf16, the tile's K and V widened
    // (with dp: the last keys of a tile as bf16 and V^T in pairs) and P^T in pairs (dp).
    float *qt = (float *)mem, *ot = qt + D * BQ, *pt = ot + D * BQ, *kpad = pt + (BK + 8) * BQ;
    float *m = kpad + VL * D, *l = m + BQ, *corr = l + BQ;
    float *tpos = corr + BQ, *spos = tpos + BQ, *kw = spos + BQ, *vw = kw + (bf ? BK * D : 0);
    uint32_t *pt2 = (uint32_t *)(vw + (bf ? BK * D : 0)), *qt2 = (uint32_t *)qt, *vt2 = (uint32_t *)vw;
    int32_t *start = (int32_t *)(pt2 + (bf ? BK / 2 * BQ : 0)), *end = start + B * T;
    unit_t *units = (unit_t *)(end + B * T);
    int64_t *load = (int64_t *)(units + nunits);

    for (int64_t b = 0; b < B; b++) doc_bounds(doc ? doc + b * T : NULL, T, window, start + b * T, end + b * T);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t qb = 0; qb < nqb; qb++, n++) {
                int64_t t0 = qb * BQ, t1 = t0 + BQ < T ? t0 + BQ : T;
                units[n] = (unit_t){query_pairs(start + b * T, t0, t1), (int32_t)b, (int32_t)h,
                                    (int32_t)qb, 0, (int32_t)n};
            }
    plan_units(units, nunits, nparts, load);

    vf *mv = (vf *)m, *lv = (vf *)l, *cv = (vf *)corr, *tv = (vf *)tpos, *sv = (vf *)spos;
    for (int64_t u, cursor = 0; (u = take_unit(next, &cursor, units, nunits, part)) >= 0;) {
        const int64_t b = units[u].b, h = units[u].head, g = h / G;
        const int64_t t0 = (int64_t)units[u].block * BQ, t1 = t0 + BQ < T ? t0 + BQ : T, nr = t1 - t0;
        const int32_t *st = start + b * T;
        const float slope = alibi ? alibi[h] : 0.0f;
        const int nrv = (int)((nr + VL - 1) / VL);   // row vectors holding rows of the block
        if (dp)   // the scale is applied to the scores (q stays exactly bf16)
            pack_q_pairs((const uint16_t *)q + (b * T + t0) * ldq + h * D, ldq, nr, D, qt2);
        else
            transpose_tile(wide, bf, elem_at(bf, q, (b * T + t0) * ldq + h * D), ldq, nr, D, scale, qt);   // rows past nr: 0
        memset(ot, 0, (size_t)(D * BQ) * sizeof(float));
        // Rows past T get position -1: no key is ever visible to them.
        for (int64_t i = 0; i < BQ; i++) {
            m[i] = -1e30f;   // finite, so m - m of a row that has seen nothing is 0, not NaN
            l[i] = 0;
            tpos[i] = i < nr ? (float)(t0 + i) : -1.0f;
            spos[i] = i < nr ? (float)st[t0 + i] : 0.0f;
        }
        // Keys below st[t0] belong to earlier documents; st[t1 - 1] is the latest start.
        const int64_t last_start = st[t1 - 1];
        for (int64_t s0 = st[t0] / BK * BK; s0 < t1; s0 += BK) {
            // Keys some row may see; on the last tile of a row (t1 = T) also the keys there are.
            const int64_t jend = t1 - s0 < BK ? t1 - s0 : BK;
            const int diag = s0 == t0;   // blocks and tiles are both aligned to 64 rows
            // Scores need masking where some row of the block does not see some key: on the
            // diagonal, and where a document starts inside the block after the tile's start.
            const int masked = s0 + BK > t0 || last_start > s0;
            const float *kk = (const float *)k + (b * T + s0) * ldk + g * D;
            const float *vv = (const float *)v + (b * T + s0) * ldv + g * D;
            int64_t ldkt = ldk, ldvt = ldv;   // row strides of the tile as read
            if (dp) {
                pack_v_pairs((const uint16_t *)v + (b * T + s0) * ldv + g * D, ldv, jend, D, vt2);
            } else if (bf) {
                widen_tile((const uint16_t *)k + (b * T + s0) * ldk + g * D, ldk, jend, D, kw);
                widen_tile((const uint16_t *)v + (b * T + s0) * ldv + g * D, ldv, jend, D, vw);
                kk = kw, vv = vw, ldkt = ldvt = D;
            }
            // Unmasked tiles without ALiBi or softcap get their row maxima from the score kernel.
            const int fused = !masked && !alibi && softcap <= 0;
            vf tmax[NRV];
            for (int rv = 0; rv < NRV; rv++) tmax[rv] = mv[rv];
#if SFT_HAS_VARIANTS
            if (dp)
                fwd_scores_dp((const uint16_t *)k + (b * T + s0) * ldk + g * D, ldk, qt2, D, jend, diag, nrv,
                              scale, pt, fused ? tmax : NULL, (uint16_t *)kw);
            else
#endif
                fwd_scores(wide, kk, ldkt, qt, D, jend, diag, nrv, pt, fused ? tmax : NULL, kpad);
            // Online softmax, one vector of 16 rows at a time.
            for (int rv = 0; rv < nrv; rv++) {
                // Keys past the vector's last row are invisible to all of its rows.
                const int64_t last = t0 + rv * VL + VL - 1 - s0;
                const int64_t je = last + 1 < jend ? last + 1 : jend;
                if (je <= 0) { cv[rv] = vsplat(1.0f); continue; }
                vf mx = tmax[rv];
                for (int64_t j = 0; !fused && j < je; j++) {
                    vf x = *(vf *)(pt + j * BQ + rv * VL);
                    const float sj = (float)(s0 + j);
                    if (softcap > 0) x = vsoftcap(wide, x, softcap);
                    if (alibi) x -= slope * (tv[rv] - sj);
                    // A masked score is -1e30: exp(-1e30 - max) is 0 once the row has seen a
                    // key; before that (max still -1e30) it counts as 1, but the first key
                    // the row sees (at the latest itself, in the last tile) rescales all of it
                    // by exp(-1e30 - max) = 0.
                    if (masked) x = vsel((sv[rv] <= sj) & (tv[rv] >= sj), x, vsplat(-1e30f));
                    if (alibi || masked || softcap > 0) *(vf *)(pt + j * BQ + rv * VL) = x;
                    mx = vmaxf(mx, x);
                }
                const vf c = vexp(wide, mv[rv] - mx);
                vf sum = lv[rv] * c;
                // bf16: O = P V takes P rounded to bf16, the sum l the unrounded p.
                for (int64_t j = 0; j < je; j++) {
                    const vf p = vexp(wide, *(vf *)(pt + j * BQ + rv * VL) - mx);
                    *(vf *)(pt + j * BQ + rv * VL) = bf ? vbf16_rounded(p) : p;
                    sum += p;
                }
                mv[rv] = mx;
                lv[rv] = sum;
                cv[rv] = c;
            }
            if (dp) pack_p_pairs(pt, jend, nrv, pt2);
            if (!diag) {
                tile_pv(wide, dp, ot, vv, ldvt, pt, vt2, pt2, D, 0, nrv, 0, jend, cv);
            } else {
                // Keys [16 c, 16 c + 16) reach row vectors c and later only.
                tile_pv(wide, dp, ot, vv, ldvt, pt, vt2, pt2, D, 0, nrv, 0, jend < VL ? jend : VL, cv);
                for (int c = 1; c < nrv && c * VL < jend; c++) {
                    const int64_t jb = (c + 1) * VL < jend ? (c + 1) * VL : jend;
                    tile_pv(wide, dp, ot, vv, ldvt, pt, vt2, pt2, D, c, nrv, c * VL, jb, NULL);
                }
            }
        }
        for (int64_t i = 0; i < nr; i++) {
            lse[(b * H + h) * T + t0 + i] = m[i] + logf(l[i]);
            l[i] = 1.0f / l[i];
        }
        write_rows(wide, bf, ot, l, nr, D, (void *)elem_at(bf, o, (b * T + t0) * ldo + h * D), ldo);
    }
    free(mem);
    return 0;
}

SFT_INLINE int sft_attention_fwd_f32_impl(int wide, const float *q, int64_t ldq, const float *k,
                                          int64_t ldk, const float *v, int64_t ldv, float *o,
                                          int64_t ldo, float *lse, const int32_t *doc,
                                          const float *alibi, int64_t window, int64_t B, int64_t T,
                                          int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                                          int64_t *next, int part, int nparts) {
    return attention_fwd(wide, 0, 0, q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, window, B, T, H, KV,
                         D, scale, softcap, next, part, nparts);
}
SFT_INLINE int sft_attention_fwd_bf16_widened_impl(int wide, const uint16_t *q, int64_t ldq, const uint16_t *k,
                                           int64_t ldk, const uint16_t *v, int64_t ldv, uint16_t *o,
                                           int64_t ldo, float *lse, const int32_t *doc,
                                           const float *alibi, int64_t window, int64_t B, int64_t T,
                                           int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                                           int64_t *next, int part, int nparts) {
    return attention_fwd(wide, 1, 0, q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, window, B, T, H, KV,
                         D, scale, softcap, next, part, nparts);
}
#define FWD_BF16_PARAMS                                                                        \
    (const uint16_t *q, int64_t ldq, const uint16_t *k, int64_t ldk, const uint16_t *v, int64_t ldv, \
     uint16_t *o, int64_t ldo, float *lse, const int32_t *doc, const float *alibi, int64_t window,   \
     int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D, float scale, float softcap,            \
     int64_t *next, int part, int nparts)
#define FWD_BF16_ARGS                                                                          \
    (q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, window, B, T, H, KV, D, scale, softcap, next, \
     part, nparts)
// The bf16 forward: with vdpbf16ps where the bf16 GEMM's variant is avx512bf16 (cpuid, lowered
// by sft_cpu_set_isa and sft_gemm_bf16_set_variant / SFT_GEMM_BF16) and D is even, else
// sft_attention_fwd_bf16_widened (per instruction set, widening to f32). Both round P alike.
static int use_dpbf16(int64_t D) {
    return D % 2 == 0 && strcmp(sft_gemm_bf16_variant(), "avx512bf16") == 0;
}
SFT_DISPATCH_WIDE(int, sft_attention_fwd_bf16_widened, FWD_BF16_PARAMS, FWD_BF16_ARGS)
#if SFT_HAS_VARIANTS
SFT_TARGET_AVX512BF16 static int attention_fwd_bf16_dp FWD_BF16_PARAMS {
    return attention_fwd(1, 1, 1, q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, window, B, T, H, KV,
                         D, scale, softcap, next, part, nparts);
}
#endif
int sft_attention_fwd_bf16 FWD_BF16_PARAMS {
#if SFT_HAS_VARIANTS
    if (use_dpbf16(D)) return attention_fwd_bf16_dp FWD_BF16_ARGS;
#endif
    return sft_attention_fwd_bf16_widened FWD_BF16_ARGS;
}
#undef FWD_BF16_PARAMS
#undef FWD_BF16_ARGS
SFT_DISPATCH_WIDE(int, sft_attention_fwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, float *o, int64_t ldo, float *lse, const int32_t *doc,
              const float *alibi, int64_t window, int64_t B, int64_t T, int64_t H, int64_t KV,
              int64_t D, float scale, float softcap, int64_t *next, int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, lse, doc, alibi, window, B, T, H, KV, D, scale, softcap,
              next, part, nparts))

// ---------------------------------------------------------------------------------------------
// Backward
//
// Units are (b, kv head g, chunk of key tiles): for each tile of the chunk, every query row of
// the group's G heads that sees the tile runs the five products (S = Q K^T, dP = dO V^T,
// dV += P^T dO, dK += dS^T Q, dQ += dS K) on one recomputation of P, so dk and dv rows have one
// writer (the unit owning their tile). dq rows get a share from every chunk: chunk 0 writes its
// share into dq, chunk c > 0 into its own slice of `work` (rows from the chunk's first key
// on), and sft_attention_bwd_sum_f32 adds the slices to dq in chunk order afterwards, so the
// result does not depend on which part ran what. Chunks are contiguous runs of tiles of about
// equal causal work, as many as keep a few units per core busy. A chunk goes in stripes of up
// to NS tiles: their K^T, V^T and dK, dV sums stay in L2 while each block of BQ query rows is
// loaded once and runs over all of them, summing its dq share across the stripe in place.
// ---------------------------------------------------------------------------------------------

/// out[r][c] = alpha * sum_{d<D} a_r[d] xt[d][c] for R rows and the CB column vectors from c0
/// of a transposed tile (rows BK apart); R x CB accumulators in registers.
SFT_INLINE void mm_rows_xt_cb(const float *const a[R], const float *restrict xt, int64_t D,
                              int c0, int CB, float alpha, float *restrict out) {
    vf acc[R][4];
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
        for (int c = 0; c < CB; c++) *(vf *)(out + r * BK + (c0 + c) * VL) = acc[r][c] * alpha;
}

/// The first ncv column vectors of R rows times a transposed tile (see mm_rows_xt_cb): all at
/// once with AVX-512's 32 registers, one vector column at a time otherwise.
SFT_INLINE void mm_rows_xt(int wide, const float *const a[R], const float *xt, int64_t D,
                           int ncv, float alpha, float *out) {
    if (wide) {
        switch (ncv) {
        case 1: mm_rows_xt_cb(a, xt, D, 0, 1, alpha, out); break;
        case 2: mm_rows_xt_cb(a, xt, D, 0, 2, alpha, out); break;
        case 3: mm_rows_xt_cb(a, xt, D, 0, 3, alpha, out); break;
        default: mm_rows_xt_cb(a, xt, D, 0, 4, alpha, out); break;
        }
    } else {
        for (int c = 0; c < ncv; c++) mm_rows_xt_cb(a, xt, D, c, 1, alpha, out);
    }
}

/// out[r][d0 + ...] += sum_{j in [jlo, jhi)} w[r][j] x[j][d0 + ...] for R rows and CB vectors
/// of columns; w rows BK apart, x rows ldx apart, out rows Dp apart.
SFT_INLINE void rows_w_x_cb(const float *restrict w, const float *restrict x, int64_t ldx,
                            int64_t Dp, int64_t jlo, int64_t jhi, int64_t d0, int CB,
                            float *restrict out) {
    vf acc[R][4];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < CB; c++) acc[r][c] = *(const vf *)(out + r * Dp + d0 + c * VL);
    for (int64_t j = jlo; j < jhi; j++) {
        vf xv[4];
        for (int c = 0; c < CB; c++) xv[c] = *(const vfu *)(x + j * ldx + d0 + c * VL);
        for (int r = 0; r < R; r++) {
            const float wr = w[r * BK + j];
            for (int c = 0; c < CB; c++) acc[r][c] += wr * xv[c];
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < CB; c++) *(vf *)(out + r * Dp + d0 + c * VL) = acc[r][c];
}

SFT_INLINE void rows_w_x(int wide, const float *w, const float *x, int64_t ldx, int64_t Dp,
                         int64_t jlo, int64_t jhi, float *out) {
    int64_t d0 = 0;
    for (; wide && d0 + 4 * VL <= Dp; d0 += 4 * VL) rows_w_x_cb(w, x, ldx, Dp, jlo, jhi, d0, 4, out);
    for (; d0 < Dp; d0 += VL) rows_w_x_cb(w, x, ldx, Dp, jlo, jhi, d0, 1, out);
}

/// acc[j0 + jj][d0 + ...] += sum_{i in [i0, nr)} w[i][j0 + jj] x[i][d0 + ...] for JN keys and
/// CB column vectors: a block of the (BK, Dp) tile in registers over the block's rows.
SFT_INLINE void tile_tn_cb(float *restrict acc, const float *restrict w, const float *restrict x,
                           int64_t ldx, int64_t Dp, int64_t j0, int JN, int64_t i0, int64_t nr,
                           int64_t d0, int CB) {
    vf a[6][4];
    for (int jj = 0; jj < JN; jj++)
        for (int c = 0; c < CB; c++) a[jj][c] = *(vf *)(acc + (j0 + jj) * Dp + d0 + c * VL);
    for (int64_t i = i0; i < nr; i++) {
        vf xv[4];
        for (int c = 0; c < CB; c++) xv[c] = *(const vfu *)(x + i * ldx + d0 + c * VL);
        for (int jj = 0; jj < JN; jj++) {
            const float wj = w[i * BK + j0 + jj];
            for (int c = 0; c < CB; c++) a[jj][c] += wj * xv[c];
        }
    }
    for (int jj = 0; jj < JN; jj++)
        for (int c = 0; c < CB; c++) *(vf *)(acc + (j0 + jj) * Dp + d0 + c * VL) = a[jj][c];
}

/// acc (BK, Dp) += w^T x over the nr rows of a query block: w (nr, BK) probabilities or dS,
/// x (nr, Dp; rows ldx apart) dO or Q. Row i of the block is `toff` rows past the tile's
/// first key, so key j gets nothing from rows i < j - toff (they precede it): those are
/// skipped.
SFT_INLINE void tile_tn(int wide, float *acc, const float *w, const float *x, int64_t ldx,
                        int64_t Dp, int64_t nk, int64_t nr, int64_t toff) {
    int64_t d0 = 0;
    for (; d0 < Dp;) {
        const int CB = wide && d0 + 4 * VL <= Dp ? 4 : 1;
        int64_t j0 = 0;
        for (; j0 + 6 <= BK && j0 < nk; j0 += 6) {
            const int64_t i0 = j0 - toff > 0 ? j0 - toff : 0;
            if (CB == 4) tile_tn_cb(acc, w, x, ldx, Dp, j0, 6, i0, nr, d0, 4);
            else tile_tn_cb(acc, w, x, ldx, Dp, j0, 6, i0, nr, d0, 1);
        }
        if (j0 < nk) {   // the last BK % 6 keys
            const int64_t i0 = j0 - toff > 0 ? j0 - toff : 0;
            if (CB == 4) tile_tn_cb(acc, w, x, ldx, Dp, j0, BK % 6, i0, nr, d0, 4);
            else tile_tn_cb(acc, w, x, ldx, Dp, j0, BK % 6, i0, nr, d0, 1);
        }
        d0 += CB * VL;
    }
}

/// For one query row against the first ncv vectors of a key tile: p = exp(y - lse) on the
/// visible keys [lo, hi) and 0 elsewhere (without `masked`, every key is visible) and
/// ds = p (dp - delta) dy/dx (dq and dk get their factor `scale` when written out); zero past
/// ncv. y is the softcapped score s when softcap > 0, else s itself.
SFT_INLINE void probabilities(int wide, int masked, const float *restrict s,
                              const float *restrict dp, int ncv, float lse_t, float delta_t,
                              float lo, float hi, float slope, float tpos, float softcap,
                              float *restrict p, float *restrict ds) {
    for (int c = 0; c < BK / VL; c++) {
        vf pv = (vf){0}, dv = (vf){0};
        if (c < ncv) {
            const vf j = lane_index + (float)(c * VL);
            vf y = *(const vf *)(s + c * VL);
            if (softcap > 0) y = vsoftcap(wide, y, softcap);
            vf x = y - lse_t;
            if (slope != 0.0f) x -= slope * (tpos - j);
            pv = vexp(wide, x);
            if (masked) pv = (vf)((vi)pv & ((j >= lo) & (j < hi)));
            dv = pv * (*(const vf *)(dp + c * VL) - delta_t);
            if (softcap > 0) {
                const vf u = y * (1.0f / softcap);
                dv *= 1.0f - u * u;
            }
        }
        *(vf *)(p + c * VL) = pv;
        *(vf *)(ds + c * VL) = dv;
    }
}

enum { MAXCHUNK = 16, CHUNK_UNITS = 12, NS = 8 };   // NS: key tiles per stripe

/// The chunks of key tiles of one (b, kv head): n chunks, chunk c = tiles [a[c], a[c+1]);
/// dq slices of chunk c >= 1 (rows a[c] * BK ..< T, G heads) start at off[c] floats in the
/// (b, kv head)'s part of `work`, which is `group` floats long. Depends on the shape only.
typedef struct {
    int n;
    int64_t a[MAXCHUNK + 1], off[MAXCHUNK + 1], group;
} chunks_t;

static void plan_chunks(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D, chunks_t *ch) {
    const int64_t nkb = (T + BK - 1) / BK, per = CHUNK_UNITS / (B * KV > 0 ? B * KV : 1);
    int64_t want = per < 1 ? 1 : per;
    if (want > nkb) want = nkb;
    if (want > MAXCHUNK) want = MAXCHUNK;
    // Tile kb is seen by T - kb BK query rows (no documents); cut where the running work
    // passes c / want of the total.
    int64_t total = 0;
    for (int64_t kb = 0; kb < nkb; kb++) total += T - kb * BK;
    ch->n = 0;
    ch->a[0] = 0;
    int64_t kb = 0, prefix = 0;
    for (int64_t c = 1; c < want; c++) {
        while (kb < nkb && prefix * want < total * c) prefix += T - (kb++) * BK;
        if (kb > ch->a[ch->n] && kb < nkb) ch->a[++ch->n] = kb;
    }
    ch->a[++ch->n] = nkb;
    ch->group = 0;
    for (int c = 1; c < ch->n; c++) {
        ch->off[c] = ch->group;
        ch->group += (T - ch->a[c] * BK) * (H / KV) * D;
    }
}

/// Floats of the dq shares of all runs of key tiles but the first (0 when there is one run).
int64_t sft_attention_bwd_work_floats(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D) {
    if (B <= 0 || T <= 0 || H <= 0 || KV <= 0 || D <= 0) return 0;
    chunks_t ch;
    plan_chunks(B, T, H, KV, D, &ch);
    return B * KV * ch.group;
}

/// dq += the shares in `work`, run after run, for the rows [lo, hi) of (b, t) of this part.
void sft_attention_bwd_sum_f32(const float *work, float *dq, int64_t lddq, int64_t B, int64_t T,
                               int64_t H, int64_t KV, int64_t D, int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0 || KV <= 0 || D <= 0) return;
    chunks_t ch;
    plan_chunks(B, T, H, KV, D, &ch);
    if (ch.n < 2) return;
    const int64_t G = H / KV, GD = G * D;
    int64_t lo, hi;
    sft_split(B * T, part, nparts, &lo, &hi);
    for (int64_t row = lo; row < hi; row++) {
        const int64_t b = row / T, t = row % T;
        for (int64_t g = 0; g < KV; g++) {
            float *dst = dq + row * lddq + g * GD;
            const float *base = work + (b * KV + g) * ch.group;
            for (int c = 1; c < ch.n && ch.a[c] * BK <= t; c++) {
                const float *src = base + ch.off[c] + (t - ch.a[c] * BK) * GD;
                for (int64_t i = 0; i < GD; i++) dst[i] += src[i];
            }
        }
    }
}

/// The backward for q, k, v, o of element type f32 or bf16 (bf); dout, dq, dk, dv are f32.
SFT_INLINE int attention_bwd(
    int wide, int bf, const void *q, int64_t ldq, const void *k, int64_t ldk, const void *v, int64_t ldv,
    const void *o, int64_t ldo, const float *dout, int64_t lddo, const float *lse,
    const int32_t *doc, const float *alibi, int64_t window, float *dq, int64_t lddq, float *dk,
    int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
    float scale, float softcap, float *work, int64_t *next, int part, int nparts) {
    if (B <= 0 || T <= 0 || H <= 0) return 0;
    const int64_t G = H / KV, nqb = (T + BQ - 1) / BQ;
    const int64_t Dp = (D + VL - 1) / VL * VL, TS = BK * Dp;   // TS: floats of one padded tile
    // With whole vectors per row, q, dO and K rows are read in place; otherwise they are copied
    // with zero padding (vector loads must not run past a row, nor past the end of a buffer).
    // bf16 q and K rows are always copied (widened on the way).
    const int direct = !bf && D % VL == 0;
    chunks_t ch;
    plan_chunks(B, T, H, KV, D, &ch);
    const int64_t nunits = B * KV * ch.n;
    const int64_t DT = (B * H * T + VL - 1) / VL * VL;   // delta, padded: what follows stays aligned
    size_t floats = (size_t)(5 * NS * TS + 3 * BQ * Dp + 2 * BQ * BK + 2 * R * BK + 4 * BQ + DT);
    size_t bytes = floats * sizeof(float) + (size_t)(2 * B * T) * sizeof(int32_t) +
                   (size_t)nunits * sizeof(unit_t) + (size_t)nparts * sizeof(int64_t) +
                   (size_t)(G * nqb + B * H * nqb);
    char *mem = scratch(bytes);
    if (!mem) return sft_set_error("attention backward: cannot allocate %zu bytes of scratch", bytes);
    // Per tile of a stripe: K^T and V^T (Dp, BK), K (BK, Dp), dK and dV sums (BK, Dp).
    float *tiles = (float *)mem, *qp = tiles + 5 * NS * TS, *dop = qp + BQ * Dp, *dqa = dop + BQ * Dp;
    float *pb = dqa + BQ * Dp, *dsb = pb + BQ * BK, *sb = dsb + BQ * BK, *dpb = sb + R * BK;
    float *L = dpb + R * BK, *dl = L + BQ, *lo = dl + BQ, *hi = lo + BQ, *delta = hi + BQ;
    int32_t *start = (int32_t *)(delta + DT), *end = start + B * T;
    unit_t *units = (unit_t *)(end + B * T);
    int64_t *load = (int64_t *)(units + nunits);
    unsigned char *written = (unsigned char *)(load + nparts), *have = written + G * nqb;
    // delta_t = do_t · o_t, computed for a block of rows of (b, h) when this part first needs it.
    memset(have, 0, (size_t)(B * H * nqb));

    for (int64_t b = 0; b < B; b++) doc_bounds(doc ? doc + b * T : NULL, T, window, start + b * T, end + b * T);
    int64_t n = 0;
    for (int64_t b = 0; b < B; b++) {
        const int32_t *en = end + b * T;
        for (int64_t g = 0; g < KV; g++)
            for (int c = 0; c < ch.n; c++, n++) {
                // Cost: query rows that see each key of the chunk, times the group's heads.
                int64_t cost = 0;
                for (int64_t s = ch.a[c] * BK; s < T && s < ch.a[c + 1] * BK; s++) cost += en[s] - s;
                units[n] = (unit_t){G * cost, (int32_t)b, (int32_t)g, c, 0, (int32_t)n};
            }
    }
    plan_units(units, nunits, nparts, load);

    for (int64_t u, cursor = 0; (u = take_unit(next, &cursor, units, nunits, part)) >= 0;) {
        const int64_t b = units[u].b, g = units[u].head, c = units[u].block;
        const int32_t *st = start + b * T, *en = end + b * T;
        // Where this chunk's dq share goes, addressed by absolute row t and head in group.
        float *tgt;
        int64_t tld;
        if (c == 0) {
            tgt = dq + b * T * lddq + g * G * D;
            tld = lddq;
        } else {
            tgt = work + (b * KV + g) * ch.group + ch.off[c] - ch.a[c] * BK * G * D;
            tld = G * D;
        }
        memset(written, 0, (size_t)(G * nqb));
        for (int64_t k0 = ch.a[c]; k0 < ch.a[c + 1]; k0 += NS) {
            const int64_t k1 = k0 + NS < ch.a[c + 1] ? k0 + NS : ch.a[c + 1];
            int64_t rend = 0;   // one past the last query row that sees a key of the stripe
            for (int64_t kb = k0; kb < k1; kb++) {
                const int64_t s0 = kb * BK, nk = (s0 + BK < T ? s0 + BK : T) - s0;
                const int64_t ko = (b * T + s0) * ldk + g * D;
                float *kt = tiles + (kb - k0) * 5 * TS, *vt = kt + TS, *kp = vt + TS;
                transpose_tile(wide, bf, elem_at(bf, k, ko), ldk, nk, D, 1.0f, kt);
                transpose_tile(wide, bf, elem_at(bf, v, (b * T + s0) * ldv + g * D), ldv, nk, D, 1.0f, vt);
                if (!direct)
                    for (int64_t j = 0; j < BK; j++)
                        copy_row(kp + j * Dp, bf, j < nk ? elem_at(bf, k, ko + j * ldk) : NULL, D, Dp, 1.0f);
                memset(kp + TS, 0, (size_t)(2 * TS) * sizeof(float));   // dK and dV sums
                rend = en[s0 + nk - 1] > rend ? en[s0 + nk - 1] : rend;
            }
            for (int64_t hl = 0; hl < G; hl++) {
                const int64_t h = g * G + hl;
                const float slope = alibi ? alibi[h] : 0.0f;
                float *dh = delta + (b * H + h) * T;
                for (int64_t t0 = k0 * BK; t0 < rend; t0 += BQ) {
                    if (!have[(b * H + h) * nqb + t0 / BQ]) {
                        for (int64_t t = t0; t < t0 + BQ && t < T; t++)
                            dh[t] = dot(dout + (b * T + t) * lddo + h * D, bf, elem_at(bf, o, (b * T + t) * ldo + h * D), D);
                        have[(b * H + h) * nqb + t0 / BQ] = 1;
                    }
                    const int64_t t1 = t0 + BQ < rend ? t0 + BQ : rend, nr = t1 - t0;
                    const int64_t nrr = (nr + R - 1) / R * R;
                    // The block's q and dO rows: in place, or copied with their rows padded to
                    // Dp columns (zeros) and the block to whole groups of R rows.
                    const int64_t qo = (b * T + t0) * ldq + h * D;
                    const float *qb0 = (const float *)q + qo;
                    const float *db0 = dout + (b * T + t0) * lddo + h * D;
                    int64_t lq = ldq, ld = lddo;
                    if (!direct) {
                        for (int64_t i = 0; i < nrr; i++) {
                            copy_row(qp + i * Dp, bf, i < nr ? elem_at(bf, q, qo + i * ldq) : NULL, D, Dp, 1.0f);
                            copy_row(dop + i * Dp, 0, i < nr ? db0 + i * lddo : NULL, D, Dp, 1.0f);
                        }
                        qb0 = qp, db0 = dop, lq = ld = Dp;
                    }
                    for (int64_t i = 0; i < nrr; i++) {
                        L[i] = i < nr ? lse[(b * H + h) * T + t0 + i] : 0.0f;
                        dl[i] = i < nr ? dh[t0 + i] : 0.0f;
                    }
                    // The next block's rows arrive while this one is computed (rows of a head
                    // are strided, which the hardware prefetchers pick up too late).
                    for (int64_t t = t1; t < t1 + BQ && t < rend; t++) {
                        const int64_t es = bf ? 2 : 4;
                        prefetch_row(elem_at(bf, q, (b * T + t) * ldq + h * D), D * es);
                        prefetch_row(dout + (b * T + t) * lddo + h * D, D * 4);
                        if (!have[(b * H + h) * nqb + t / BQ])
                            prefetch_row(elem_at(bf, o, (b * T + t) * ldo + h * D), D * es);
                    }
                    memset(dqa, 0, (size_t)(nrr * Dp) * sizeof(float));
                    int touched = 0;
                    for (int64_t kb = k0; kb < k1; kb++) {
                        const int64_t s0 = kb * BK, s1 = s0 + BK < T ? s0 + BK : T, nk = s1 - s0;
                        if (s0 >= t1 || t0 >= en[s1 - 1]) continue;   // after the rows / their documents
                        float *kt = tiles + (kb - k0) * 5 * TS, *vt = kt + TS, *kp = vt + TS;
                        float *dka = kp + TS, *dva = dka + TS;
                        // Interior pairs (every row sees every key: the tile ends before the
                        // block's first row and in its documents, whole groups of R rows) skip
                        // the per-row ranges and the masking.
                        const int masked = s1 > t0 || st[t1 - 1] > s0 || nr % R != 0;
                        for (int64_t i = 0; masked && i < nrr; i++) {
                            int64_t jl = 0, jh = 0;
                            if (i < nr) visible(st, t0 + i, s0, s1, &jl, &jh);
                            lo[i] = (float)jl;
                            hi[i] = (float)(jl < jh ? jh : jl);
                        }
                        for (int64_t r0 = 0; r0 < nr; r0 += R) {
                            float jmin = 0, jmax = BK;
                            if (masked) {
                                jmin = BK, jmax = 0;
                                for (int r = 0; r < R; r++)
                                    if (lo[r0 + r] < hi[r0 + r]) {
                                        jmin = lo[r0 + r] < jmin ? lo[r0 + r] : jmin;
                                        jmax = hi[r0 + r] > jmax ? hi[r0 + r] : jmax;
                                    }
                                if (jmin >= jmax) {
                                    memset(pb + r0 * BK, 0, (size_t)(R * BK) * sizeof(float));
                                    memset(dsb + r0 * BK, 0, (size_t)(R * BK) * sizeof(float));
                                    continue;
                                }
                            }
                            const int ncv = ((int)jmax + VL - 1) / VL;
                            // Rows past nr (their p is masked to 0) read row r0, which exists.
                            const float *qr[R], *dr[R];
                            for (int r = 0; r < R; r++) {
                                const int64_t i = r0 + r < nr ? r0 + r : r0;
                                qr[r] = qb0 + i * lq;
                                dr[r] = db0 + i * ld;
                            }
                            mm_rows_xt(wide, qr, kt, D, ncv, scale, sb);
                            mm_rows_xt(wide, dr, vt, D, ncv, 1.0f, dpb);
                            for (int r = 0; r < R; r++) {
                                const int64_t i = r0 + r;
                                const float tpos = (float)(t0 + i - s0);
                                if (masked)
                                    probabilities(wide, 1, sb + r * BK, dpb + r * BK, ncv, L[i], dl[i],
                                                  lo[i], hi[i], slope, tpos, softcap, pb + i * BK, dsb + i * BK);
                                else
                                    probabilities(wide, 0, sb + r * BK, dpb + r * BK, BK / VL, L[i], dl[i],
                                                  0, BK, slope, tpos, softcap, pb + i * BK, dsb + i * BK);
                            }
                            // dq_t += ds k_s (times scale when written out)
                            rows_w_x(wide, dsb + r0 * BK, direct ? (const float *)k + (b * T + s0) * ldk + g * D : kp,
                                     direct ? ldk : Dp, Dp, (int64_t)jmin, (int64_t)jmax, dqa + r0 * Dp);
                        }
                        tile_tn(wide, dva, pb, db0, ld, Dp, nk, nr, t0 - s0);    // dv_s += p do_t
                        // dk_s += ds q_t (times scale when written out)
                        tile_tn(wide, dka, dsb, qb0, lq, Dp, nk, nr, t0 - s0);
                        touched = 1;
                    }
                    if (!touched) continue;
                    // Add the share to dq; the first time a block is touched its rows are set,
                    // including those past rend (they may see a later stripe of the chunk).
                    const int64_t qb = t0 / BQ, bend = (qb + 1) * BQ < T ? (qb + 1) * BQ : T;
                    const int first = !written[hl * nqb + qb];
                    written[hl * nqb + qb] = 1;
                    for (int64_t t = t0; t < (first ? bend : t1); t++) {
                        float *dst = tgt + t * tld + hl * D;
                        const float *src = dqa + (t - t0) * Dp;
                        if (first) copy_row(dst, 0, t < t1 ? src : NULL, D, D, scale);
                        else for (int64_t d = 0; d < D; d++) dst[d] += scale * src[d];
                    }
                }
            }
            for (int64_t kb = k0; kb < k1; kb++) {
                const int64_t s0 = kb * BK, nk = (s0 + BK < T ? s0 + BK : T) - s0;
                const float *dka = tiles + (kb - k0) * 5 * TS + 3 * TS, *dva = dka + TS;
                for (int64_t j = 0; j < nk; j++) {
                    copy_row(dk + (b * T + s0 + j) * lddk + g * D, 0, dka + j * Dp, D, D, scale);
                    copy_row(dv + (b * T + s0 + j) * lddv + g * D, 0, dva + j * Dp, D, D, 1.0f);
                }
            }
        }
        // Rows of the chunk's range that no tile reached (other documents) get a zero share.
        for (int64_t hl = 0; hl < G; hl++)
            for (int64_t qb = ch.a[c] * BK / BQ; qb < nqb; qb++) {
                if (written[hl * nqb + qb]) continue;
                for (int64_t t = qb * BQ; t < T && t < (qb + 1) * BQ; t++)
                    memset(tgt + t * tld + hl * D, 0, (size_t)D * sizeof(float));
            }
    }
    free(mem);
    return 0;
}
SFT_INLINE int sft_attention_bwd_f32_impl(
    int wide, const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v, int64_t ldv,
    const float *o, int64_t ldo, const float *dout, int64_t lddo, const float *lse,
    const int32_t *doc, const float *alibi, int64_t window, float *dq, int64_t lddq, float *dk,
    int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
    float scale, float softcap, float *work, int64_t *next, int part, int nparts) {
    return attention_bwd(wide, 0, q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, window,
                         dq, lddq, dk, lddk, dv, lddv, B, T, H, KV, D, scale, softcap, work, next, part, nparts);
}
SFT_INLINE int sft_attention_bwd_bf16_impl(
    int wide, const uint16_t *q, int64_t ldq, const uint16_t *k, int64_t ldk, const uint16_t *v,
    int64_t ldv, const uint16_t *o, int64_t ldo, const float *dout, int64_t lddo, const float *lse,
    const int32_t *doc, const float *alibi, int64_t window, float *dq, int64_t lddq, float *dk,
    int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D,
    float scale, float softcap, float *work, int64_t *next, int part, int nparts) {
    return attention_bwd(wide, 1, q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, window,
                         dq, lddq, dk, lddk, dv, lddv, B, T, H, KV, D, scale, softcap, work, next, part, nparts);
}
SFT_DISPATCH_WIDE(int, sft_attention_bwd_bf16,
             (const uint16_t *q, int64_t ldq, const uint16_t *k, int64_t ldk, const uint16_t *v,
              int64_t ldv, const uint16_t *o, int64_t ldo, const float *dout, int64_t lddo,
              const float *lse, const int32_t *doc, const float *alibi, int64_t window, float *dq,
              int64_t lddq, float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T,
              int64_t H, int64_t KV, int64_t D, float scale, float softcap, float *work, int64_t *next,
              int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, window, dq, lddq, dk, lddk,
              dv, lddv, B, T, H, KV, D, scale, softcap, work, next, part, nparts))
SFT_DISPATCH_WIDE(int, sft_attention_bwd_f32,
             (const float *q, int64_t ldq, const float *k, int64_t ldk, const float *v,
              int64_t ldv, const float *o, int64_t ldo, const float *dout, int64_t lddo,
              const float *lse, const int32_t *doc, const float *alibi, int64_t window, float *dq,
              int64_t lddq, float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B, int64_t T,
              int64_t H, int64_t KV, int64_t D, float scale, float softcap, float *work, int64_t *next,
              int part, int nparts),
             (q, ldq, k, ldk, v, ldv, o, ldo, dout, lddo, lse, doc, alibi, window, dq, lddq, dk, lddk,
              dv, lddv, B, T, H, KV, D, scale, softcap, work, next, part, nparts))
