// quant_nf4.c — bitsandbytes' 4-bit formats (NF4, FP4) as QLoRA stores frozen base weights
// (Dettmers et al. 2023, "QLoRA"), and the 8-bit blockwise "dynamic" quantization that
// bitsandbytes uses for double quantization of the 4-bit scales.
//
// 4-bit layout (bit-compatible with bitsandbytes quantize_4bit / dequantize_4bit):
//   A tensor of n values, flattened row-major, is cut into blocks of `blocksize` values (the
//   last one may be short). absmax[b] = max |x| over block b, stored as f32. Each value gets
//   the 4-bit code whose table value is nearest to x / absmax[b]. Byte i of `packed` holds the
//   code of value 2i in its HIGH nibble and of value 2i+1 in its LOW nibble; an odd n pads the
//   last low nibble with the code of 0. Decoding is one f32 multiply: code_value[q] * absmax[b].
//
// Rounding, as bitsandbytes' reference backend does it (the torch code its CPU path runs for
// quantize_4bit, backends/default/ops.py):
//   scaled = clamp(x * (1/absmax), -1, 1) in f32, with absmax clamped below at 1e-38 for the
//   reciprocal; the short last block divides, x / absmax, and stores the clamped absmax;
//   sorted position = number of f32 midpoints (a+b)/2 between neighbouring sorted table values
//   that are < scaled ("bucketize": nearest value, an exact tie goes to the lower one).
//   NF4's table is sorted, so the position is the code. FP4's table is sign-magnitude; its
//   sorted positions map back to codes through FP4_ORDER below (torch.argsort of the table,
//   which puts code 0 (+0) before code 8 (also 0): scaled in (-0.0026, 0] gets code 0 and
//   scaled in (0, 0.0026] gets code 8 — both decode to 0).
//
// 8-bit blockwise (double quantization of absmax): bitsandbytes subtracts the mean of the
// absmax values (the "offset"), then quantizes them in blocks of 256 against its signed
// dynamic map (create_dynamic_map(signed=True): 256 ascending values in [-0.993, 1]) with the
// same bucketize rule; the scales of that level (absmax2) stay f32. Decoding:
//   absmax[b] = code8[q[b]] * absmax2[b / 256] + offset   (rounded after * and after +).
// bitsandbytes' own C++ CPU kernel for this step approximates nearest with a 65536-bin lookup
// table and can differ from the reference by one code near midpoints; sft follows the reference.
//
// Fast paths, with AVX-512 and AVX2 variants picked at run time (sft_isa_level, cpu.h): a
// quantizer that counts midpoints below each value with plain compares (vectorized by the
// compiler, split over blocks for several cores); dequantization of any range of values and a
// batch-1 matrix-vector product, which walk the range in segments inside one block — whole
// byte-aligned pairs through the vector span kernels, odd ends through scalar code. Every
// variant performs the reference's f32 operations (one multiply per decoded value), so all of
// them equal the reference bit for bit; tests check that on every instruction set.
#include "cpu.h"
#include <stdlib.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

// NF4: quantiles of N(0, 1) normalized to [-1, 1], with an exact 0 (QLoRA appendix E); the
// f32 values bitsandbytes stores.
static const float NF4_VALUES[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

// FP4 (1 sign, 2 exponent, 1 mantissa bits; bitsandbytes' variant): code bit 3 is the sign,
// the magnitudes by the low 3 bits are 0, 0.0625, 8, 12, 4, 6, 2, 3, divided by 12 in f32.
static const float FP4_VALUES[16] = {
    0.0f, 0.0625f / 12.0f, 8.0f / 12.0f, 12.0f / 12.0f, 4.0f / 12.0f, 6.0f / 12.0f, 2.0f / 12.0f, 3.0f / 12.0f,
    0.0f, -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f, -4.0f / 12.0f, -6.0f / 12.0f, -2.0f / 12.0f, -3.0f / 12.0f,
};
// Code at each sorted position of FP4_VALUES (ascending).
static const uint8_t FP4_ORDER[16] = {11, 10, 13, 12, 15, 14, 9, 0, 8, 1, 6, 7, 4, 5, 2, 3};
static const uint8_t NF4_ORDER[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

const float *sft_q4_code(int type) {
    if (type == SFT_Q4_NF4) return NF4_VALUES;
    if (type == SFT_Q4_FP4) return FP4_VALUES;
    return NULL;
}

// torch.linspace(0.1, 1, steps) in f32 as torch computes it: the first half counts up from
// start, the second half down from end, each value one fused multiply-add.
static float linspace_f32(int64_t i, int64_t steps) {
    const float start = 0.1f, end = 1.0f;
    const float step = (end - start) / (float)(steps - 1);
    if (i < steps / 2) return fmaf(step, (float)i, start);
    return fmaf(-step, (float)(steps - 1 - i), end);
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void sft_dynamic_map_signed(float *code) {
    // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent
    // i = 0..6, 2^i + 1 linspace boundaries in [0.1, 1]; their 2^i midpoints scaled by
    // 10^(i-6), with both signs; then 0 and 1. 2 * 127 + 2 = 256 values, sorted. All f32.
#pragma clang fp contract(off)
    static const double scale[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    int k = 0;
    for (int i = 0; i < 7; i++) {
        int64_t steps = ((int64_t)1 << i) + 1;
        float s = (float)scale[i];
        for (int64_t j = 0; j + 1 < steps; j++) {
            float mean = (linspace_f32(j, steps) + linspace_f32(j + 1, steps)) / 2.0f;
            float v = s * mean;
            code[k++] = v;
            code[k++] = -v;
        }
    }
    code[k++] = 0.0f;
    code[k++] = 1.0f;
    qsort(code, 256, sizeof(float), cmp_float);
}

// ---------------------------------------------------------------------------------------------
// Reference quantizers (the spec; the fast code below is checked against these)
// ---------------------------------------------------------------------------------------------

// Number of the n sorted midpoints that are < v (torch.bucketize with right=False).
static int bucketize(const float *mid, int n, float v) {
    int lo = 0, hi = n;  // answer in [lo, hi]
    while (lo < hi) {
        int m = (lo + hi) / 2;
        if (mid[m] < v) lo = m + 1; else hi = m;
    }
    return lo;
}

static float clamp1(float v) { return v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v); }

// Block scaling shared by both quantizers: absmax of block [lo, hi), and the factor or divisor.
static float block_absmax(const float *x, int64_t lo, int64_t hi) {
    float m = 0.0f;
    for (int64_t i = lo; i < hi; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

// scaled value i of a block: full blocks multiply by the reciprocal, the short tail divides.
static float scaled_value(float x, float clamped_absmax, float reciprocal, int tail) {
    return clamp1(tail ? x / clamped_absmax : x * reciprocal);
}

int sft_nf4_quantize_ref(int type, const float *x, int64_t n, int64_t blocksize, uint8_t *packed,
                         float *absmax) {
    const float *values = sft_q4_code(type);
    if (!values) return sft_set_error("4-bit quantize: unknown type %d (0 = nf4, 1 = fp4)", type);
    if (blocksize <= 0 || n < 0) return sft_set_error("4-bit quantize: blocksize %lld, n %lld", (long long)blocksize, (long long)n);
    const uint8_t *order = type == SFT_Q4_NF4 ? NF4_ORDER : FP4_ORDER;
    float sorted[16], mid[15];
    for (int i = 0; i < 16; i++) sorted[i] = values[order[i]];
    for (int i = 0; i < 15; i++) mid[i] = (sorted[i] + sorted[i + 1]) / 2.0f;

    const int64_t full = n / blocksize * blocksize;
    uint8_t pending = 0;  // high nibble waiting for its partner
    for (int64_t b0 = 0; b0 < n; b0 += blocksize) {
        int64_t b1 = b0 + blocksize < n ? b0 + blocksize : n;
        int tail = b0 >= full;
        float am = block_absmax(x, b0, b1);
        float clamped = am < 1e-38f ? 1e-38f : am;
        float recip = 1.0f / clamped;
        absmax[b0 / blocksize] = tail ? clamped : am;
        for (int64_t i = b0; i < b1; i++) {
            uint8_t q = order[bucketize(mid, 15, scaled_value(x[i], clamped, recip, tail))];
            if (i % 2 == 0) pending = (uint8_t)(q << 4);
            else packed[i / 2] = pending | q;
        }
    }
    if (n % 2) packed[n / 2] = pending | order[bucketize(mid, 15, 0.0f)];
    return 0;
}

int sft_nf4_dequantize_ref(int type, const uint8_t *packed, const float *absmax, int64_t n,
                           int64_t blocksize, float *y) {
    const float *values = sft_q4_code(type);
    if (!values) return sft_set_error("4-bit dequantize: unknown type %d (0 = nf4, 1 = fp4)", type);
    if (blocksize <= 0 || n < 0) return sft_set_error("4-bit dequantize: blocksize %lld, n %lld", (long long)blocksize, (long long)n);
    for (int64_t i = 0; i < n; i++) {
        uint8_t byte = packed[i / 2];
        uint8_t q = i % 2 == 0 ? byte >> 4 : byte & 0x0F;
        y[i] = values[q] * absmax[i / blocksize];
    }
    return 0;
}

int sft_quantize_blockwise8_ref(const float *x, int64_t n, int64_t blocksize, const float *code,
                                uint8_t *q, float *absmax) {
    if (blocksize <= 0 || n < 0) return sft_set_error("8-bit quantize: blocksize %lld, n %lld", (long long)blocksize, (long long)n);
    float mid[255];
    for (int i = 0; i < 255; i++) {
        if (!(code[i] <= code[i + 1])) return sft_set_error("8-bit quantize: code values must ascend (index %d)", i);
        mid[i] = (code[i] + code[i + 1]) / 2.0f;
    }
    const int64_t full = n / blocksize * blocksize;
    for (int64_t b0 = 0; b0 < n; b0 += blocksize) {
        int64_t b1 = b0 + blocksize < n ? b0 + blocksize : n;
        int tail = b0 >= full;
        float am = block_absmax(x, b0, b1);
        float clamped = am < 1e-38f ? 1e-38f : am;
        float recip = 1.0f / clamped;
        absmax[b0 / blocksize] = tail ? clamped : am;
        for (int64_t i = b0; i < b1; i++)
            q[i] = (uint8_t)bucketize(mid, 255, scaled_value(x[i], clamped, recip, tail));
    }
    return 0;
}

void sft_dequantize_blockwise8(const uint8_t *q, const float *absmax, const float *code,
                               int64_t blocksize, float offset, int64_t start, int64_t count,
                               float *y) {
    // Two roundings, as bitsandbytes: the product, then the offset added to it (no FMA).
#pragma clang fp contract(off)
    for (int64_t e = start, end = start + count; e < end;) {
        int64_t stop = (e / blocksize + 1) * blocksize < end ? (e / blocksize + 1) * blocksize : end;
        const float s = absmax[e / blocksize];
        for (; e < stop; e++) {
            float v = code[q[e]] * s;
            y[e - start] = v + offset;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fast quantizer: the same rule, written so the compiler vectorizes it per instruction set —
// the sorted position is the count of midpoints below the value (15 compares, no search).
// ---------------------------------------------------------------------------------------------

SFT_INLINE void positions_impl(const float *x, int64_t len, float clamped, float recip, int tail,
                               const float *mid, uint8_t *pos) {
    for (int64_t i = 0; i < len; i++) {
        float v = tail ? x[i] / clamped : x[i] * recip;
        v = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
        int c = 0;
        for (int k = 0; k < 15; k++) c += mid[k] < v;
        pos[i] = (uint8_t)c;
    }
}
SFT_DISPATCH_VOID(positions, (const float *x, int64_t len, float clamped, float recip, int tail, const float *mid,
                              uint8_t *pos), (x, len, clamped, recip, tail, mid, pos))

int sft_nf4_quantize(int type, const float *x, int64_t n, int64_t blocksize, uint8_t *packed, float *absmax,
                     int part, int nparts) {
    const float *values = sft_q4_code(type);
    if (!values) return sft_set_error("4-bit quantize: unknown type %d (0 = nf4, 1 = fp4)", type);
    if (blocksize <= 0 || blocksize % 2 || blocksize > 4096 || n < 0)
        return sft_set_error("4-bit quantize: blocksize %lld (even, at most 4096), n %lld", (long long)blocksize, (long long)n);
    const uint8_t *order = type == SFT_Q4_NF4 ? NF4_ORDER : FP4_ORDER;
    float sorted[16], mid[15];
    for (int i = 0; i < 16; i++) sorted[i] = values[order[i]];
    for (int i = 0; i < 15; i++) mid[i] = (sorted[i] + sorted[i + 1]) / 2.0f;
    uint8_t pos[4096 + 1];
    const int64_t blocks = (n + blocksize - 1) / blocksize, full = n / blocksize * blocksize;
    int64_t first, last;
    sft_split(blocks, part, nparts, &first, &last);
    for (int64_t b = first; b < last; b++) {
        const int64_t b0 = b * blocksize, len = b0 + blocksize < n ? blocksize : n - b0;
        const int tail = b0 >= full;
        float am = block_absmax(x, b0, b0 + len);
        float clamped = am < 1e-38f ? 1e-38f : am;
        absmax[b] = tail ? clamped : am;
        positions(x + b0, len, clamped, 1.0f / clamped, tail, mid, pos);
        if (len % 2) pos[len] = (uint8_t)bucketize(mid, 15, 0.0f);  // odd n: pad with the code of 0
        for (int64_t j = 0; j < (len + 1) / 2; j++)
            packed[b0 / 2 + j] = (uint8_t)(order[pos[2 * j]] << 4 | order[pos[2 * j + 1]]);
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Span kernels: `pairs` whole bytes p[0..pairs) -> 2*pairs values (high nibble first)
// ---------------------------------------------------------------------------------------------

static void span_generic(const uint8_t *p, const float *t, float s, int64_t pairs, float *y) {
    for (int64_t j = 0; j < pairs; j++) {
        y[2 * j] = t[p[j] >> 4] * s;
        y[2 * j + 1] = t[p[j] & 0x0F] * s;
    }
}

// Σ t[q] x over the span (unscaled).
static float dot_pairs(const uint8_t *p, const float *t, const float *x, int64_t pairs) {
    float acc = 0.0f;
    for (int64_t j = 0; j < pairs; j++) acc += t[p[j] >> 4] * x[2 * j] + t[p[j] & 0x0F] * x[2 * j + 1];
    return acc;
}

// acc[0..16) += s * (t[q] x) over the span, lane-wise: a row's sum stays in vector lanes
// across blocks and is reduced once per row. The generic variant uses lane 0.
static void span_dot_generic(const uint8_t *p, const float *t, const float *x, int64_t pairs, float s, float *acc) {
    acc[0] += s * dot_pairs(p, t, x, pairs);
}

#if SFT_HAS_VARIANTS
// 16 packed bytes -> 32 nibble indices in value order: [h0 l0 h1 l1 ... h15 l15].
#define NIBBLES(b, i0, i1)                                                                     \
    __m128i hi_ = _mm_and_si128(_mm_srli_epi16(b, 4), _mm_set1_epi8(0x0F));                   \
    __m128i lo_ = _mm_and_si128(b, _mm_set1_epi8(0x0F));                                      \
    __m128i i0 = _mm_unpacklo_epi8(hi_, lo_), i1 = _mm_unpackhi_epi8(hi_, lo_)

// AVX-512: the 16-entry table fits one register; vpermps looks values up by index.
SFT_TARGET_AVX512 static void span_avx512(const uint8_t *p, const float *t, float s, int64_t pairs, float *y) {
    const __m512 table = _mm512_loadu_ps(t), sv = _mm512_set1_ps(s);
    int64_t j = 0;
    for (; j + 16 <= pairs; j += 16) {
        NIBBLES(_mm_loadu_si128((const __m128i *)(p + j)), i0, i1);
        __m512 v0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i0), table);
        __m512 v1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i1), table);
        _mm512_storeu_ps(y + 2 * j, _mm512_mul_ps(v0, sv));
        _mm512_storeu_ps(y + 2 * j + 16, _mm512_mul_ps(v1, sv));
    }
    span_generic(p + j, t, s, pairs - j, y + 2 * j);
}

SFT_TARGET_AVX512 static void span_dot_avx512(const uint8_t *p, const float *t, const float *x, int64_t pairs, float s,
                                              float *acc) {
    const __m512 table = _mm512_loadu_ps(t);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= pairs; j += 16) {
        NIBBLES(_mm_loadu_si128((const __m128i *)(p + j)), i0, i1);
        acc0 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i0), table), _mm512_loadu_ps(x + 2 * j), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_cvtepu8_epi32(i1), table), _mm512_loadu_ps(x + 2 * j + 16), acc1);
    }
    _mm512_storeu_ps(acc, _mm512_fmadd_ps(_mm512_add_ps(acc0, acc1), _mm512_set1_ps(s), _mm512_loadu_ps(acc)));
    if (j < pairs) acc[0] += s * dot_pairs(p + j, t, x + 2 * j, pairs - j);
}

// AVX2: the table is two 8-float halves; vpermps uses the low 3 bits of each index and
// index bit 3 (shifted into the sign bit) picks the half.
SFT_TARGET_AVX2 static inline __m256 lookup8_avx2(__m128i idx8, __m256 t0, __m256 t1) {
    __m256i idx = _mm256_cvtepu8_epi32(idx8);
    __m256 a = _mm256_permutevar8x32_ps(t0, idx), b = _mm256_permutevar8x32_ps(t1, idx);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
}

SFT_TARGET_AVX2 static void span_avx2(const uint8_t *p, const float *t, float s, int64_t pairs, float *y) {
    const __m256 t0 = _mm256_loadu_ps(t), t1 = _mm256_loadu_ps(t + 8), sv = _mm256_set1_ps(s);
    int64_t j = 0;
    for (; j + 16 <= pairs; j += 16) {
        NIBBLES(_mm_loadu_si128((const __m128i *)(p + j)), i0, i1);
        float *o = y + 2 * j;
        _mm256_storeu_ps(o, _mm256_mul_ps(lookup8_avx2(i0, t0, t1), sv));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(lookup8_avx2(_mm_srli_si128(i0, 8), t0, t1), sv));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(lookup8_avx2(i1, t0, t1), sv));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(lookup8_avx2(_mm_srli_si128(i1, 8), t0, t1), sv));
    }
    span_generic(p + j, t, s, pairs - j, y + 2 * j);
}

SFT_TARGET_AVX2 static void span_dot_avx2(const uint8_t *p, const float *t, const float *x, int64_t pairs, float s,
                                          float *acc) {
    const __m256 t0 = _mm256_loadu_ps(t), t1 = _mm256_loadu_ps(t + 8);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= pairs; j += 16) {
        NIBBLES(_mm_loadu_si128((const __m128i *)(p + j)), i0, i1);
        const float *xx = x + 2 * j;
        acc0 = _mm256_fmadd_ps(lookup8_avx2(i0, t0, t1), _mm256_loadu_ps(xx), acc0);
        acc1 = _mm256_fmadd_ps(lookup8_avx2(_mm_srli_si128(i0, 8), t0, t1), _mm256_loadu_ps(xx + 8), acc1);
        acc0 = _mm256_fmadd_ps(lookup8_avx2(i1, t0, t1), _mm256_loadu_ps(xx + 16), acc0);
        acc1 = _mm256_fmadd_ps(lookup8_avx2(_mm_srli_si128(i1, 8), t0, t1), _mm256_loadu_ps(xx + 24), acc1);
    }
    _mm256_storeu_ps(acc, _mm256_fmadd_ps(_mm256_add_ps(acc0, acc1), _mm256_set1_ps(s), _mm256_loadu_ps(acc)));
    if (j < pairs) acc[0] += s * dot_pairs(p + j, t, x + 2 * j, pairs - j);
}
#endif

typedef void (*span_fn)(const uint8_t *, const float *, float, int64_t, float *);
typedef void (*span_dot_fn)(const uint8_t *, const float *, const float *, int64_t, float, float *);

static span_fn pick_span(void) {
#if SFT_HAS_VARIANTS
    switch (sft_isa_level()) {
    case 2: return span_avx512;
    case 1: return span_avx2;
    }
#endif
    return span_generic;
}

static span_dot_fn pick_span_dot(void) {
#if SFT_HAS_VARIANTS
    switch (sft_isa_level()) {
    case 2: return span_dot_avx512;
    case 1: return span_dot_avx2;
    }
#endif
    return span_dot_generic;
}

// ---------------------------------------------------------------------------------------------
// Fast dequantization and matrix-vector product
// ---------------------------------------------------------------------------------------------

static int check_args(const char *op, int type, int64_t blocksize, int64_t a, int64_t b) {
    if (!sft_q4_code(type)) return sft_set_error("%s: unknown type %d (0 = nf4, 1 = fp4)", op, type);
    if (blocksize <= 0 || a < 0 || b < 0)
        return sft_set_error("%s: blocksize %lld, sizes %lld, %lld", op, (long long)blocksize, (long long)a, (long long)b);
    return 0;
}

// Values [i, end) (end <= the end of i's block) into y, scale s.
static void segment(span_fn span, const uint8_t *packed, const float *t, float s, int64_t i, int64_t end, float *y) {
    if (i < end && (i & 1)) { *y++ = t[packed[i / 2] & 0x0F] * s; i++; }
    int64_t pairs = (end - i) / 2;
    span(packed + i / 2, t, s, pairs, y);
    i += 2 * pairs; y += 2 * pairs;
    if (i < end) *y = t[packed[i / 2] >> 4] * s;
}

int sft_nf4_dequantize(int type, const uint8_t *packed, const float *absmax, int64_t blocksize,
                       int64_t start, int64_t count, float *y) {
    if (check_args("4-bit dequantize", type, blocksize, start, count)) return -1;
    const float *t = sft_q4_code(type);
    span_fn span = pick_span();
    const int64_t b0 = start / blocksize, end = start + count;
    for (int64_t i = start; i < end;) {
        int64_t b = i / blocksize, stop = (b + 1) * blocksize < end ? (b + 1) * blocksize : end;
        segment(span, packed, t, absmax[b - b0], i, stop, y + (i - start));
        i = stop;
    }
    return 0;
}

int sft_nf4_matvec(int type, const uint8_t *packed, const float *absmax, int64_t blocksize,
                   const float *x, float *y, int64_t rows, int64_t cols, int part, int nparts) {
    if (check_args("4-bit matvec", type, blocksize, rows, cols)) return -1;
    const float *t = sft_q4_code(type);
    span_dot_fn dot = pick_span_dot();
    int64_t r0, r1;
    sft_split(rows, part, nparts, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        const int64_t start = r * cols, end = start + cols;
        float acc[16] = {0};
        for (int64_t i = start; i < end;) {
            int64_t b = i / blocksize, stop = (b + 1) * blocksize < end ? (b + 1) * blocksize : end;
            const float s = absmax[b], *xs = x + (i - start);
            int64_t k = i;
            if (k < stop && (k & 1)) { acc[0] += s * (t[packed[k / 2] & 0x0F] * *xs++); k++; }
            int64_t pairs = (stop - k) / 2;
            dot(packed + k / 2, t, xs, pairs, s, acc);
            k += 2 * pairs; xs += 2 * pairs;
            if (k < stop) acc[0] += s * (t[packed[k / 2] >> 4] * *xs);
            i = stop;
        }
        float sum = 0.0f;
        for (int l = 0; l < 16; l++) sum += acc[l];
        y[r] = sum;
    }
    return 0;
}
