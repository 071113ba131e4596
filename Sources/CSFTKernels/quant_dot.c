// Integer-activation matrix-vector products on GGML blocks, for batch-1 generation (the way
// llama.cpp's CPU backend runs them): the activation vector x is quantized once per product to
// integer blocks of 32, and each weight block times activation block becomes an integer dot
// product scaled once by d_w * d_x. Reading 4-bit weights needs no f32 decode, and 32
// multiply-adds take one or two instructions (vpdpbusd, or vpmaddubsw + vpmaddwd).
//
// Activation formats: 4- and 5-bit weights meet 8-bit x (sft_q8x_block, as llama.cpp);
// Q8_0 weights meet 16-bit x (sft_q16x_block). Sign-extending 8-bit weights to 16 bits costs
// what the sign tricks of an 8x8-bit product cost, so the 16-bit form is as fast, and it keeps
// x's rounding 128 times smaller where it matters most: the LM head (Q8_0 in most GGUFs), whose
// logits pick the token directly (with 8-bit x, SmolLM2's answer to a factual chat question
// flips at a near tie of its first token, as it does in llama.cpp).
//
// Math per block b of a row (q_w the weight codes as the dequantizer reads them):
//   Q4_0, Q5_0, Q8_0:  d_w d_x sum_j q_w[j] q_x[j]                   (q_w signed)
//   Q4_1, Q5_1:        d_w d_x sum_j q_w[j] q_x[j] + m_w s_x         (s_x = d_x sum_j q_x[j])
// and the row's dot is the sum over its blocks. The generic C functions are the spec; the
// AVX2 and AVX-512 VNNI kernels compute the same integer sums exactly and differ only in the
// order of the float additions. The quantizers are bit-exact across instruction sets (one
// division for d, one for 1/d, products rounded half to even by the current rounding mode).
//
// Q4_0, Q4_1 and Q8_0 also have an interleaved layout (groups of 8 rows, one row per vector
// lane; section below) that their kernels read several times faster than GGML's row layout.
// sft_qmatvec quantizes x once and hands out pieces of rows (of up to four matrices sharing x,
// in either layout) on the shim's thread pool; epilogues fuse the residual add and SwiGLU
// into the products.
#include "sftkernels.h"
#include "gguf_blocks.h"
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

_Static_assert(sizeof(sft_q8x_block) == 40, "q8x block size");
_Static_assert(sizeof(sft_q16x_block) == 68, "q16x block size");

/// Dot of one row of nb blocks with x in the row type's activation format.
typedef float (*qx_dot_fn)(const void *row, const void *x, int64_t nb);

// ---------------------------------------------------------------------------------------------
// Reference (the spec)
// ---------------------------------------------------------------------------------------------

static void quantize8_generic(const float *x, int64_t nb, sft_q8x_block *y) {
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            int q = (int)nearbyintf(x[j] * id);
            y[i].qs[j] = (int8_t)q;
            sum += q;
        }
        y[i].d = d;
        y[i].s = d * (float)sum;
    }
}

static void quantize16_generic(const float *x, int64_t nb, sft_q16x_block *y) {
    for (int64_t i = 0; i < nb; i++, x += QK) {
        float amax = 0;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 32767.0f, id = d != 0 ? 1.0f / d : 0.0f;
        for (int j = 0; j < QK; j++) y[i].qs[j] = (int16_t)nearbyintf(x[j] * id);
        y[i].d = d;
    }
}

static float dot_q4_0_generic(const void *row, const void *xv, int64_t nb) {
    const sft_q8x_block *x = xv;
    const block_q4_0 *b = row;
    float s = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK / 2; j++)
            sumi += ((b[i].qs[j] & 0x0F) - 8) * x[i].qs[j] + ((b[i].qs[j] >> 4) - 8) * x[i].qs[j + QK / 2];
        s += h2f(b[i].d) * x[i].d * (float)sumi;
    }
    return s;
}

static float dot_q4_1_generic(const void *row, const void *xv, int64_t nb) {
    const sft_q8x_block *x = xv;
    const block_q4_1 *b = row;
    float s = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK / 2; j++)
            sumi += (b[i].qs[j] & 0x0F) * x[i].qs[j] + (b[i].qs[j] >> 4) * x[i].qs[j + QK / 2];
        s += h2f(b[i].d) * x[i].d * (float)sumi + h2f(b[i].m) * x[i].s;
    }
    return s;
}

// The fifth bit of value j (0..31) of a Q5 block is bit j of qh.
static inline int q5_code(const uint8_t *qs, uint32_t qh, int j) {
    int nib = j < QK / 2 ? (qs[j] & 0x0F) : (qs[j - QK / 2] >> 4);
    return nib | (int)((qh >> j) & 1) << 4;
}

static float dot_q5_0_generic(const void *row, const void *xv, int64_t nb) {
    const sft_q8x_block *x = xv;
    const block_q5_0 *b = row;
    float s = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < QK; j++) sumi += (q5_code(b[i].qs, qh, j) - 16) * x[i].qs[j];
        s += h2f(b[i].d) * x[i].d * (float)sumi;
    }
    return s;
}

static float dot_q5_1_generic(const void *row, const void *xv, int64_t nb) {
    const sft_q8x_block *x = xv;
    const block_q5_1 *b = row;
    float s = 0;
    for (int64_t i = 0; i < nb; i++) {
        uint32_t qh;
        memcpy(&qh, b[i].qh, 4);
        int sumi = 0;
        for (int j = 0; j < QK; j++) sumi += q5_code(b[i].qs, qh, j) * x[i].qs[j];
        s += h2f(b[i].d) * x[i].d * (float)sumi + h2f(b[i].m) * x[i].s;
    }
    return s;
}

// Q8_0 with 16-bit x. |sum| <= 32 * 128 * 32767 < 2^31.
static float dot_q8_0_generic(const void *row, const void *xv, int64_t nb) {
    const block_q8_0 *b = row;
    const sft_q16x_block *x = xv;
    float s = 0;
    for (int64_t i = 0; i < nb; i++) {
        int sumi = 0;
        for (int j = 0; j < QK; j++) sumi += b[i].qs[j] * x[i].qs[j];
        s += h2f(b[i].d) * x[i].d * (float)sumi;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// x86: AVX2 and AVX-512 VNNI
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))

// One block of 32 floats as integers: its largest magnitude amax gives the scale d = amax / qmax
// (returned), and i[k] holds x[8k .. 8k + 7] / d rounded to int32 (cvtps rounds by MXCSR: to
// nearest even, as nearbyintf in the reference).
AVX2 static inline float round_block_avx2(const float *x, float qmax, __m256i i[4]) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 v[4];
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
    __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1])),
                             _mm256_max_ps(_mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    const float amax = _mm_cvtss_f32(h), d = amax / qmax, id = d != 0 ? 1.0f / d : 0.0f;
    const __m256 vid = _mm256_set1_ps(id);
    for (int k = 0; k < 4; k++) i[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], vid));
    return d;
}

AVX2 static void quantize8_avx2(const float *x, int64_t nb, sft_q8x_block *y) {
    for (int64_t b = 0; b < nb; b++, x += QK) {
        __m256i i[4];
        const float d = round_block_avx2(x, 127.0f, i);
        __m256i sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
        // packs work within 128-bit lanes: the result holds the 4-value groups (dwords) in the
        // order 0, 2, 4, 6, 1, 3, 5, 7, which the permute puts back in order.
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i[0], i[1]), _mm256_packs_epi32(i[2], i[3]));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
        y[b].d = d;
        y[b].s = d * (float)_mm_cvtsi128_si32(s4);
    }
}

AVX2 static void quantize16_avx2(const float *x, int64_t nb, sft_q16x_block *y) {
    for (int64_t b = 0; b < nb; b++, x += QK) {
        __m256i i[4];
        const float d = round_block_avx2(x, 32767.0f, i);
        // packs within lanes leaves the 4-value groups (qwords) in the order 0, 2, 1, 3
        _mm256_storeu_si256((__m256i *)y[b].qs, _mm256_permute4x64_epi64(_mm256_packs_epi32(i[0], i[1]), 0xD8));
        _mm256_storeu_si256((__m256i *)(y[b].qs + 16), _mm256_permute4x64_epi64(_mm256_packs_epi32(i[2], i[3]), 0xD8));
        y[b].d = d;
    }
}

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles -> 32 bytes of codes 0..15 in value order (low nibbles, then high).
AVX2 static inline __m256i unpack_nibbles(const uint8_t *qs) {
    __m128i q = _mm_loadu_si128((const __m128i *)qs);
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0F));
}

// 32 bits -> 32 bytes, byte j = 0x10 when bit j is set (the fifth bit of Q5 code j).
AVX2 static inline __m256i fifth_bits(const uint8_t *qh) {
    uint32_t bits;
    memcpy(&bits, qh, 4);
    // byte j takes byte j/8 of the bits, then tests bit j%8 of it
    __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits),
                                         _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202, 0x0303030303030303));
    const __m256i select = _mm256_set1_epi64x((int64_t)0x8040201008040201);
    __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, select), select);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

// The step that differs between the two instruction sets: 32 unsigned bytes u times 32 signed
// bytes s, each four adjacent products summed into one of 8 int32 lanes. maddubs sums pairs
// into int16 first; no pair can saturate (|u| <= 31 and |s| <= 127 here).
AVX2 static inline __m256i mul_sum_avx2(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}
VNNI static inline __m256i mul_sum_vnni(__m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
}
// The same for 16 + 16 int16 pairs (Q8_0 with 16-bit x): each lane sums four products,
// |lane| <= 4 * 128 * 32767 < 2^24, so its conversion to float below is exact.
AVX2 static inline __m256i mul_sum16_avx2(__m256i w0, __m256i y0, __m256i w1, __m256i y1) {
    return _mm256_add_epi32(_mm256_madd_epi16(w0, y0), _mm256_madd_epi16(w1, y1));
}
VNNI static inline __m256i mul_sum16_vnni(__m256i w0, __m256i y0, __m256i w1, __m256i y1) {
    return _mm256_dpwssd_epi32(_mm256_dpwssd_epi32(_mm256_setzero_si256(), w0, y0), w1, y1);
}

// Signed weight codes w: |w| carries the magnitude (unsigned operand) and x takes w's sign.
#define SIGNED_DOT(MUL_SUM, w, y) MUL_SUM(_mm256_sign_epi8(w, w), _mm256_sign_epi8(y, w))

// Kernel bodies, written once and compiled per instruction set with its MUL_SUM. Two blocks per
// iteration into two accumulators, so consecutive blocks do not wait on each other's FMA.
// BLOCK(MUL_SUM, i, acc, summs) adds block i's scaled integer dot to acc (and the minimum
// term to summs).
#define QX_KERNEL(NAME, TARGET, BLOCK_T, X_T, BLOCK, MUL_SUM)                                  \
    TARGET static float NAME(const void *row, const void *xv, int64_t nb) {                    \
        const BLOCK_T *b = row;                                                                \
        const X_T *x = xv;                                                                     \
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();                         \
        float summs0 = 0, summs1 = 0;                                                          \
        int64_t i = 0;                                                                         \
        for (; i + 2 <= nb; i += 2) {                                                          \
            BLOCK(MUL_SUM, i, acc0, summs0);                                                   \
            BLOCK(MUL_SUM, i + 1, acc1, summs1);                                               \
        }                                                                                      \
        if (i < nb) BLOCK(MUL_SUM, i, acc0, summs0);                                           \
        (void)summs1;                                                                          \
        return hsum256(_mm256_add_ps(acc0, acc1)) + (summs0 + summs1);                         \
    }

#define SCALE(i) _mm256_set1_ps(_cvtsh_ss(b[i].d) * x[i].d)
#define Y(i) _mm256_loadu_si256((const __m256i *)x[i].qs)

#define Q4_0_BLOCK(MUL_SUM, i, acc, summs)                                                     \
    do {                                                                                       \
        __m256i w = _mm256_sub_epi8(unpack_nibbles(b[i].qs), _mm256_set1_epi8(8));             \
        acc = _mm256_fmadd_ps(SCALE(i), _mm256_cvtepi32_ps(SIGNED_DOT(MUL_SUM, w, Y(i))), acc); \
    } while (0)
#define Q4_1_BLOCK(MUL_SUM, i, acc, summs)                                                     \
    do {                                                                                       \
        __m256i w = unpack_nibbles(b[i].qs);                                                   \
        acc = _mm256_fmadd_ps(SCALE(i), _mm256_cvtepi32_ps(MUL_SUM(w, Y(i))), acc);            \
        summs += _cvtsh_ss(b[i].m) * x[i].s;                                                   \
    } while (0)
#define Q5_0_BLOCK(MUL_SUM, i, acc, summs)                                                     \
    do {                                                                                       \
        __m256i w = _mm256_or_si256(unpack_nibbles(b[i].qs), fifth_bits(b[i].qh));             \
        w = _mm256_sub_epi8(w, _mm256_set1_epi8(16));                                          \
        acc = _mm256_fmadd_ps(SCALE(i), _mm256_cvtepi32_ps(SIGNED_DOT(MUL_SUM, w, Y(i))), acc); \
    } while (0)
#define Q5_1_BLOCK(MUL_SUM, i, acc, summs)                                                     \
    do {                                                                                       \
        __m256i w = _mm256_or_si256(unpack_nibbles(b[i].qs), fifth_bits(b[i].qh));             \
        acc = _mm256_fmadd_ps(SCALE(i), _mm256_cvtepi32_ps(MUL_SUM(w, Y(i))), acc);            \
        summs += _cvtsh_ss(b[i].m) * x[i].s;                                                   \
    } while (0)
#define Q8_0_BLOCK(MUL_SUM16, i, acc, summs)                                                   \
    do {                                                                                       \
        __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[i].qs));          \
        __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b[i].qs + 16)));   \
        __m256i p = MUL_SUM16(w0, _mm256_loadu_si256((const __m256i *)x[i].qs), w1,            \
                              _mm256_loadu_si256((const __m256i *)(x[i].qs + 16)));            \
        acc = _mm256_fmadd_ps(SCALE(i), _mm256_cvtepi32_ps(p), acc);                           \
    } while (0)

QX_KERNEL(dot_q4_0_avx2, AVX2, block_q4_0, sft_q8x_block, Q4_0_BLOCK, mul_sum_avx2)
QX_KERNEL(dot_q4_1_avx2, AVX2, block_q4_1, sft_q8x_block, Q4_1_BLOCK, mul_sum_avx2)
QX_KERNEL(dot_q5_0_avx2, AVX2, block_q5_0, sft_q8x_block, Q5_0_BLOCK, mul_sum_avx2)
QX_KERNEL(dot_q5_1_avx2, AVX2, block_q5_1, sft_q8x_block, Q5_1_BLOCK, mul_sum_avx2)
QX_KERNEL(dot_q8_0_avx2, AVX2, block_q8_0, sft_q16x_block, Q8_0_BLOCK, mul_sum16_avx2)
QX_KERNEL(dot_q4_0_vnni, VNNI, block_q4_0, sft_q8x_block, Q4_0_BLOCK, mul_sum_vnni)
QX_KERNEL(dot_q4_1_vnni, VNNI, block_q4_1, sft_q8x_block, Q4_1_BLOCK, mul_sum_vnni)
QX_KERNEL(dot_q5_0_vnni, VNNI, block_q5_0, sft_q8x_block, Q5_0_BLOCK, mul_sum_vnni)
QX_KERNEL(dot_q5_1_vnni, VNNI, block_q5_1, sft_q8x_block, Q5_1_BLOCK, mul_sum_vnni)
QX_KERNEL(dot_q8_0_vnni, VNNI, block_q8_0, sft_q16x_block, Q8_0_BLOCK, mul_sum16_vnni)
#endif

// ---------------------------------------------------------------------------------------------
// Interleaved layout for Q4_0 / Q4_1 / Q8_0: 8 rows per vector
// ---------------------------------------------------------------------------------------------
//
// The kernels above reduce each block's 8 int32 lanes to one row's sum and scale it alone,
// about 15 instructions per row and block. In the interleaved layout the rows of a matrix are
// stored in groups of 8, block column by block column: the 8 rows' scales, then their codes
// regrouped in chunks so that one load holds the same few code positions of each row (lane
// r = row r). One vpdpbusd (vpdpwssd for Q8_0 with 16-bit x) then multiplies those codes of
// all 8 rows by the same x values (broadcast), the lanes end as the 8 rows' block sums, and
// scaling is one vector FMA: about 4 instructions per row and block. Rows past the last whole
// group keep the GGML layout, after the groups; the size is the same.
//
// Chunk c of row r holds bytes [w c, w c + w) of that row's GGML codes, w = 4 bytes for Q4_0 /
// Q4_1 (a byte's low nibble is value j, its high nibble value 16 + j) and 2 for Q8_0.
typedef struct { f16_t d[8]; uint8_t qs[4][8][4]; } block_q4_0x8;
typedef struct { f16_t d[8]; f16_t m[8]; uint8_t qs[4][8][4]; } block_q4_1x8;
typedef struct { f16_t d[8]; int8_t qs[16][8][2]; } block_q8_0x8;
_Static_assert(sizeof(block_q4_0x8) == 8 * sizeof(block_q4_0), "q4_0x8 block size");
_Static_assert(sizeof(block_q4_1x8) == 8 * sizeof(block_q4_1), "q4_1x8 block size");
_Static_assert(sizeof(block_q8_0x8) == 8 * sizeof(block_q8_0), "q8_0x8 block size");

/// out[r] = dot of row r of a group of 8 (nb interleaved blocks) with x, r < 8.
typedef void (*qx_dot8_fn)(const void *group, const void *x, int64_t nb, float *out);

int sft_qx_can_interleave(int type) { return type == T_Q4_0 || type == T_Q4_1 || type == T_Q8_0; }

// One GGML block <-> row r's place in an interleaved group (to_group: GGML -> interleaved).
// Both GGML blocks and groups start with their f16 scale fields (d, or d and m), then codes.
static void move_block(int type, int to_group, uint8_t *group_block, int r, uint8_t *row_block) {
    const int nscales = type == T_Q4_1 ? 2 : 1, ncodes = type == T_Q8_0 ? 32 : 16, width = type == T_Q8_0 ? 2 : 4;
    for (int f = 0; f < nscales; f++) {
        uint8_t *gs = group_block + (f * 8 + r) * 2, *bs = row_block + f * 2;
        memcpy(to_group ? gs : bs, to_group ? bs : gs, 2);
    }
    uint8_t *gq = group_block + nscales * 16, *bq = row_block + nscales * 2;
    for (int c = 0; c < ncodes / width; c++) {
        uint8_t *gc = gq + (c * 8 + r) * width, *bc = bq + c * width;
        memcpy(to_group ? gc : bc, to_group ? bc : gc, (size_t)width);
    }
}

static int relayout(int type, int to_group, const void *src, int64_t rows, int64_t cols, void *dst) {
    if (!sft_qx_can_interleave(type)) return sft_set_error("interleave: GGML type %d has no interleaved layout", type);
    if (rows < 0 || cols <= 0 || cols % QK != 0)
        return sft_set_error("interleave: %lld x %lld is not a matrix of whole %d-value blocks", (long long)rows, (long long)cols, QK);
    int elems, bb;
    sft_gguf_block_info(type, &elems, &bb);
    const int64_t nb = cols / QK, groups = rows / 8;
    const uint8_t *in = src;
    uint8_t *out = dst;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nb; b++) {
            const size_t group_block = (size_t)(g * nb + b) * 8 * bb;
            for (int r = 0; r < 8; r++) {
                const size_t row_block = ((size_t)(g * 8 + r) * nb + b) * bb;
                if (to_group) move_block(type, 1, out + group_block, r, (uint8_t *)(in + row_block));
                else move_block(type, 0, (uint8_t *)(in + group_block), r, out + row_block);
            }
        }
    const size_t done = (size_t)groups * 8 * nb * bb;
    memcpy(out + done, in + done, (size_t)(rows - groups * 8) * nb * bb);
    return 0;
}

int sft_qx_interleave(int type, const void *src, int64_t rows, int64_t cols, void *dst) {
    return relayout(type, 1, src, rows, cols, dst);
}

int sft_qx_deinterleave(int type, const void *src, int64_t rows, int64_t cols, void *dst) {
    return relayout(type, 0, src, rows, cols, dst);
}

// Reference: the plain kernels' math per row, codes read through the layout.
static void dot8_q4_0_generic(const void *group, const void *xv, int64_t nb, float *out) {
    const block_q4_0x8 *w = group;
    const sft_q8x_block *x = xv;
    for (int r = 0; r < 8; r++) {
        float s = 0;
        for (int64_t b = 0; b < nb; b++) {
            int sumi = 0;
            for (int c = 0; c < 4; c++)
                for (int t = 0; t < 4; t++) {
                    const uint8_t q = w[b].qs[c][r][t];
                    sumi += ((q & 0x0F) - 8) * x[b].qs[4 * c + t] + ((q >> 4) - 8) * x[b].qs[16 + 4 * c + t];
                }
            s += h2f(w[b].d[r]) * x[b].d * (float)sumi;
        }
        out[r] = s;
    }
}

static void dot8_q4_1_generic(const void *group, const void *xv, int64_t nb, float *out) {
    const block_q4_1x8 *w = group;
    const sft_q8x_block *x = xv;
    for (int r = 0; r < 8; r++) {
        float s = 0;
        for (int64_t b = 0; b < nb; b++) {
            int sumi = 0;
            for (int c = 0; c < 4; c++)
                for (int t = 0; t < 4; t++) {
                    const uint8_t q = w[b].qs[c][r][t];
                    sumi += (q & 0x0F) * x[b].qs[4 * c + t] + (q >> 4) * x[b].qs[16 + 4 * c + t];
                }
            s += h2f(w[b].d[r]) * x[b].d * (float)sumi + h2f(w[b].m[r]) * x[b].s;
        }
        out[r] = s;
    }
}

static void dot8_q8_0_generic(const void *group, const void *xv, int64_t nb, float *out) {
    const block_q8_0x8 *w = group;
    const sft_q16x_block *x = xv;
    for (int r = 0; r < 8; r++) {
        float s = 0;
        for (int64_t b = 0; b < nb; b++) {
            int sumi = 0;
            for (int c = 0; c < 16; c++)
                for (int t = 0; t < 2; t++) sumi += w[b].qs[c][r][t] * x[b].qs[2 * c + t];
            s += h2f(w[b].d[r]) * x[b].d * (float)sumi;
        }
        out[r] = s;
    }
}

#if defined(__x86_64__)
// Lane r of the result: sum over the 4 chunks of row r's 4 low-nibble codes times x values
// 4c..4c+3 and 4 high-nibble codes times x values 16+4c..16+4c+3 (unsigned codes).
#define NIBBLE_SUMS8(MUL_ACC, QS, XB)                                                         \
    ({                                                                                         \
        const __m256i mask_ = _mm256_set1_epi8(0x0F);                                          \
        const int8_t *xi_ = (XB).qs;                                                           \
        __m256i lo_ = _mm256_setzero_si256(), hi_ = _mm256_setzero_si256();                    \
        for (int c = 0; c < 4; c++) {                                                          \
            __m256i v_ = _mm256_loadu_si256((const __m256i *)(QS)[c]);                         \
            lo_ = MUL_ACC(lo_, _mm256_and_si256(v_, mask_), _mm256_set1_epi32(load_i32(xi_ + 4 * c))); \
            hi_ = MUL_ACC(hi_, _mm256_and_si256(_mm256_srli_epi16(v_, 4), mask_),              \
                          _mm256_set1_epi32(load_i32(xi_ + 16 + 4 * c)));                      \
        }                                                                                      \
        _mm256_add_epi32(lo_, hi_);                                                            \
    })

static inline int32_t load_i32(const void *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

AVX2 static inline __m256i mul_acc_avx2(__m256i acc, __m256i u, __m256i s) {
    return _mm256_add_epi32(acc, mul_sum_avx2(u, s));
}
VNNI static inline __m256i mul_acc_vnni(__m256i acc, __m256i u, __m256i s) {
    return _mm256_dpbusd_epi32(acc, u, s);
}
// 16 int16 pairs: lane += w0 x0 + w1 x1.
AVX2 static inline __m256i mul_acc16_avx2(__m256i acc, __m256i w, __m256i x) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(w, x));
}
VNNI static inline __m256i mul_acc16_vnni(__m256i acc, __m256i w, __m256i x) {
    return _mm256_dpwssd_epi32(acc, w, x);
}

// Q4_0 codes are dotted unsigned: sum (q - 8) x = sum q x - 8 sum x, and d_x sum x is s_x.
#define DOT8_KERNELS(SUFFIX, TARGET, MUL_ACC)                                                  \
    TARGET static void dot8_q4_0_##SUFFIX(const void *group, const void *xv, int64_t nb, float *out) { \
        const block_q4_0x8 *w = group;                                                         \
        const sft_q8x_block *x = xv;                                                           \
        __m256 acc = _mm256_setzero_ps();                                                      \
        for (int64_t b = 0; b < nb; b++) {                                                     \
            __m256 sum = _mm256_cvtepi32_ps(NIBBLE_SUMS8(MUL_ACC, w[b].qs, x[b]));             \
            __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[b].d));              \
            __m256 t = _mm256_fmsub_ps(_mm256_set1_ps(x[b].d), sum, _mm256_set1_ps(8 * x[b].s)); \
            acc = _mm256_fmadd_ps(d, t, acc);                                                  \
        }                                                                                      \
        _mm256_storeu_ps(out, acc);                                                            \
    }                                                                                          \
    TARGET static void dot8_q4_1_##SUFFIX(const void *group, const void *xv, int64_t nb, float *out) { \
        const block_q4_1x8 *w = group;                                                         \
        const sft_q8x_block *x = xv;                                                           \
        __m256 acc = _mm256_setzero_ps();                                                      \
        for (int64_t b = 0; b < nb; b++) {                                                     \
            __m256 sum = _mm256_cvtepi32_ps(NIBBLE_SUMS8(MUL_ACC, w[b].qs, x[b]));             \
            __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[b].d));              \
            __m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[b].m));              \
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), sum, acc);         \
            acc = _mm256_fmadd_ps(m, _mm256_set1_ps(x[b].s), acc);                             \
        }                                                                                      \
        _mm256_storeu_ps(out, acc);                                                            \
    }

// Q8_0 with 16-bit x: chunk c's 2 codes of each row, sign-extended, times x values 2c, 2c+1.
// A lane's block sum is row r's exact integer sum (|sum| < 2^31), converted once as in the
// reference.
#define DOT8_Q8_0_KERNEL(SUFFIX, TARGET, MUL_ACC16)                                            \
    TARGET static void dot8_q8_0_##SUFFIX(const void *group, const void *xv, int64_t nb, float *out) { \
        const block_q8_0x8 *w = group;                                                         \
        const sft_q16x_block *x = xv;                                                          \
        __m256 acc = _mm256_setzero_ps();                                                      \
        for (int64_t b = 0; b < nb; b++) {                                                     \
            __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();                  \
            for (int c = 0; c < 16; c += 2) {                                                  \
                __m256i w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].qs[c])); \
                __m256i w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)w[b].qs[c + 1])); \
                s0 = MUL_ACC16(s0, w0, _mm256_set1_epi32(load_i32(x[b].qs + 2 * c)));           \
                s1 = MUL_ACC16(s1, w1, _mm256_set1_epi32(load_i32(x[b].qs + 2 * c + 2)));       \
            }                                                                                  \
            __m256 sum = _mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1));                         \
            __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w[b].d));              \
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(x[b].d)), sum, acc);         \
        }                                                                                      \
        _mm256_storeu_ps(out, acc);                                                            \
    }

DOT8_KERNELS(avx2, AVX2, mul_acc_avx2)
DOT8_KERNELS(vnni, VNNI, mul_acc_vnni)
DOT8_Q8_0_KERNEL(avx2, AVX2, mul_acc16_avx2)
DOT8_Q8_0_KERNEL(vnni, VNNI, mul_acc16_vnni)
#endif

static qx_dot8_fn pick_dot8(int type, int isa) {
#if defined(__x86_64__)
    if (isa == SFT_ISA_AVX512VNNI) {
        switch (type) {
        case T_Q4_0: return dot8_q4_0_vnni;
        case T_Q4_1: return dot8_q4_1_vnni;
        case T_Q8_0: return dot8_q8_0_vnni;
        }
    }
    if (isa >= SFT_ISA_AVX2) {
        switch (type) {
        case T_Q4_0: return dot8_q4_0_avx2;
        case T_Q4_1: return dot8_q4_1_avx2;
        case T_Q8_0: return dot8_q8_0_avx2;
        }
    }
#endif
    switch (type) {
    case T_Q4_0: return dot8_q4_0_generic;
    case T_Q4_1: return dot8_q4_1_generic;
    case T_Q8_0: return dot8_q8_0_generic;
    }
    return NULL;
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

int sft_qx_bits(int type) {
    switch (type) {
    case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: return 8;
    case T_Q8_0: return 16;
    default: return 0;
    }
}

// AVX-512 without VNNI runs the AVX2 kernels: on the 256-bit halves they are as fast, and
// maddubs needs only AVX2.
static qx_dot_fn pick_dot(int type, int isa) {
#if defined(__x86_64__)
    if (isa == SFT_ISA_AVX512VNNI) {
        switch (type) {
        case T_Q4_0: return dot_q4_0_vnni;
        case T_Q4_1: return dot_q4_1_vnni;
        case T_Q5_0: return dot_q5_0_vnni;
        case T_Q5_1: return dot_q5_1_vnni;
        case T_Q8_0: return dot_q8_0_vnni;
        }
    }
    if (isa >= SFT_ISA_AVX2) {
        switch (type) {
        case T_Q4_0: return dot_q4_0_avx2;
        case T_Q4_1: return dot_q4_1_avx2;
        case T_Q5_0: return dot_q5_0_avx2;
        case T_Q5_1: return dot_q5_1_avx2;
        case T_Q8_0: return dot_q8_0_avx2;
        }
    }
#endif
    switch (type) {
    case T_Q4_0: return dot_q4_0_generic;
    case T_Q4_1: return dot_q4_1_generic;
    case T_Q5_0: return dot_q5_0_generic;
    case T_Q5_1: return dot_q5_1_generic;
    case T_Q8_0: return dot_q8_0_generic;
    }
    return NULL;
}

static void quantize8(int isa, const float *x, int64_t nb, sft_q8x_block *y) {
#if defined(__x86_64__)
    if (isa >= SFT_ISA_AVX2) { quantize8_avx2(x, nb, y); return; }
#endif
    quantize8_generic(x, nb, y);
}

static void quantize16(int isa, const float *x, int64_t nb, sft_q16x_block *y) {
#if defined(__x86_64__)
    if (isa >= SFT_ISA_AVX2) { quantize16_avx2(x, nb, y); return; }
#endif
    quantize16_generic(x, nb, y);
}

/// The instruction set to run (isa, or the best for AUTO); -1 with a message when unavailable.
static int resolve_isa(int isa, const char *op) {
    int best = sft_quant_isa_level();
    if (isa == SFT_ISA_AUTO) return best;
    if (isa < SFT_ISA_GENERIC || isa > SFT_ISA_AVX512VNNI) return sft_set_error("%s: unknown instruction set %d", op, isa);
    if (isa > best) return sft_set_error("%s: this CPU does not support instruction set %d (best: %d)", op, isa, best);
    return isa;
}

int sft_qx_quantize(int isa, int bits, const float *x, int64_t n, void *xq) {
    if ((isa = resolve_isa(isa, "qx_quantize")) < 0) return -1;
    if (n < 0 || n % QK != 0) return sft_set_error("qx_quantize: %lld values is not a multiple of %d", (long long)n, QK);
    if (bits == 8) quantize8(isa, x, n / QK, xq);
    else if (bits == 16) quantize16(isa, x, n / QK, xq);
    else return sft_set_error("qx_quantize: %d-bit activations (8 or 16)", bits);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Matrix-vector products on the pool
// ---------------------------------------------------------------------------------------------

enum { MAX_OUTS = 4, MAX_CHUNK = 256, STACK_BLOCKS = 64 };

typedef struct {
    const sft_qmv_out *outs;
    int nouts, mode, isa;
    int64_t cols, chunk;
    const float *x;
    qx_dot_fn dot[MAX_OUTS];        // NULL: the f32-activation kernel of quant_gguf.c
    qx_dot8_fn dot8[MAX_OUTS];      // interleaved matrices: a group of 8 rows at a time
    const void *xq[MAX_OUTS];       // x in the format dot[k] reads
    size_t row_bytes[MAX_OUTS];
    int64_t groups[MAX_OUTS];       // whole groups of 8 rows (interleaved matrices; else 0)
    int64_t first_piece[MAX_OUTS + 1];
    pthread_t caller;
    double caller_done;             // when the calling thread finished its last piece
} qmv_job;

static double now_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

// Contention guard. A pool job ends when its slowest piece does; when another process shares a
// core with a pool worker, the OS now and then suspends the worker in the middle of a piece for
// a whole time slice (milliseconds) and the call waits for it. Measured on the 2-core project
// machine while a compiler ran: decode at 2 threads fell to half its 1-thread speed. So a call
// whose end waited more than STALL_SECONDS for other threads makes the next `solo_left` calls
// run on the calling thread alone; that count doubles while stalls recur soon after each
// retry and drops back once CLEAN_RUN parallel calls in a row ended on time.
static const double STALL_SECONDS = 300e-6;
enum { SOLO_MIN = 1024, SOLO_MAX = 1 << 16, CLEAN_RUN = 4096 };
static _Atomic int64_t solo_left, solo_next = SOLO_MIN, clean_calls;

static void note_parallel_call(int stalled) {
    if (!stalled) {
        if (atomic_fetch_add_explicit(&clean_calls, 1, memory_order_relaxed) + 1 >= CLEAN_RUN)
            atomic_store_explicit(&solo_next, SOLO_MIN, memory_order_relaxed);
        return;
    }
    int64_t n = atomic_load_explicit(&solo_next, memory_order_relaxed);
    atomic_store_explicit(&solo_left, n, memory_order_relaxed);
    atomic_store_explicit(&solo_next, n * 2 < SOLO_MAX ? n * 2 : SOLO_MAX, memory_order_relaxed);
    atomic_store_explicit(&clean_calls, 0, memory_order_relaxed);
}

/// out[r - r0] = row r of matrix k times x, for r in [r0, r1); r0 is a multiple of 8.
static void rows_dot(const qmv_job *job, int k, int64_t r0, int64_t r1, float *out) {
    const sft_qmv_out *o = &job->outs[k];
    const uint8_t *w = o->w;
    const size_t rb = job->row_bytes[k];
    const int64_t nb = job->cols / QK;
    int64_t r = r0;
    if (job->groups[k] > 0 && job->dot8[k]) {
        for (; r + 8 <= r1 && r / 8 < job->groups[k]; r += 8) job->dot8[k](w + (size_t)r * rb, job->xq[k], nb, out + (r - r0));
    } else if (job->groups[k] > 0) {
        // f32 activations on an interleaved matrix: back to GGML rows one group at a time.
        uint8_t stack_rows[8 * 1024], *rows8 = 8 * rb <= sizeof stack_rows ? stack_rows : malloc(8 * rb);
        for (; rows8 && r + 8 <= r1 && r / 8 < job->groups[k]; r += 8) {
            sft_qx_deinterleave(o->type, w + (size_t)r * rb, 8, job->cols, rows8);
            sft_matvec_q_isa(job->isa, o->type, rows8, job->x, out + (r - r0), 8, job->cols, 0, 1);  // checked before
        }
        if (rows8 != stack_rows) free(rows8);
    }
    for (; r < r1; r++) {
        const uint8_t *row = w + (size_t)r * rb;
        if (job->dot[k]) out[r - r0] = job->dot[k](row, job->xq[k], nb);
        else sft_matvec_q_isa(job->isa, o->type, row, job->x, out + (r - r0), 1, job->cols, 0, 1);
    }
}

static void qmv_piece(void *ctx, int64_t piece) {
    const qmv_job *job = ctx;
    int k = 0;
    while (piece >= job->first_piece[k + 1]) k++;
    const int64_t r0 = (piece - job->first_piece[k]) * job->chunk;
    const int64_t r1 = r0 + job->chunk < job->outs[k].rows ? r0 + job->chunk : job->outs[k].rows;
    float a[MAX_CHUNK], *y = job->outs[k].y;
    qmv_job *mutable_job = ctx;
    rows_dot(job, k, r0, r1, a);
    switch (job->mode) {
    case SFT_QMV_STORE:
        memcpy(y + r0, a, sizeof(float) * (size_t)(r1 - r0));
        break;
    case SFT_QMV_ACCUMULATE:
        for (int64_t r = r0; r < r1; r++) y[r] += a[r - r0];
        break;
    case SFT_QMV_SWIGLU: {
        float u[MAX_CHUNK];
        rows_dot(job, 1, r0, r1, u);
        for (int64_t r = r0; r < r1; r++) {
            const float g = a[r - r0];
            y[r] = g / (1.0f + expf(-g)) * u[r - r0];
        }
        break;
    }
    }
    if (pthread_equal(pthread_self(), job->caller)) mutable_job->caller_done = now_seconds();
}

int sft_qmatvec(int isa, int int_x, const sft_qmv_out *outs, int nouts, const float *x,
                int64_t cols, int mode, int threads) {
    if ((isa = resolve_isa(isa, "qmatvec")) < 0) return -1;
    if (nouts < 1 || nouts > MAX_OUTS) return sft_set_error("qmatvec: %d matrices (1 to %d)", nouts, MAX_OUTS);
    if (mode != SFT_QMV_STORE && mode != SFT_QMV_ACCUMULATE && mode != SFT_QMV_SWIGLU)
        return sft_set_error("qmatvec: unknown mode %d", mode);
    if (mode == SFT_QMV_SWIGLU && (nouts != 2 || outs[0].rows != outs[1].rows))
        return sft_set_error("qmatvec: SwiGLU needs two matrices of equal rows (gate, up)");
    qmv_job job = {.outs = outs, .nouts = nouts, .mode = mode, .isa = isa, .cols = cols, .x = x};
    int64_t total = 0;
    int want8 = 0, want16 = 0;
    for (int k = 0; k < nouts; k++) {
        int elems, bytes;
        sft_gguf_block_info(outs[k].type, &elems, &bytes);
        if (elems == 0) return sft_set_error("qmatvec: GGML type %d is not supported", outs[k].type);
        if (cols <= 0 || cols % elems != 0)
            return sft_set_error("qmatvec: %lld columns is not a multiple of the block size %d of GGML type %d",
                                 (long long)cols, elems, outs[k].type);
        if (outs[k].rows < 0) return sft_set_error("qmatvec: matrix %d has %lld rows", k, (long long)outs[k].rows);
        if (!outs[k].y && !(mode == SFT_QMV_SWIGLU && k == 1)) return sft_set_error("qmatvec: matrix %d has no output", k);
        if (outs[k].interleaved && !sft_qx_can_interleave(outs[k].type))
            return sft_set_error("qmatvec: matrix %d: GGML type %d has no interleaved layout", k, outs[k].type);
        job.row_bytes[k] = (size_t)(cols / elems) * (size_t)bytes;
        const int bits = int_x ? sft_qx_bits(outs[k].type) : 0;
        job.dot[k] = bits ? pick_dot(outs[k].type, isa) : NULL;
        job.dot8[k] = bits && outs[k].interleaved ? pick_dot8(outs[k].type, isa) : NULL;
        job.groups[k] = outs[k].interleaved ? outs[k].rows / 8 : 0;
        want8 |= bits == 8;
        want16 |= bits == 16;
        if (mode != SFT_QMV_SWIGLU || k == 0) total += outs[k].rows;
    }
    if (threads < 1) threads = 1;
    // Pieces: about 4 per thread, so a thread the OS delays costs little while the pool's
    // shared counters (a cache line both cores write per piece) stay cheap; at least 16 rows,
    // at most MAX_CHUNK, and a multiple of 8 so pieces start on interleaved groups.
    int64_t chunk = total / (4 * (int64_t)threads);
    chunk = chunk < 16 ? 16 : chunk > MAX_CHUNK ? MAX_CHUNK : chunk;
    job.chunk = chunk / 8 * 8;
    const int pieced = mode == SFT_QMV_SWIGLU ? 1 : nouts;   // SwiGLU walks the gate's rows
    job.first_piece[0] = 0;
    for (int k = 0; k < pieced; k++) job.first_piece[k + 1] = job.first_piece[k] + (outs[k].rows + job.chunk - 1) / job.chunk;
    for (int k = pieced; k < MAX_OUTS; k++) job.first_piece[k + 1] = job.first_piece[pieced];
    const int64_t npieces = job.first_piece[pieced];
    if (npieces == 0) return 0;

    // x quantized once per format in use: on the stack for the usual widths.
    const int64_t nb = cols / QK;
    sft_q8x_block stack8[STACK_BLOCKS];
    sft_q16x_block stack16[STACK_BLOCKS];
    sft_q8x_block *xq8 = stack8;
    sft_q16x_block *xq16 = stack16;
    void *heap = NULL;
    if ((want8 || want16) && nb > STACK_BLOCKS) {
        heap = malloc((sizeof(sft_q8x_block) + sizeof(sft_q16x_block)) * (size_t)nb);
        if (!heap) return sft_set_error("qmatvec: out of memory for %lld activation blocks", (long long)nb);
        xq16 = heap;
        xq8 = (sft_q8x_block *)(xq16 + nb);
    }
    if (want8) quantize8(isa, x, nb, xq8);
    if (want16) quantize16(isa, x, nb, xq16);
    for (int k = 0; k < nouts; k++) job.xq[k] = sft_qx_bits(outs[k].type) == 16 ? (const void *)xq16 : (const void *)xq8;
    if (threads > 1 && atomic_load_explicit(&solo_left, memory_order_relaxed) > 0) {
        atomic_fetch_sub_explicit(&solo_left, 1, memory_order_relaxed);
        threads = 1;
    }
    job.caller = pthread_self();
    job.caller_done = 0;
    sft_parallel_for(npieces, threads, qmv_piece, &job);
    if (threads > 1 && npieces > 1 && job.caller_done > 0) note_parallel_call(now_seconds() - job.caller_done > STALL_SECONDS);
    free(heap);
    return 0;
}
