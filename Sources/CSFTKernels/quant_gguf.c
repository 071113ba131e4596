// GGML/GGUF block quantization formats: a readable reference dequantizer per block type
// (layouts, pinned by _Static_asserts, in gguf_blocks.h), and dot products / matrix-vector
// products of quantized rows with an f32 vector.
//
// Each block of QK values stores one or two f16 scales and packed integer codes. Everything is
// little-endian; blocks are packed with no padding.
//
// Vector kernels (dot products for Q4_0, Q4_1, Q8_0 and f32) exist for AVX2+FMA and AVX-512
// and are chosen at run time from cpuid; every other type goes through the reference
// dequantizer into a small buffer and the vector f32 dot. The reference code is the spec;
// tests check each vector path against it. The int8-activation kernels that batch-1 decode
// uses by default are in quant_dot.c; this f32 path is their fallback for other types.
#include "sftkernels.h"
#include "gguf_blocks.h"
#include <string.h>
#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline float bf2f(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

// ---------------------------------------------------------------------------------------------
// Reference dequantizers: one block in, QK or QK_K floats out.
// ---------------------------------------------------------------------------------------------

static void dq_q4_0(const block_q4_0 *b, float *y) {
    float d = h2f(b->d);
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * ((b->qs[j] & 0x0F) - 8);
        y[j + QK / 2] = d * ((b->qs[j] >> 4) - 8);
    }
}

static void dq_q4_1(const block_q4_1 *b, float *y) {
    float d = h2f(b->d), m = h2f(b->m);
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * (b->qs[j] & 0x0F) + m;
        y[j + QK / 2] = d * (b->qs[j] >> 4) + m;
    }
}

static inline uint32_t load_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dq_q5_0(const block_q5_0 *b, float *y) {
    float d = h2f(b->d);
    uint32_t qh = load_u32(b->qh);
    for (int j = 0; j < QK / 2; j++) {
        int lo = (b->qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
        int hi = (b->qs[j] >> 4) | (((qh >> (j + QK / 2)) & 1) << 4);
        y[j] = d * (lo - 16);
        y[j + QK / 2] = d * (hi - 16);
    }
}

static void dq_q5_1(const block_q5_1 *b, float *y) {
    float d = h2f(b->d), m = h2f(b->m);
    uint32_t qh = load_u32(b->qh);
    for (int j = 0; j < QK / 2; j++) {
        int lo = (b->qs[j] & 0x0F) | (((qh >> j) & 1) << 4);
        int hi = (b->qs[j] >> 4) | (((qh >> (j + QK / 2)) & 1) << 4);
        y[j] = d * lo + m;
        y[j + QK / 2] = d * hi + m;
    }
}

static void dq_q8_0(const block_q8_0 *b, float *y) {
    float d = h2f(b->d);
    for (int j = 0; j < QK; j++) y[j] = d * b->qs[j];
}

static void dq_iq4_nl(const block_iq4_nl *b, float *y) {
    float d = h2f(b->d);
    for (int j = 0; j < QK / 2; j++) {
        y[j] = d * iq4nl_values[b->qs[j] & 0x0F];
        y[j + QK / 2] = d * iq4nl_values[b->qs[j] >> 4];
    }
}

// Q2_K: the 64 code bytes hold 4 2-bit fields each. Values 0..127 read qs[0..31], values
// 128..255 read qs[32..63]; within a half, shift 2*k selects the k-th group of 32 values, and
// each group of 32 is two sub-blocks of 16 with their own scale byte.
static void dq_q2_K(const block_q2_K *b, float *y) {
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int i = 0; i < QK_K; i++) {
        int half = i / 128, group = (i % 128) / 32, l = i % 32;
        int sub = i / 16;  // sub-block index 0..15, in value order
        uint8_t sc = b->scales[sub];
        int q = (b->qs[half * 32 + l] >> (2 * group)) & 3;
        y[i] = d * (sc & 0x0F) * q - dmin * (sc >> 4);
    }
}

// Q3_K: scales are 16 6-bit values: low 4 bits in bytes 0..7 (nibbles: sub-block j uses byte
// j%8, low nibble for j<8, high nibble for j>=8), high 2 bits in bytes 8..11 (sub-block j uses
// byte 8 + j%4, bit pair j/4). Scale s - 32 is signed. Codes: 2 bits in qs as in Q2_K, third
// bit in hmask: bit (i/32) of hmask[i%32]; when clear, the code is lowered by 4.
static void dq_q3_K(const block_q3_K *b, float *y) {
    float d = h2f(b->d);
    int8_t sc[16];
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (b->scales[j] & 0x0F) : (b->scales[j - 8] >> 4);
        int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        sc[j] = (int8_t)((lo | (hi << 4)) - 32);
    }
    for (int i = 0; i < QK_K; i++) {
        int half = i / 128, group = (i % 128) / 32, l = i % 32;
        int q = (b->qs[half * 32 + l] >> (2 * group)) & 3;
        int high = (b->hmask[l] >> (i / 32)) & 1;
        y[i] = d * sc[i / 16] * (q - (high ? 0 : 4));
    }
}

// Scale and min of sub-block j (0..7) of Q4_K/Q5_K: 6-bit values; j<4 keep them in the low 6
// bits of bytes j (scale) and j+4 (min); j>=4 put their low 4 bits in byte j+4 (scale low
// nibble, min high nibble) and their top 2 bits in the spare top bits of bytes j-4 and j.
static inline void scale_min_k4(int j, const uint8_t *q, int *sc, int *mn) {
    if (j < 4) {
        *sc = q[j] & 63;
        *mn = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
        *mn = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

// Q4_K: values 64k..64k+31 are the low nibbles of qs[32k..32k+31] (sub-block 2k), values
// 64k+32..64k+63 the high nibbles (sub-block 2k+1).
static void dq_q4_K(const block_q4_K *b, float *y) {
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int i = 0; i < QK_K; i++) {
        int sub = i / 32, sc, mn;
        scale_min_k4(sub, b->scales, &sc, &mn);
        uint8_t byte = b->qs[(i / 64) * 32 + i % 32];
        int q = (sub & 1) ? (byte >> 4) : (byte & 0x0F);
        y[i] = d * sc * q - dmin * mn;
    }
}

// Q5_K: as Q4_K; the fifth bit of value i is bit (i/32) of qh[i%32].
static void dq_q5_K(const block_q5_K *b, float *y) {
    float d = h2f(b->d), dmin = h2f(b->dmin);
    for (int i = 0; i < QK_K; i++) {
        int sub = i / 32, sc, mn;
        scale_min_k4(sub, b->scales, &sc, &mn);
        uint8_t byte = b->qs[(i / 64) * 32 + i % 32];
        int q = ((sub & 1) ? (byte >> 4) : (byte & 0x0F)) | (((b->qh[i % 32] >> sub) & 1) << 4);
        y[i] = d * sc * q - dmin * mn;
    }
}

// Q6_K: in each half of 128 values (ql 64 bytes, qh 32 bytes), value 32g + l (g = 0..3,
// l = 0..31) takes its low nibble from ql[l + 32*(g&1)] (low nibble for g<2, high for g>=2)
// and its top 2 bits from qh[l] bits 2g..2g+1.
static void dq_q6_K(const block_q6_K *b, float *y) {
    float d = h2f(b->d);
    for (int i = 0; i < QK_K; i++) {
        int half = i / 128, g = (i % 128) / 32, l = i % 32;
        const uint8_t *ql = b->ql + 64 * half, *qh = b->qh + 32 * half;
        uint8_t lowbyte = ql[l + 32 * (g & 1)];
        int lo = g < 2 ? (lowbyte & 0x0F) : (lowbyte >> 4);
        int hi = (qh[l] >> (2 * g)) & 3;
        y[i] = d * b->scales[i / 16] * ((lo | (hi << 4)) - 32);
    }
}

static void dq_q8_K(const block_q8_K *b, float *y) {
    for (int i = 0; i < QK_K; i++) y[i] = b->d * b->qs[i];
}

// ---------------------------------------------------------------------------------------------
// Whole-tensor dequantization
// ---------------------------------------------------------------------------------------------

static int block_elems(int type) {
    switch (type) {
    case T_Q4_0: case T_Q4_1: case T_Q5_0: case T_Q5_1: case T_Q8_0: case T_IQ4_NL: return QK;
    case T_Q2_K: case T_Q3_K: case T_Q4_K: case T_Q5_K: case T_Q6_K: case T_Q8_K: return QK_K;
    case T_F32: case T_F16: case T_BF16: case T_F64: case T_I8: case T_I16: case T_I32: case T_I64: return 1;
    default: return 0;
    }
}

int sft_gguf_can_dequantize(int type) { return block_elems(type) != 0; }

#define DQ_BLOCKS(T, fn, qk)                                                  \
    do {                                                                      \
        const T *b = (const T *)src;                                          \
        for (int64_t i = 0; i < n / (qk); i++) fn(b + i, dst + i * (qk));     \
    } while (0)

int sft_gguf_dequantize(int type, const void *src, float *dst, int64_t n) {
    int bs = block_elems(type);
    if (bs == 0) return sft_set_error("GGML type %d cannot be dequantized", type);
    if (n < 0 || n % bs != 0)
        return sft_set_error("GGML type %d: %lld values is not a whole number of %d-value blocks",
                             type, (long long)n, bs);
    switch (type) {
    case T_F32: memcpy(dst, src, (size_t)n * 4); break;
    case T_F16: { const f16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = h2f(s[i]); } break;
    case T_BF16: { const uint16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = bf2f(s[i]); } break;
    case T_F64: { const double *s = src; for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i]; } break;
    case T_I8: { const int8_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; } break;
    case T_I16: { const int16_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = s[i]; } break;
    case T_I32: { const int32_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i]; } break;
    case T_I64: { const int64_t *s = src; for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i]; } break;
    case T_Q4_0: DQ_BLOCKS(block_q4_0, dq_q4_0, QK); break;
    case T_Q4_1: DQ_BLOCKS(block_q4_1, dq_q4_1, QK); break;
    case T_Q5_0: DQ_BLOCKS(block_q5_0, dq_q5_0, QK); break;
    case T_Q5_1: DQ_BLOCKS(block_q5_1, dq_q5_1, QK); break;
    case T_Q8_0: DQ_BLOCKS(block_q8_0, dq_q8_0, QK); break;
    case T_IQ4_NL: DQ_BLOCKS(block_iq4_nl, dq_iq4_nl, QK); break;
    case T_Q2_K: DQ_BLOCKS(block_q2_K, dq_q2_K, QK_K); break;
    case T_Q3_K: DQ_BLOCKS(block_q3_K, dq_q3_K, QK_K); break;
    case T_Q4_K: DQ_BLOCKS(block_q4_K, dq_q4_K, QK_K); break;
    case T_Q5_K: DQ_BLOCKS(block_q5_K, dq_q5_K, QK_K); break;
    case T_Q6_K: DQ_BLOCKS(block_q6_K, dq_q6_K, QK_K); break;
    case T_Q8_K: DQ_BLOCKS(block_q8_K, dq_q8_K, QK_K); break;
    }
    return 0;
}

// Bytes per block for the types sft_gguf_dequantize supports (0 otherwise).
static int block_bytes(int type) {
    switch (type) {
    case T_F32: case T_I32: return 4;
    case T_F16: case T_BF16: case T_I16: return 2;
    case T_F64: case T_I64: return 8;
    case T_I8: return 1;
    case T_Q4_0: return sizeof(block_q4_0);
    case T_Q4_1: return sizeof(block_q4_1);
    case T_Q5_0: return sizeof(block_q5_0);
    case T_Q5_1: return sizeof(block_q5_1);
    case T_Q8_0: return sizeof(block_q8_0);
    case T_IQ4_NL: return sizeof(block_iq4_nl);
    case T_Q2_K: return sizeof(block_q2_K);
    case T_Q3_K: return sizeof(block_q3_K);
    case T_Q4_K: return sizeof(block_q4_K);
    case T_Q5_K: return sizeof(block_q5_K);
    case T_Q6_K: return sizeof(block_q6_K);
    case T_Q8_K: return sizeof(block_q8_K);
    default: return 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Dot products, generic C (the reference for the vector versions)
// ---------------------------------------------------------------------------------------------

static float dot_f32_generic(const float *a, const float *b, int64_t n) {
    float s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_q4_0_generic(const void *row, const float *x, int64_t n) {
    const block_q4_0 *b = row;
    float s = 0;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float t = 0;
        for (int j = 0; j < QK / 2; j++)
            t += ((b[i].qs[j] & 0x0F) - 8) * x[j] + ((b[i].qs[j] >> 4) - 8) * x[j + QK / 2];
        s += h2f(b[i].d) * t;
    }
    return s;
}

static float dot_q4_1_generic(const void *row, const float *x, int64_t n) {
    const block_q4_1 *b = row;
    float s = 0;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float t = 0, sx = 0;
        for (int j = 0; j < QK / 2; j++) {
            t += (b[i].qs[j] & 0x0F) * x[j] + (b[i].qs[j] >> 4) * x[j + QK / 2];
            sx += x[j] + x[j + QK / 2];
        }
        s += h2f(b[i].d) * t + h2f(b[i].m) * sx;
    }
    return s;
}

static float dot_q8_0_generic(const void *row, const float *x, int64_t n) {
    const block_q8_0 *b = row;
    float s = 0;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float t = 0;
        for (int j = 0; j < QK; j++) t += b[i].qs[j] * x[j];
        s += h2f(b[i].d) * t;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// AVX2 + FMA
// ---------------------------------------------------------------------------------------------
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static float dot_f32_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float s = hsum256(_mm256_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

// 8 unsigned bytes -> 8 floats
#define U8F(v) _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
#define I8F(v) _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))

// Sum over the block of code * x for 16 packed nibble bytes (values j and j+16 per byte),
// with signed (q4_0: code - 8) or unsigned (q4_1) codes.
AVX2 static inline __m256 nibble_dot_avx2(__m128i q, const float *x, int sub8, __m256 *sumx) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    if (sub8) {
        lo = _mm_sub_epi8(lo, _mm_set1_epi8(8));
        hi = _mm_sub_epi8(hi, _mm_set1_epi8(8));
    }
    __m256 x0 = _mm256_loadu_ps(x), x1 = _mm256_loadu_ps(x + 8), x2 = _mm256_loadu_ps(x + 16),
           x3 = _mm256_loadu_ps(x + 24);
    __m256 q0, q1, q2, q3;
    if (sub8) {
        q0 = I8F(lo); q1 = I8F(_mm_srli_si128(lo, 8)); q2 = I8F(hi); q3 = I8F(_mm_srli_si128(hi, 8));
    } else {
        q0 = U8F(lo); q1 = U8F(_mm_srli_si128(lo, 8)); q2 = U8F(hi); q3 = U8F(_mm_srli_si128(hi, 8));
        *sumx = _mm256_add_ps(_mm256_add_ps(x0, x1), _mm256_add_ps(x2, x3));
    }
    __m256 t = _mm256_mul_ps(q0, x0);
    t = _mm256_fmadd_ps(q1, x1, t);
    t = _mm256_fmadd_ps(q2, x2, t);
    return _mm256_fmadd_ps(q3, x3, t);
}

AVX2 static float dot_q4_0_avx2(const void *row, const float *x, int64_t n) {
    const block_q4_0 *b = row;
    __m256 acc = _mm256_setzero_ps(), unused;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        __m256 t = nibble_dot_avx2(_mm_loadu_si128((const __m128i *)b[i].qs), x, 1, &unused);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
    }
    return hsum256(acc);
}

AVX2 static float dot_q4_1_avx2(const void *row, const float *x, int64_t n) {
    const block_q4_1 *b = row;
    __m256 acc = _mm256_setzero_ps(), accm = _mm256_setzero_ps(), sx;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        __m256 t = nibble_dot_avx2(_mm_loadu_si128((const __m128i *)b[i].qs), x, 0, &sx);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
        accm = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].m)), sx, accm);
    }
    return hsum256(_mm256_add_ps(acc, accm));
}

AVX2 static float dot_q8_0_avx2(const void *row, const float *x, int64_t n) {
    const block_q8_0 *b = row;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        __m128i q01 = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i q23 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        __m256 t = _mm256_mul_ps(I8F(q01), _mm256_loadu_ps(x));
        t = _mm256_fmadd_ps(I8F(_mm_srli_si128(q01, 8)), _mm256_loadu_ps(x + 8), t);
        t = _mm256_fmadd_ps(I8F(q23), _mm256_loadu_ps(x + 16), t);
        t = _mm256_fmadd_ps(I8F(_mm_srli_si128(q23, 8)), _mm256_loadu_ps(x + 24), t);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
    }
    return hsum256(acc);
}

// ---------------------------------------------------------------------------------------------
// AVX-512 (F only: 16 floats per vector, 16 nibble bytes -> 16 int32 in one instruction)
// ---------------------------------------------------------------------------------------------
#define AVX512 __attribute__((target("avx512f,avx2,fma,f16c")))

AVX512 static float dot_f32_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    float s = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

AVX512 static float dot_q4_0_avx512(const void *row, const float *x, int64_t n) {
    const block_q4_0 *b = row;
    const __m128i mask = _mm_set1_epi8(0x0F), eight = _mm_set1_epi8(8);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        __m128i q = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight);
        __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(lo)), _mm512_loadu_ps(x));
        t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(hi)), _mm512_loadu_ps(x + 16), t);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
    }
    return _mm512_reduce_add_ps(acc);
}

// One Q4_1 block: acc += d * (codes . x), accm += m * sum(x).
AVX512 static inline void q4_1_block_avx512(const block_q4_1 *b, const float *x, __m512 *acc, __m512 *accm) {
    const __m128i mask = _mm_set1_epi8(0x0F);
    __m128i q = _mm_loadu_si128((const __m128i *)b->qs);
    __m128i lo = _mm_and_si128(q, mask), hi = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
    __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(lo)), x0);
    t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(hi)), x1, t);
    *acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b->d)), t, *acc);
    *accm = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b->m)), _mm512_add_ps(x0, x1), *accm);
}

AVX512 static float dot_q4_1_avx512(const void *row, const float *x, int64_t n) {
    const block_q4_1 *b = row;
    // two independent accumulator pairs so consecutive blocks do not wait on each other
    __m512 a0 = _mm512_setzero_ps(), m0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
    int64_t nb = n / QK, i = 0;
    for (; i + 2 <= nb; i += 2) {
        q4_1_block_avx512(b + i, x + i * QK, &a0, &m0);
        q4_1_block_avx512(b + i + 1, x + (i + 1) * QK, &a1, &m1);
    }
    if (i < nb) q4_1_block_avx512(b + i, x + i * QK, &a0, &m0);
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, m0), _mm512_add_ps(a1, m1)));
}

AVX512 static float dot_q8_0_avx512(const void *row, const float *x, int64_t n) {
    const block_q8_0 *b = row;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        __m128i q0 = _mm_loadu_si128((const __m128i *)b[i].qs);
        __m128i q1 = _mm_loadu_si128((const __m128i *)(b[i].qs + 16));
        __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0)), _mm512_loadu_ps(x));
        t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1)), _mm512_loadu_ps(x + 16), t);
        acc = _mm512_fmadd_ps(_mm512_set1_ps(_cvtsh_ss(b[i].d)), t, acc);
    }
    return _mm512_reduce_add_ps(acc);
}
#endif

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------

typedef float (*qdot_fn)(const void *, const float *, int64_t);
typedef float (*fdot_fn)(const float *, const float *, int64_t);

static int detected_isa(void) {
    static int isa = 0;  // benign race: every thread computes the same value
    if (isa == 0) {
        int level = SFT_ISA_GENERIC;
#if defined(__x86_64__)
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c"))
            level = SFT_ISA_AVX2;
        if (level == SFT_ISA_AVX2 && __builtin_cpu_supports("avx512f")) level = SFT_ISA_AVX512;
        if (level == SFT_ISA_AVX512 && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512vnni"))
            level = SFT_ISA_AVX512VNNI;
#endif
        isa = level;
    }
    return isa;
}

static qdot_fn pick_qdot(int type, int isa) {
#if defined(__x86_64__)
    if (isa >= SFT_ISA_AVX512) {  // VNNI adds nothing to f32 arithmetic
        if (type == T_Q4_0) return dot_q4_0_avx512;
        if (type == T_Q4_1) return dot_q4_1_avx512;
        if (type == T_Q8_0) return dot_q8_0_avx512;
    }
    if (isa == SFT_ISA_AVX2) {
        if (type == T_Q4_0) return dot_q4_0_avx2;
        if (type == T_Q4_1) return dot_q4_1_avx2;
        if (type == T_Q8_0) return dot_q8_0_avx2;
    }
#endif
    if (type == T_Q4_0) return dot_q4_0_generic;
    if (type == T_Q4_1) return dot_q4_1_generic;
    if (type == T_Q8_0) return dot_q8_0_generic;
    return NULL;
}

static fdot_fn pick_fdot(int isa) {
#if defined(__x86_64__)
    if (isa >= SFT_ISA_AVX512) return dot_f32_avx512;
    if (isa == SFT_ISA_AVX2) return dot_f32_avx2;
#endif
    return dot_f32_generic;
}

float sft_vec_dot_q4_0_f32(const void *row, const float *x, int64_t n) {
    return pick_qdot(T_Q4_0, detected_isa())(row, x, n);
}
float sft_vec_dot_q4_1_f32(const void *row, const float *x, int64_t n) {
    return pick_qdot(T_Q4_1, detected_isa())(row, x, n);
}
float sft_vec_dot_q8_0_f32(const void *row, const float *x, int64_t n) {
    return pick_qdot(T_Q8_0, detected_isa())(row, x, n);
}

int sft_matvec_q_isa(int isa, int type, const void *w, const float *x, float *y, int64_t nrows,
                     int64_t ncols, int part, int nparts) {
    int bs = block_elems(type), bb = block_bytes(type);
    if (bs == 0) return sft_set_error("matvec: GGML type %d is not supported", type);
    if (ncols % bs != 0)
        return sft_set_error("matvec: %lld columns is not a multiple of the block size %d of GGML type %d",
                             (long long)ncols, bs, type);
    if (nparts < 1 || part < 0 || part >= nparts)
        return sft_set_error("matvec: part %d of %d", part, nparts);
    int best = detected_isa();
    if (isa == SFT_ISA_AUTO) isa = best;
    if (isa > best) return sft_set_error("matvec: this CPU does not support the requested instruction set");
    int64_t r0 = nrows * part / nparts, r1 = nrows * (part + 1) / nparts;
    size_t row_bytes = (size_t)(ncols / bs) * (size_t)bb;
    qdot_fn qdot = pick_qdot(type, isa);
    fdot_fn fdot = pick_fdot(isa);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * row_bytes;
        if (qdot) {
            y[r] = qdot(row, x, ncols);
        } else if (type == T_F32) {
            y[r] = fdot((const float *)row, x, ncols);
        } else {
            // Other types: decode 256 values at a time (a whole number of blocks of every
            // supported type) and take the vector f32 dot.
            float tmp[QK_K], s = 0;
            for (int64_t c = 0; c < ncols; c += QK_K) {
                int64_t len = ncols - c < QK_K ? ncols - c : QK_K;
                sft_gguf_dequantize(type, row + (size_t)(c / bs) * (size_t)bb, tmp, len);
                s += fdot(tmp, x + c, len);
            }
            y[r] = s;
        }
    }
    return 0;
}

int sft_matvec_q(int type, const void *w, const float *x, float *y, int64_t nrows, int64_t ncols,
                 int part, int nparts) {
    return sft_matvec_q_isa(SFT_ISA_AUTO, type, w, x, y, nrows, ncols, part, nparts);
}

int sft_quant_isa_level(void) { return detected_isa(); }

void sft_gguf_block_info(int type, int *elems, int *bytes) {
    *elems = block_elems(type);
    *bytes = block_bytes(type);
}
