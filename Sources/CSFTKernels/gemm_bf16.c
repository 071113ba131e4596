// bf16 GEMM with f32 accumulation: C (M×N, f32) = alpha · op(A) op(B) + beta · C, row-major,
// with A and B each f32 or bf16. OpenBLAS here has no sbgemm, so this is sft's own.
//
// Numerics: every operand value is rounded to bf16 (to nearest even; bf16 inputs are used as
// they are), products of two bf16 values are exact in f32, and the sums are f32. That is what
// the AVX512_BF16 instruction vdpbf16ps computes, what the widening variants compute, and what
// the readable reference below computes (up to the order of the f32 additions).
//
// Layout (BLIS style): the K dimension is cut in equal blocks of at most KC; for each block, the
// part's rows of op(A) are packed into panels of MR rows and op(B) into panels of NR columns, in
// equal column blocks of at most NC. Both panels store K in pairs — one 32-bit word holds
// (x[k], x[k+1]) as two bf16, k in the low half — because vdpbf16ps multiplies such pairs and
// adds both products into one f32 lane. A panel of A: for each pair, MR words (one per row). A
// panel of B: for each pair, NR words (one per column). Edges are padded with zeros (an odd K
// gets a zero partner), so the micro-kernels always run whole MR × NR tiles and mask only their
// stores. The panels live in a per-thread buffer kept between calls.
//
// Tuning (Zen 4, the LoRA-step shapes M = 512, K, N ∈ {576, 1536, 49152}; BENCHMARKS.md):
// the row loops of the micro-kernels are unrolled in full (UNROLL_ROWS) so the accumulators stay
// in registers — without it the compiler kept them on the stack and the GEMM ran at sgemm's
// speed. KC = 576 (one depth block for K = 576: C stays in registers for the whole sum), packing
// an f32 row by rounding it into a contiguous bf16 row first (a loop that vectorizes) and, with
// AVX-512, spreading rows into panels by 16 × 16 register transposes, and reusing the panel
// buffer (a fresh one is fresh pages, whose faults cost as much as the packing), and splitting C
// between threads so that the cheaper operand is the one every part packs. Measured on 2
// threads: 72–84% of the vdpbf16ps peak, 1.7–2.1× sgemm (quiet runs, BENCHMARKS.md). Each
// change keeps the panels word for word (the transposing packer equals pack_generic), so only KC
// moved the f32 summation order.
//
// Micro-kernels (MR = 12 rows × NR = 32 columns, 24 accumulators of 16 floats):
//   avx512bf16  vdpbf16ps on the packed pairs (twice the multiply-adds of an f32 FMA)
//   avx512      the pairs widened to f32 (shift / mask) and two FMAs
//   avx2        the same with 8 floats a register, the tile done in four column quarters
//   generic     plain C over the same panels
// chosen at run time from cpuid (and lowered by sft_cpu_set_isa, or forced for tests and
// benchmarks with sft_gemm_bf16_set_variant / the env var SFT_GEMM_BF16).
//
// Threads: a call computes part `part` of `nparts` of C (blocks of columns or of rows, on
// multiples of NR / MR: whichever leaves the cheaper operand to be packed by every part) and
// packs its own panels, so the Swift side runs the parts on the backend's pool like the other
// kernels. Every element of C is
// summed in the same order whatever the number of parts.
#include "cpu.h"
#include <stdlib.h>
#include <stdio.h>
#include <pthread.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { MR = 12, NR = 32, KC = 576, NC = 512 };

// ---------------------------------------------------------------------------------------------
// bf16 conversion (round to nearest even, NaN kept a quiet NaN) — the same rule as elementwise.c
// ---------------------------------------------------------------------------------------------

SFT_INLINE uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16, nan = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);   // a select, so loops vectorize
}

SFT_INLINE float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/// Element (r, c) of a row-major matrix with leading dimension ld, as bf16.
SFT_INLINE uint16_t element(const void *p, int is_bf16, int64_t ld, int64_t r, int64_t c) {
    return is_bf16 ? ((const uint16_t *)p)[r * ld + c] : to_bf16(((const float *)p)[r * ld + c]);
}

// ---------------------------------------------------------------------------------------------
// The readable reference
// ---------------------------------------------------------------------------------------------

void sft_gemm_bf16_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                       float beta, float *C, int64_t ldc) {
    sft_gemm_bf16_pair_ref(trans_a, trans_b, M, N, K, alpha, A, a_bf16, lda, B, b_bf16, ldb, 0, NULL, 0, 0, NULL, 0, 0,
                           beta, C, 0, ldc);
}

/// The pair: the sum runs over the K values of the first product, then the K2 of the second.
void sft_gemm_bf16_pair_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                            const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                            int64_t K2, const void *A2, int a2_bf16, int64_t lda2, const void *B2, int b2_bf16,
                            int64_t ldb2, float beta, void *C, int c_bf16, int64_t ldc) {
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            float acc = 0;
            for (int64_t k = 0; k < K + K2; k++) {
                const void *a = k < K ? A : A2, *b = k < K ? B : B2;
                int ab = k < K ? a_bf16 : a2_bf16, bb = k < K ? b_bf16 : b2_bf16;
                int64_t la = k < K ? lda : lda2, lb = k < K ? ldb : ldb2, kk = k < K ? k : k - K;
                float x = from_bf16(trans_a ? element(a, ab, la, kk, i) : element(a, ab, la, i, kk));
                float y = from_bf16(trans_b ? element(b, bb, lb, j, kk) : element(b, bb, lb, kk, j));
                acc += x * y;
            }
            if (c_bf16) {
                ((uint16_t *)C)[i * ldc + j] = to_bf16(alpha * acc);
            } else {
                float *c = (float *)C + i * ldc + j;
                *c = beta == 0 ? alpha * acc : alpha * acc + beta * *c;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Packing
// ---------------------------------------------------------------------------------------------

/// Packs rows [r0, r0 + rows) × depth [k0, k0 + kc) of an operand into panels of `width` rows:
/// panel q, pair t, row s at dst[(q · stride + t) · width + s], zero-padded, where a panel holds
/// `stride` >= (kc + 1) / 2 pairs (more when a second product's pairs follow in the same panel,
/// packed by another call at dst + pairs · width). Reads go along memory: along k for rows
/// stored contiguously, across rows when the operand is transposed.
SFT_INLINE void pack_panels_impl(const void *p, int is_bf16, int trans, int64_t ld, int64_t r0, int64_t rows,
                                 int64_t k0, int64_t kc, int width, int64_t stride, uint32_t *dst) {
    int64_t pairs = (kc + 1) / 2, panels = (rows + width - 1) / width, even = kc / 2;
    for (int64_t q = 0; q < panels; q++) {
        uint32_t *panel = dst + q * stride * width;
        int64_t live = rows - q * width < width ? rows - q * width : width, rq = r0 + q * width;
        if (live < width || kc % 2)
            for (int64_t i = 0; i < pairs * width; i++) panel[i] = 0;
        if (trans) {
            // Element (r, k) at k · ld + r: a pair of memory rows gives one pair for every row s.
            for (int64_t t = 0; t < pairs; t++) {
                int64_t k = k0 + 2 * t;
                uint32_t *out = panel + t * width;
                if (is_bf16) {
                    const uint16_t *x0 = (const uint16_t *)p + k * ld + rq, *x1 = x0 + ld;
                    if (t < even) for (int64_t s = 0; s < live; s++) out[s] = x0[s] | (uint32_t)x1[s] << 16;
                    else for (int64_t s = 0; s < live; s++) out[s] = x0[s];
                } else {
                    const float *x0 = (const float *)p + k * ld + rq, *x1 = x0 + ld;
                    if (t < even) for (int64_t s = 0; s < live; s++) out[s] = to_bf16(x0[s]) | (uint32_t)to_bf16(x1[s]) << 16;
                    else for (int64_t s = 0; s < live; s++) out[s] = to_bf16(x0[s]);
                }
            }
        } else {
            // Element (r, k) at r · ld + k: each row is read along k. An f32 row is rounded into
            // a contiguous bf16 row first (a loop that vectorizes), then spread like a bf16 row.
            uint16_t rounded[KC];
            for (int64_t s = 0; s < live; s++) {
                uint32_t *out = panel + s;
                const uint16_t *x;
                if (is_bf16) {
                    x = (const uint16_t *)p + (rq + s) * ld + k0;
                } else {
                    const float *xf = (const float *)p + (rq + s) * ld + k0;
                    for (int64_t k = 0; k < kc; k++) rounded[k] = to_bf16(xf[k]);
                    x = rounded;
                }
                for (int64_t t = 0; t < even; t++) out[t * width] = x[2 * t] | (uint32_t)x[2 * t + 1] << 16;
                if (kc % 2) out[even * width] = x[2 * even];
            }
        }
    }
}

typedef void (*packer)(const void *p, int is_bf16, int trans, int64_t ld, int64_t r0, int64_t rows,
                       int64_t k0, int64_t kc, int width, int64_t stride, uint32_t *dst);
#define PACK_PARAMS (const void *p, int is_bf16, int trans, int64_t ld, int64_t r0, int64_t rows, \
                     int64_t k0, int64_t kc, int width, int64_t stride, uint32_t *dst)
#define PACK_ARGS (p, is_bf16, trans, ld, r0, rows, k0, kc, width, stride, dst)
static void pack_generic PACK_PARAMS { pack_panels_impl PACK_ARGS; }

// ---------------------------------------------------------------------------------------------
// Micro-kernels: C tile (mr × nr live of MR × NR) = alpha · Σ_pairs a · b + beta · C
// (beta == 0: C is not read). a: pairs × MR words, b: pairs × NR words.
// ---------------------------------------------------------------------------------------------

typedef void (*micro_kernel)(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                             int mr, int nr, float alpha, float beta);

/// Writes one row of a finished tile (generic; used by the generic and AVX2 kernels).
SFT_INLINE void store_row(const float *acc, float *c, int nr, float alpha, float beta) {
    for (int j = 0; j < nr; j++) c[j] = beta == 0 ? alpha * acc[j] : alpha * acc[j] + beta * c[j];
}

static void kernel_generic(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                           int mr, int nr, float alpha, float beta) {
    float acc[MR][NR];
    memset(acc, 0, sizeof acc);
    for (int64_t t = 0; t < pairs; t++) {
        for (int i = 0; i < MR; i++) {
            uint32_t ap = a[t * MR + i];
            float a0 = from_bf16((uint16_t)ap), a1 = from_bf16((uint16_t)(ap >> 16));
            for (int j = 0; j < NR; j++) {
                uint32_t bp = b[t * NR + j];
                acc[i][j] += a0 * from_bf16((uint16_t)bp);
                acc[i][j] += a1 * from_bf16((uint16_t)(bp >> 16));
            }
        }
    }
    for (int i = 0; i < mr; i++) store_row(acc[i], c + i * ldc, nr, alpha, beta);
}

#if SFT_HAS_VARIANTS

#define TARGET_AVX512BF16 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512bf16")))
#define TARGET_AVX512 __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#define TARGET_AVX2 __attribute__((target("avx2,fma")))
// The micro-kernels' loops over the tile's rows are unrolled in full, so every accumulator is a
// constant index and stays in a register. (Left to the compiler at -O2 they were not: the row
// loop of the store, bounded by the live rows mr, indexed the array at run time, which put all
// 24 accumulators on the stack — a load and a store around every vdpbf16ps, half the speed.)
#if defined(__clang__)
#define UNROLL_ROWS _Pragma("clang loop unroll(full)")
#else
#define UNROLL_ROWS _Pragma("GCC unroll 32")
#endif

/// out[(t0 + j) · width + s] = rows[s][t0 + j] for j < 16 and the rows s < 16 in `live`: a 16 × 16
/// transpose of 32-bit words in registers — unpack 32-bit, unpack 64-bit (row groups of 4 for
/// each column within a 128-bit lane), then two rounds of 128-bit lane shuffles.
TARGET_AVX512 SFT_INLINE void transpose16_store(const uint32_t *const *rows, int64_t t0, uint32_t *out, int width,
                                               __mmask16 live) {
    __m512i r[16], a[16], b[16];
    for (int s = 0; s < 16; s++) r[s] = _mm512_loadu_si512(rows[s] + t0);
    for (int i = 0; i < 16; i += 2) {
        a[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        a[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    // b[4i + c], 128-bit lane l: rows 4i … 4i + 3 of column 4l + c.
    for (int i = 0; i < 16; i += 4) {
        b[i] = _mm512_unpacklo_epi64(a[i], a[i + 2]);
        b[i + 1] = _mm512_unpackhi_epi64(a[i], a[i + 2]);
        b[i + 2] = _mm512_unpacklo_epi64(a[i + 1], a[i + 3]);
        b[i + 3] = _mm512_unpackhi_epi64(a[i + 1], a[i + 3]);
    }
    for (int c = 0; c < 4; c++) {
        __m512i e0 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0x44), e1 = _mm512_shuffle_i32x4(b[c], b[4 + c], 0xee);
        __m512i e2 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0x44), e3 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], 0xee);
        // Column 4l + c: lane i holds rows 4i … 4i + 3.
        _mm512_mask_storeu_epi32(out + (t0 + c) * width, live, _mm512_shuffle_i32x4(e0, e2, 0x88));
        _mm512_mask_storeu_epi32(out + (t0 + 4 + c) * width, live, _mm512_shuffle_i32x4(e0, e2, 0xdd));
        _mm512_mask_storeu_epi32(out + (t0 + 8 + c) * width, live, _mm512_shuffle_i32x4(e1, e3, 0x88));
        _mm512_mask_storeu_epi32(out + (t0 + 12 + c) * width, live, _mm512_shuffle_i32x4(e1, e3, 0xdd));
    }
}

/// pack_panels_impl for operands read along k (not transposed), 16 rows × 16 pairs at a time
/// through transpose16_store; the same panels, word for word.
TARGET_AVX512 static void pack_rows_avx512(const void *p, int is_bf16, int64_t ld, int64_t r0, int64_t rows,
                                           int64_t k0, int64_t kc, int width, int64_t stride, uint32_t *dst) {
    int64_t pairs = (kc + 1) / 2, panels = (rows + width - 1) / width, even = kc / 2, vec = even / 16 * 16;
    uint16_t rounded[16][KC];
    for (int64_t q = 0; q < panels; q++) {
        uint32_t *panel = dst + q * stride * width;
        int64_t live = rows - q * width < width ? rows - q * width : width, rq = r0 + q * width;
        if (live < width || kc % 2)
            for (int64_t i = 0; i < pairs * width; i++) panel[i] = 0;
        for (int64_t g = 0; g < live; g += 16) {
            int n = (int)(live - g < 16 ? live - g : 16);
            const uint16_t *x[16];
            for (int s = 0; s < n; s++) {
                if (is_bf16) {
                    x[s] = (const uint16_t *)p + (rq + g + s) * ld + k0;
                } else {
                    const float *xf = (const float *)p + (rq + g + s) * ld + k0;
                    for (int64_t k = 0; k < kc; k++) rounded[s][k] = to_bf16(xf[k]);
                    x[s] = rounded[s];
                }
            }
            for (int s = n; s < 16; s++) x[s] = x[0];   // read, never stored
            const uint32_t *w[16];
            for (int s = 0; s < 16; s++) w[s] = (const uint32_t *)(const void *)x[s];
            __mmask16 live16 = (__mmask16)(n == 16 ? 0xffffu : (1u << n) - 1);
            for (int64_t t0 = 0; t0 < vec; t0 += 16) transpose16_store(w, t0, panel + g, width, live16);
            for (int s = 0; s < n; s++) {
                uint32_t *out = panel + g + s;
                for (int64_t t = vec; t < even; t++) out[t * width] = x[s][2 * t] | (uint32_t)x[s][2 * t + 1] << 16;
                if (kc % 2) out[even * width] = x[s][2 * even];
            }
        }
    }
}

TARGET_AVX512 static void pack_avx512 PACK_PARAMS {
    if (trans) pack_panels_impl PACK_ARGS;
    else pack_rows_avx512(p, is_bf16, ld, r0, rows, k0, kc, width, stride, dst);
}
TARGET_AVX2 static void pack_avx2 PACK_PARAMS { pack_panels_impl PACK_ARGS; }

/// Stores a 12 × 32 tile of accumulators (row i in acc[2i], acc[2i + 1]) with masks at the edges.
#define STORE_TILE_512(acc)                                                                        \
    do {                                                                                           \
        __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1);                 \
        __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1); \
        __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);                              \
        UNROLL_ROWS for (int i = 0; i < MR; i++) {                                                 \
            if (i < mr) {                                                                          \
                float *ci = c + i * ldc;                                                           \
                __m512 r0 = _mm512_mul_ps(va, acc[2 * i]), r1 = _mm512_mul_ps(va, acc[2 * i + 1]); \
                if (beta != 0) {                                                                   \
                    r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);                  \
                    r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);             \
                }                                                                                  \
                _mm512_mask_storeu_ps(ci, m0, r0);                                                 \
                _mm512_mask_storeu_ps(ci + 16, m1, r1);                                            \
            }                                                                                      \
        }                                                                                          \
    } while (0)

TARGET_AVX512BF16
static void kernel_avx512bf16(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                              int mr, int nr, float alpha, float beta) {
    __m512 acc[2 * MR];
    UNROLL_ROWS for (int i = 0; i < 2 * MR; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t t = 0; t < pairs; t++) {
        __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + t * NR);
        __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + t * NR + 16);
        const uint32_t *at = a + t * MR;
        UNROLL_ROWS for (int i = 0; i < MR; i++) {
            __m512bh ai = (__m512bh)_mm512_set1_epi32((int)at[i]);
            acc[2 * i] = _mm512_dpbf16_ps(acc[2 * i], ai, b0);
            acc[2 * i + 1] = _mm512_dpbf16_ps(acc[2 * i + 1], ai, b1);
        }
    }
    STORE_TILE_512(acc);
}

TARGET_AVX512
static void kernel_avx512(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                          int mr, int nr, float alpha, float beta) {
    __m512 acc[2 * MR];
    UNROLL_ROWS for (int i = 0; i < 2 * MR; i++) acc[i] = _mm512_setzero_ps();
    const __m512i high = _mm512_set1_epi32((int)0xffff0000u);
    for (int64_t t = 0; t < pairs; t++) {
        __m512i w0 = _mm512_loadu_si512(b + t * NR), w1 = _mm512_loadu_si512(b + t * NR + 16);
        // bf16 → f32 is a 16-bit shift: the low half of each word is k, the high half k + 1.
        __m512 b0lo = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
        __m512 b0hi = _mm512_castsi512_ps(_mm512_and_si512(w0, high));
        __m512 b1lo = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
        __m512 b1hi = _mm512_castsi512_ps(_mm512_and_si512(w1, high));
        const uint32_t *at = a + t * MR;
        UNROLL_ROWS for (int i = 0; i < MR; i++) {
            __m512i ai = _mm512_set1_epi32((int)at[i]);
            __m512 alo = _mm512_castsi512_ps(_mm512_slli_epi32(ai, 16));
            __m512 ahi = _mm512_castsi512_ps(_mm512_and_si512(ai, high));
            acc[2 * i] = _mm512_fmadd_ps(alo, b0lo, acc[2 * i]);
            acc[2 * i] = _mm512_fmadd_ps(ahi, b0hi, acc[2 * i]);
            acc[2 * i + 1] = _mm512_fmadd_ps(alo, b1lo, acc[2 * i + 1]);
            acc[2 * i + 1] = _mm512_fmadd_ps(ahi, b1hi, acc[2 * i + 1]);
        }
    }
    STORE_TILE_512(acc);
}

TARGET_AVX2
static void kernel_avx2(int64_t pairs, const uint32_t *a, const uint32_t *b, float *c, int64_t ldc,
                        int mr, int nr, float alpha, float beta) {
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    // Four passes of 8 columns: 12 accumulators + 4 operands fit the 16 ymm registers.
    for (int q = 0; q < NR / 8; q++) {
        if (q * 8 >= nr) break;
        __m256 acc[MR];
        UNROLL_ROWS for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
        for (int64_t t = 0; t < pairs; t++) {
            __m256i w = _mm256_loadu_si256((const __m256i *)(b + t * NR + q * 8));
            __m256 blo = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
            __m256 bhi = _mm256_castsi256_ps(_mm256_and_si256(w, high));
            const uint32_t *at = a + t * MR;
            UNROLL_ROWS for (int i = 0; i < MR; i++) {
                __m256i ai = _mm256_set1_epi32((int)at[i]);
                acc[i] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(ai, 16)), blo, acc[i]);
                acc[i] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(ai, high)), bhi, acc[i]);
            }
        }
        int live = nr - q * 8 < 8 ? nr - q * 8 : 8;
        UNROLL_ROWS for (int i = 0; i < MR; i++) {
            if (i < mr) {
                float row[8];
                _mm256_storeu_ps(row, acc[i]);
                store_row(row, c + i * ldc + q * 8, live, alpha, beta);
            }
        }
    }
}

/// vdpbf16ps throughput with no memory traffic: `iters` rounds of 24 independent
/// accumulators. Returns the flops done (64 per instruction).
TARGET_AVX512BF16
static double peak_loop_avx512bf16(int64_t iters, float *sink) {
    __m512 acc[24];
    for (int i = 0; i < 24; i++) acc[i] = _mm512_set1_ps((float)i);
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80);   // (1.0, 1.0)
    __m512bh y = (__m512bh)_mm512_set1_epi32(0x00010001);   // tiny: the sums stay finite
    for (int64_t it = 0; it < iters; it++) {
        for (int i = 0; i < 24; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
    __m512 s = acc[0];
    for (int i = 1; i < 24; i++) s = _mm512_add_ps(s, acc[i]);
    *sink = _mm512_reduce_add_ps(s);
    return (double)iters * 24 * 64;
}
#endif

// ---------------------------------------------------------------------------------------------
// Variant choice
// ---------------------------------------------------------------------------------------------

enum { V_GENERIC, V_AVX2, V_AVX512, V_AVX512BF16, V_COUNT };
static const char *const variant_names[V_COUNT] = {"generic", "avx2", "avx512", "avx512bf16"};
static int forced_variant = -2;   // -2: not read from the environment yet; -1: automatic

static int best_variant(void) {
    int level = sft_isa_level();
#if SFT_HAS_VARIANTS
    if (level == 2) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512bf16") ? V_AVX512BF16 : V_AVX512;
    }
#endif
    return level == 1 ? V_AVX2 : V_GENERIC;
}

static int variant_named(const char *name) {
    for (int v = 0; v < V_COUNT; v++)
        if (strcmp(name, variant_names[v]) == 0) return v;
    return -1;
}

static int current_variant(void) {
    int forced = __atomic_load_n(&forced_variant, __ATOMIC_RELAXED);
    if (forced == -2) {
        const char *env = getenv("SFT_GEMM_BF16");
        forced = env && *env && strcmp(env, "auto") != 0 ? variant_named(env) : -1;
        if (forced > best_variant()) forced = -1;   // an unsupported request is refused by set_variant, ignored here
        __atomic_store_n(&forced_variant, forced, __ATOMIC_RELAXED);
    }
    int best = best_variant();
    return forced >= 0 && forced < best ? forced : best;
}

int sft_gemm_bf16_set_variant(const char *name) {
    if (strcmp(name, "auto") == 0) {
        __atomic_store_n(&forced_variant, -1, __ATOMIC_RELAXED);
        return 0;
    }
    int v = variant_named(name);
    if (v < 0) return sft_set_error("unknown bf16 GEMM variant '%s' (auto, avx512bf16, avx512, avx2, generic)", name);
    if (v > best_variant())
        return sft_set_error("this CPU cannot run the %s bf16 GEMM (best: %s)", name, variant_names[best_variant()]);
    __atomic_store_n(&forced_variant, v, __ATOMIC_RELAXED);
    return 0;
}

const char *sft_gemm_bf16_variant(void) { return variant_names[current_variant()]; }

static micro_kernel kernel_for(int v) {
#if SFT_HAS_VARIANTS
    switch (v) {
    case V_AVX512BF16: return kernel_avx512bf16;
    case V_AVX512: return kernel_avx512;
    case V_AVX2: return kernel_avx2;
    default: break;
    }
#endif
    (void)v;
    return kernel_generic;
}

static packer packer_for(int v) {
#if SFT_HAS_VARIANTS
    if (v >= V_AVX512) return pack_avx512;
    if (v == V_AVX2) return pack_avx2;
#endif
    (void)v;
    return pack_generic;
}

double sft_dpbf16_peak(int64_t iters, float *sink) {
#if SFT_HAS_VARIANTS
    if (best_variant() == V_AVX512BF16) return peak_loop_avx512bf16(iters, sink);
#endif
    (void)iters;
    *sink = 0;
    return -1;
}

// ---------------------------------------------------------------------------------------------
// The driver
// ---------------------------------------------------------------------------------------------

/// This thread's panel buffer, at least `bytes` long (64-byte aligned), or NULL when out of
/// memory. Kept between calls (a fresh block of this size is fresh pages, and faulting them in
/// cost as much as the packing); freed when the thread exits.
static pthread_key_t panel_key;
static pthread_once_t panel_once = PTHREAD_ONCE_INIT;
static void panel_key_create(void) { pthread_key_create(&panel_key, free); }

static uint32_t *panel_buffer(size_t bytes) {
    pthread_once(&panel_once, panel_key_create);
    size_t *block = pthread_getspecific(panel_key);   // block[0]: capacity; the panels from byte 64
    if (!block || block[0] < bytes) {
        free(block);
        size_t capacity = (bytes + 4095) / 4096 * 4096;
        block = aligned_alloc(64, capacity + 64);
        if (block) block[0] = capacity;
        pthread_setspecific(panel_key, block);
        if (!block) return NULL;
    }
    return (uint32_t *)(void *)((char *)block + 64);
}

int sft_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                  float beta, float *C, int64_t ldc, int part, int nparts) {
    return sft_gemm_bf16_pair(trans_a, trans_b, M, N, K, alpha, A, a_bf16, lda, B, b_bf16, ldb,
                              0, NULL, 0, 0, NULL, 0, 0, beta, C, 0, ldc, part, nparts);
}

int sft_gemm_bf16_pair(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                       int64_t K2, const void *A2, int a2_bf16, int64_t lda2, const void *B2, int b2_bf16, int64_t ldb2,
                       float beta, void *C, int c_bf16, int64_t ldc, int part, int nparts) {
    if (M < 0 || N < 0 || K < 0 || K2 < 0 || K2 > KC)
        return sft_set_error("gemm_bf16: sizes M=%lld N=%lld K=%lld K2=%lld (each >= 0, K2 <= %d)",
                             (long long)M, (long long)N, (long long)K, (long long)K2, (int)KC);
    if (c_bf16 && beta != 0) return sft_set_error("gemm_bf16: a bf16 C takes beta 0 (got %g)", (double)beta);
    if (nparts < 1) nparts = 1;
    // This part's block of C, on multiples of the tile. Each part packs all of the operand
    // along the dimension it does not split, so the parts split the dimension that leaves the
    // cheaper operand to pack twice (an f32 operand costs about twice a bf16 one: it is rounded,
    // then spread), as long as it has a tile for every part.
    int64_t m0 = 0, m1 = M, n0 = 0, n1 = N;
    double cost_a = (double)M * (double)K * (a_bf16 ? 1 : 2), cost_b = (double)N * (double)K * (b_bf16 ? 1 : 2);
    int64_t mtiles = (M + MR - 1) / MR, ntiles = (N + NR - 1) / NR;
    int split_n = cost_a <= cost_b;   // splitting N packs A in every part
    if ((split_n ? ntiles : mtiles) < nparts) split_n = ntiles >= mtiles;
    if (split_n) {
        n0 = ntiles * part / nparts * NR; n1 = ntiles * (part + 1) / nparts * NR;
        if (n1 > N) n1 = N;
    } else {
        m0 = mtiles * part / nparts * MR; m1 = mtiles * (part + 1) / nparts * MR;
        if (m1 > M) m1 = M;
    }
    if (m1 <= m0 || n1 <= n0) return 0;
    int64_t rows = m1 - m0, cols = n1 - n0;
    // A bf16 C is summed in an f32 block of this part's rows × cols (after the panels in the
    // thread's buffer) and rounded once at the end.
    size_t cbytes = c_bf16 ? (size_t)(rows * cols) * 4 : 0;
    if (K == 0 && K2 == 0) {
        for (int64_t i = m0; i < m1; i++)
            for (int64_t j = n0; j < n1; j++) {
                if (c_bf16) ((uint16_t *)C)[i * ldc + j] = 0;
                else ((float *)C)[i * ldc + j] = beta == 0 ? 0 : beta * ((float *)C)[i * ldc + j];
            }
        return 0;
    }
    int variant = current_variant();
    micro_kernel kernel = kernel_for(variant);
    packer pack_panels = packer_for(variant);
    int64_t apanels = (rows + MR - 1) / MR, pairs2 = (K2 + 1) / 2;
    // Column blocks of equal size up to NC, on multiples of NR: N = 576 runs as 2 × 288.
    int64_t nblocks = (cols + NC - 1) / NC, ncstep = ((cols + nblocks - 1) / nblocks + NR - 1) / NR * NR;
    int64_t ncmax = cols < ncstep ? cols : ncstep, bpanels = (ncmax + NR - 1) / NR;
    size_t abytes = (size_t)(apanels * MR * (KC / 2 + pairs2)) * 4, bbytes = (size_t)(bpanels * NR * (KC / 2 + pairs2)) * 4;
    uint32_t *ap = panel_buffer(abytes + bbytes + cbytes), *bp = ap + abytes / 4;
    if (!ap) return sft_set_error("gemm_bf16: out of memory for packed panels (%lld × %lld)", (long long)rows, (long long)cols);
    float *cf = c_bf16 ? (float *)(void *)(bp + bbytes / 4) : (float *)C + m0 * ldc + n0;
    int64_t ldcf = c_bf16 ? cols : ldc;
    // Depth blocks of equal (even) size up to KC: K = 1536 runs as 3 × 512, not 576 + 576 + 384.
    // The second product's K2 pairs follow the last block's in the same panels, so C takes both
    // sums in one pass (a LoRA adapter's product in its Linear's).
    int64_t kblocks = K > 0 ? (K + KC - 1) / KC : 1, kstep = ((K + kblocks - 1) / kblocks + 1) / 2 * 2;
    for (int64_t kb = 0; kb < kblocks; kb++) {
        int64_t k0 = kb * kstep, kc = K - k0 < kstep ? K - k0 : kstep, pairs1 = (kc + 1) / 2;
        int64_t extra = kb == kblocks - 1 ? pairs2 : 0, pairs = pairs1 + extra;
        float b_eff = kb == 0 && !c_bf16 ? beta : kb == 0 ? 0 : 1;
        if (kc > 0) pack_panels(A, a_bf16, trans_a, lda, m0, rows, k0, kc, MR, pairs, ap);
        if (extra) pack_panels(A2, a2_bf16, trans_a, lda2, m0, rows, 0, K2, MR, pairs, ap + pairs1 * MR);
        for (int64_t j0 = n0; j0 < n1; j0 += ncstep) {
            int64_t nc = n1 - j0 < ncstep ? n1 - j0 : ncstep;
            // op(B) column j is row j of Bᵀ: B stored (N, K) when trans_b, so its op-rows need
            // the transposed read exactly when trans_b is false.
            if (kc > 0) pack_panels(B, b_bf16, !trans_b, ldb, j0, nc, k0, kc, NR, pairs, bp);
            if (extra) pack_panels(B2, b2_bf16, !trans_b, ldb2, j0, nc, 0, K2, NR, pairs, bp + pairs1 * NR);
            for (int64_t p = 0; p < apanels; p++) {
                int mr = (int)(rows - p * MR < MR ? rows - p * MR : MR);
                for (int64_t q = 0; q * NR < nc; q++) {
                    int nr = (int)(nc - q * NR < NR ? nc - q * NR : NR);
                    kernel(pairs, ap + p * pairs * MR, bp + q * pairs * NR,
                           cf + p * MR * ldcf + (j0 - n0) + q * NR, ldcf, mr, nr, alpha, b_eff);
                }
            }
        }
    }
    if (c_bf16)
        for (int64_t i = 0; i < rows; i++) {
            uint16_t *out = (uint16_t *)C + (m0 + i) * ldc + n0;
            const float *in = cf + i * cols;
            for (int64_t j = 0; j < cols; j++) out[j] = to_bf16(in[j]);
        }
    return 0;
}
