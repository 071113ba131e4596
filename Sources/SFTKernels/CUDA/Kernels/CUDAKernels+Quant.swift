// CUDA C for the 4-bit weight form (bitsandbytes NF4 / FP4, one absmax per block, optionally
// double-quantized): decoding a tile of rows to f32 for the GEMM of the 4-bit linear op, the
// absmax values of double quantization, and the matrix-vector product of decode. Same math as
// quant_nf4.c, whose readable references are beside each kernel's comment:
//   sft_q4_dequantize_f32  ↔ sft_nf4_dequantize_ref   y[i] = code[q(i)] · absmax[i / bs]
//   sft_q4_dequantize_h    ↔ the same, rounded to bf16 / f16 (the cast kernels' rounding)
//   sft_dq8_absmax_f32     ↔ sft_dequantize_blockwise8 absmax[b] = (map[c[b]] · s[b / 256]) + offset
//   sft_q4_matvec_f32      ↔ sft_nf4_matvec           y[r] = Σ_c absmax[i / bs] · (code[q(i)] · x[c])
// with q(i) the high nibble of byte i/2 for even i, the low nibble for odd i. The 16-value code
// table and the 256-value dynamic map are device buffers the backend uploads once from the
// C tables (sft_q4_code, sft_dynamic_map_signed), so both sides decode with the same values.

extension CUDAKernels {
    /// 4-bit decode (tiles, double-quantized absmax) and the 4-bit matrix-vector product.
    public static let quant = CUDAModuleSource(name: "quant", body: #"""
    // Two roundings, no FMA, as the C kernel and bitsandbytes (the host build has no __f*_rn).
    #ifdef __CUDA_ARCH__
    #define SFT_MUL_RN(a, b) __fmul_rn(a, b)
    #define SFT_ADD_RN(a, b) __fadd_rn(a, b)
    #else
    #define SFT_MUL_RN(a, b) ((a) * (b))
    #define SFT_ADD_RN(a, b) ((a) + (b))
    #endif

    // The 4-bit code of value i (0 ≤ i < rows·cols) of a packed matrix.
    __device__ __forceinline__ unsigned q4_code(const u8 *packed, i64 i) {
        const u8 byte = packed[i >> 1];
        return (i & 1) ? (byte & 0x0Fu) : (byte >> 4);
    }

    // y[j] = code[q(start + j)] · absmax[(start + j) / bs − first_block], j < count.
    // (absmax is the matrix's, first_block 0, or a scratch of the tile's blocks.)
    extern "C" __global__ void sft_q4_dequantize_f32(const u8 *packed, const float *absmax, const float *code,
                                                     i64 bs, i64 first_block, i64 start, i64 count, float *y) {
        GRID_STRIDE(j, count) {
            const i64 i = start + j;
            y[j] = SFT_MUL_RN(code[q4_code(packed, i)], absmax[i / bs - first_block]);
        }
    }

    // The same values rounded to bf16 (bf16 = 1) or f16 (bf16 = 0), nearest even: the tiles of
    // a 16-bit compute dtype (reference: sft_nf4_dequantize_ref, then the f32 → 16-bit casts).
    extern "C" __global__ void sft_q4_dequantize_h(const u8 *packed, const float *absmax, const float *code,
                                                   i64 bs, i64 first_block, i64 start, i64 count, u16 *y, int bf16) {
        GRID_STRIDE(j, count) {
            const i64 i = start + j;
            const float v = SFT_MUL_RN(code[q4_code(packed, i)], absmax[i / bs - first_block]);
            y[j] = bf16 ? f32_to_bf16(v) : f32_to_f16(v);
        }
    }

    // out[j] = (map[codes[first + j]] · absmax2[(first + j) / 256]) + offset, j < n.
    extern "C" __global__ void sft_dq8_absmax_f32(const u8 *codes, const float *absmax2, const float *map,
                                                  i64 first, i64 n, float offset, float *out) {
        GRID_STRIDE(j, n) {
            const i64 b = first + j;
            const float v = SFT_MUL_RN(map[codes[b]], absmax2[b / 256]);
            out[j] = SFT_ADD_RN(v, offset);
        }
    }

    // A block per (output row r, input row n): y[n][r] = Σ_c absmax[i / bs] · (code[q(i)] · x[n][c]),
    // i = r·cols + c. blockDim.x a multiple of 32 (block_sum).
    extern "C" __global__ void sft_q4_matvec_f32(const u8 *packed, const float *absmax, const float *code,
                                                 i64 bs, const float *x, float *y, i64 rows, i64 cols) {
        __shared__ float scratch[32];
        const i64 r = blockIdx.x, n = blockIdx.y;
        const float *xr = x + n * cols;
        float acc = 0.0f;
        for (i64 c = threadIdx.x; c < cols; c += blockDim.x) {
            const i64 i = r * cols + c;
            acc += absmax[i / bs] * (code[q4_code(packed, i)] * xr[c]);
        }
        acc = block_sum(acc, scratch);
        if (threadIdx.x == 0) y[n * rows + r] = acc;
    }
    """#, kernels: ["sft_q4_dequantize_f32(pppllllp)", "sft_q4_dequantize_h(pppllllpi)", "sft_dq8_absmax_f32(pppllfp)",
                    "sft_q4_matvec_f32(ppplppll)"])
}
