// gguf_blocks.h — private to the C shim: the GGML block layouts, type ids and the f16 decoder
// shared by the dequantizers and f32-activation kernels (quant_gguf.c) and the int8-activation
// kernels (quant_dot.c). Layouts follow the GGML type table (ggml-common.h / the GGUF spec).
#ifndef SFT_GGUF_BLOCKS_H
#define SFT_GGUF_BLOCKS_H

#include <stdint.h>
#include <string.h>

#define QK 32     // values per block of the "legacy" formats
#define QK_K 256  // values per super-block of the K formats
#define K_SCALE_SIZE 12

typedef uint16_t f16_t;  // IEEE half, stored as bits

// ---------------------------------------------------------------------------------------------
// Block layouts
// ---------------------------------------------------------------------------------------------

// x = d * (q - 8), q in [0, 16); value j in the low nibble of qs[j], value j+16 in the high one.
typedef struct { f16_t d; uint8_t qs[QK / 2]; } block_q4_0;
// x = d * q + m
typedef struct { f16_t d, m; uint8_t qs[QK / 2]; } block_q4_1;
// Like q4_0 with a fifth bit per value in qh (bit j for value j): x = d * (q - 16).
typedef struct { f16_t d; uint8_t qh[4]; uint8_t qs[QK / 2]; } block_q5_0;
// x = d * q + m with 5-bit q.
typedef struct { f16_t d, m; uint8_t qh[4]; uint8_t qs[QK / 2]; } block_q5_1;
// x = d * q, q signed 8-bit.
typedef struct { f16_t d; int8_t qs[QK]; } block_q8_0;
// IQ4_NL: like q4_0 but the 4-bit code indexes a fixed non-linear table.
typedef struct { f16_t d; uint8_t qs[QK / 2]; } block_iq4_nl;

// K formats: a 256-value super-block in 16 or 8 sub-blocks, each with its own quantized scale
// (and min) multiplied by the super-block's f16 d (and dmin).
// Q2_K: 16 sub-blocks of 16; scales[i] = scale (low nibble) | min (high nibble); 2-bit codes.
typedef struct { uint8_t scales[QK_K / 16]; uint8_t qs[QK_K / 4]; f16_t d, dmin; } block_q2_K;
// Q3_K: 16 sub-blocks of 16, 6-bit signed scales packed in 12 bytes; 2 low bits in qs, the
// third bit in hmask (a set bit means no -4 offset).
typedef struct { uint8_t hmask[QK_K / 8]; uint8_t qs[QK_K / 4]; uint8_t scales[12]; f16_t d; } block_q3_K;
// Q4_K: 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes; 4-bit codes.
typedef struct { f16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qs[QK_K / 2]; } block_q4_K;
// Q5_K: as Q4_K plus a fifth bit per value in qh.
typedef struct { f16_t d, dmin; uint8_t scales[K_SCALE_SIZE]; uint8_t qh[QK_K / 8]; uint8_t qs[QK_K / 2]; } block_q5_K;
// Q6_K: 16 sub-blocks of 16 with int8 scales; 4 low bits in ql, 2 high bits in qh; x = d*s*(q-32).
typedef struct { uint8_t ql[QK_K / 2]; uint8_t qh[QK_K / 4]; int8_t scales[QK_K / 16]; f16_t d; } block_q6_K;
// Q8_K: f32 scale, int8 codes, and per-16 sums of the codes (used by ggml's dot products).
typedef struct { float d; int8_t qs[QK_K]; int16_t bsums[QK_K / 16]; } block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "q4_0 block size");
_Static_assert(sizeof(block_q4_1) == 20, "q4_1 block size");
_Static_assert(sizeof(block_q5_0) == 22, "q5_0 block size");
_Static_assert(sizeof(block_q5_1) == 24, "q5_1 block size");
_Static_assert(sizeof(block_q8_0) == 34, "q8_0 block size");
_Static_assert(sizeof(block_iq4_nl) == 18, "iq4_nl block size");
_Static_assert(sizeof(block_q2_K) == 84, "q2_K block size");
_Static_assert(sizeof(block_q3_K) == 110, "q3_K block size");
_Static_assert(sizeof(block_q4_K) == 144, "q4_K block size");
_Static_assert(sizeof(block_q5_K) == 176, "q5_K block size");
_Static_assert(sizeof(block_q6_K) == 210, "q6_K block size");
_Static_assert(sizeof(block_q8_K) == 292, "q8_K block size");

// GGML type ids (the numbers stored in GGUF tensor infos).
enum {
    T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q4_1 = 3, T_Q5_0 = 6, T_Q5_1 = 7, T_Q8_0 = 8,
    T_Q2_K = 10, T_Q3_K = 11, T_Q4_K = 12, T_Q5_K = 13, T_Q6_K = 14, T_Q8_K = 15,
    T_IQ4_NL = 20, T_I8 = 24, T_I16 = 25, T_I32 = 26, T_I64 = 27, T_F64 = 28, T_BF16 = 30,
};

// ---------------------------------------------------------------------------------------------
// Scalars
// ---------------------------------------------------------------------------------------------

static inline float h2f(f16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0) {
        // zero or subnormal: man * 2^-24
        float f = (float)man * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    bits = exp == 31 ? (sign | 0x7F800000u | (man << 13)) : (sign | ((exp + 112) << 23) | (man << 13));
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/// Values and bytes per block of GGML type `type` (0, 0 for types without a matvec).
void sft_gguf_block_info(int type, int *elems, int *bytes);

#endif // SFT_GGUF_BLOCKS_H
