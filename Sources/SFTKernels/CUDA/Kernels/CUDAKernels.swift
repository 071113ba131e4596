// The CUDA C sources of the CUDA backend, compiled at run time by NVRTC for the GPU found
// (DESIGN.md "CUDA without a build-time toolkit"). One module per concern; each is the shared
// prelude below plus its kernels, all `extern "C"` so their names are what the backend looks
// up. The sources include no header (no cuda_bf16.h / cuda_fp16.h), so NVRTC needs no include
// path: bf16 is handled as raw 16-bit values (the CPU kernels' rounding), f16 through the
// hardware conversion instructions. Without __CUDA_ARCH__ (the emulated GPU,
// tools/cuda-emulate) the sources build as host C++.
//
// Conventions shared with the C kernels in CSFTKernels (the same Swift code drives both):
// row-major layouts, element counts as 64-bit integers, backward passes write dx (=) and
// accumulate dweight/dbias (+=).

/// One CUDA C translation unit: its source and the kernels it defines.
public struct CUDAModuleSource: Sendable, Hashable {
    /// Short name, used in cache file names and error messages ("elementwise").
    public let name: String
    /// The complete CUDA C source (prelude included).
    public let source: String
    /// Every `extern "C"` kernel the backend may launch from this module.
    public let kernels: [String]
    /// Each kernel's parameters, one letter per parameter: p pointer, l 64-bit int, u unsigned
    /// 64-bit int, i 32-bit int, f float. The backend checks every launch against it, and the
    /// compile test checks it against the parameters NVRTC gives each kernel.
    public let signatures: [String: String]

    /// `kernels` entries are "name(signature)", e.g. "sft_fill_f32(pfl)".
    init(name: String, body: String, kernels: [String]) {
        self.name = name
        self.source = CUDAKernels.prelude + body
        var names: [String] = [], signatures: [String: String] = [:]
        for entry in kernels {
            let parts = entry.split(separator: "(", maxSplits: 1)
            precondition(parts.count == 2 && entry.hasSuffix(")"), "kernel entry \(entry) is not name(signature)")
            names.append(String(parts[0]))
            signatures[String(parts[0])] = String(parts[1].dropLast())
        }
        self.kernels = names
        self.signatures = signatures
    }
}

/// The CUDA backend's kernel sources.
public enum CUDAKernels {
    /// Every module, in the order the backend loads them.
    public static let all: [CUDAModuleSource] = [elementwise, norm, attention, training, quant, activations, columns]

    /// Types, 16-bit float conversions and block reductions shared by every module.
    static let prelude = #"""
    // sft CUDA kernels (compiled by NVRTC at run time). No headers: fixed-width types here.
    typedef unsigned char u8;
    typedef unsigned short u16;
    typedef unsigned int u32;
    typedef long long i64;
    typedef unsigned long long u64;
    #define SFT_INF __int_as_float(0x7f800000)
    #define GRID_STRIDE(i, n) \
        for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

    // bf16 is the top half of an f32; rounding to nearest even as in the CPU kernels, NaN kept NaN.
    __device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }
    __device__ __forceinline__ u16 f32_to_bf16(float f) {
        u32 u = __float_as_uint(f);
        if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);
        return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    // Element loads and stores of the kernels templated on the activation type (float or bf16
    // as u16): values are f32 in registers, a bf16 store rounds to nearest even.
    __device__ __forceinline__ float load_act(const float *p, i64 i) { return p[i]; }
    __device__ __forceinline__ float load_act(const u16 *p, i64 i) { return bf16_to_f32(p[i]); }
    __device__ __forceinline__ void store_act(float *p, i64 i, float v) { p[i] = v; }
    __device__ __forceinline__ void store_act(u16 *p, i64 i, float v) { p[i] = f32_to_bf16(v); }
    // IEEE binary16 through the hardware conversions (round to nearest even). Built for the host
    // (the CPU emulation of the tests), the same conversions in integer arithmetic.
    #ifdef __CUDA_ARCH__
    __device__ __forceinline__ float f16_to_f32(u16 h) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
        return f;
    }
    __device__ __forceinline__ u16 f32_to_f16(float f) {
        u16 h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
        return h;
    }
    #else
    __device__ __forceinline__ float f16_to_f32(u16 h) {
        const u32 sign = (u32)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
        if (exp == 0x1f) return __uint_as_float(sign | 0x7f800000u | (man << 13));
        if (exp != 0) return __uint_as_float(sign | ((exp + 112) << 23) | (man << 13));
        const float f = (float)man * 5.9604644775390625e-08f;
        return (sign ? -f : f);
    }
    __device__ __forceinline__ u16 f32_to_f16(float f) {
        const u32 u = __float_as_uint(f), a = u & 0x7fffffffu;
        const u16 sign = (u16)((u >> 16) & 0x8000u);
        if (a > 0x7f800000u) return sign | 0x7e00u | (u16)((a >> 13) & 0x3ffu);
        if (a >= 0x477ff000u) return sign | 0x7c00u;
        if (a < 0x38800000u) return sign | (u16)(__float_as_uint(__uint_as_float(a) + 0.5f) - 0x3f000000u);
        return sign | (u16)((a + ((u32)(15 - 127) << 23) + 0xfffu + ((a >> 13) & 1u)) >> 13);
    }
    #endif

    __device__ __forceinline__ float warp_sum(float v) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
    }
    __device__ __forceinline__ double warp_sum_f64(double v) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
        return v;
    }
    __device__ __forceinline__ float warp_max(float v) {
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
        return v;
    }
    // Block-wide reductions (blockDim.x a multiple of 32); every thread gets the result.
    // `scratch` is 32 values of shared memory, reusable right after the call returns.
    __device__ float block_sum(float v, float *scratch) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
        v = warp_sum(v);
        __syncthreads();
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        return warp_sum(lane < nw ? scratch[lane] : 0.0f);
    }
    __device__ double block_sum_f64(double v, double *scratch) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
        v = warp_sum_f64(v);
        __syncthreads();
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        return warp_sum_f64(lane < nw ? scratch[lane] : 0.0);
    }
    __device__ float block_max(float v, float *scratch) {
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
        v = warp_max(v);
        __syncthreads();
        if (lane == 0) scratch[warp] = v;
        __syncthreads();
        return warp_max(lane < nw ? scratch[lane] : -SFT_INF);
    }
    // The backend's error word: the first failing kernel records (code, row, value); the host
    // reads it at the next synchronization and throws.
    __device__ void report_error(int *err, int code, i64 row, int value) {
        if (atomicCAS(err, 0, code) == 0) {
            err[1] = (int)row;
            err[2] = value;
        }
    }

    """#

    // MARK: elementwise

    /// fill, add, axpy, scale, mul, sum of squares, casts, dropout, and the strided scale
    /// GEMM uses when K = 0.
    public static let elementwise = CUDAModuleSource(name: "elementwise", body: #"""
    extern "C" __global__ void sft_fill_f32(float *y, float value, i64 n) {
        GRID_STRIDE(i, n) y[i] = value;
    }
    extern "C" __global__ void sft_add_f32(const float *a, const float *b, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = a[i] + b[i];
    }
    extern "C" __global__ void sft_axpy_f32(float alpha, const float *x, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] += alpha * x[i];
    }
    extern "C" __global__ void sft_scale_f32(float alpha, const float *x, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = alpha * x[i];
    }
    extern "C" __global__ void sft_mul_f32(const float *a, const float *b, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = a[i] * b[i];
    }
    // The residual add of mixed precision: y (f32) = a (f32) + b (bf16).
    extern "C" __global__ void sft_add_f32_bf16(const float *a, const u16 *b, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = a[i] + bf16_to_f32(b[i]);
    }
    extern "C" __global__ void sft_add_bf16(const u16 *a, const u16 *b, u16 *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
    }

    // Sum of squares in double (gradient norms): one partial per block, then one block adds
    // the partials, so the result does not depend on timing.
    extern "C" __global__ void sft_sumsq_f32(const float *x, i64 n, double *partial) {
        __shared__ double scratch[32];
        double s = 0;
        GRID_STRIDE(i, n) { double v = x[i]; s += v * v; }
        s = block_sum_f64(s, scratch);
        if (threadIdx.x == 0) partial[blockIdx.x] = s;
    }
    extern "C" __global__ void sft_sum_f64(const double *x, i64 n, double *out) {
        __shared__ double scratch[32];
        double s = 0;
        for (i64 i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
        s = block_sum_f64(s, scratch);
        if (threadIdx.x == 0) out[0] = s;
    }

    extern "C" __global__ void sft_cast_f32_bf16(const float *x, u16 *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f32_to_bf16(x[i]);
    }
    extern "C" __global__ void sft_cast_bf16_f32(const u16 *x, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = bf16_to_f32(x[i]);
    }
    extern "C" __global__ void sft_cast_f32_f16(const float *x, u16 *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f32_to_f16(x[i]);
    }
    extern "C" __global__ void sft_cast_f16_f32(const u16 *x, float *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f16_to_f32(x[i]);
    }
    extern "C" __global__ void sft_cast_bf16_f16(const u16 *x, u16 *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f32_to_f16(bf16_to_f32(x[i]));
    }
    extern "C" __global__ void sft_cast_f16_bf16(const u16 *x, u16 *y, i64 n) {
        GRID_STRIDE(i, n) y[i] = f32_to_bf16(f16_to_f32(x[i]));
    }

    // Dropout with the CPU kernel's counter hash (elementwise.c), so both backends draw the
    // same mask for the same (seed, offset):
    //   c = offset + i;  h = mix(lo32(c) ^ lo32(seed));  h = mix(h ^ hi32(c) ^ hi32(seed))
    //   keep <=> (h >> 8) * 2^-24 >= p
    __device__ __forceinline__ u32 mix32(u32 x) {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }
    extern "C" __global__ void sft_dropout_f32(const float *x, float *y, u8 *mask, i64 n, float p,
                                               u64 seed, u64 offset) {
        const u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
        const float keep_scale = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
        GRID_STRIDE(i, n) {
            const u64 c = offset + (u64)i;
            u32 h = mix32((u32)c ^ k0);
            h = mix32(h ^ (u32)(c >> 32) ^ k1);
            const float u = (float)(h >> 8) * 5.9604644775390625e-08f;
            const bool keep = u >= p;
            y[i] = keep ? x[i] * keep_scale : 0.0f;
            if (mask) mask[i] = keep ? 1 : 0;
        }
    }

    // C[b] = beta C[b] over (M, N) blocks with row stride ldc (GEMM with K = 0); beta = 0
    // writes zeros, as BLAS does, rather than scaling what was there (NaN * 0).
    extern "C" __global__ void sft_scale_strided_f32(float *c, i64 ldc, i64 stride, i64 M, i64 N,
                                                     i64 batch, float beta) {
        GRID_STRIDE(e, batch * M * N) {
            const i64 col = e % N, row = (e / N) % M, b = e / (M * N);
            float *p = c + b * stride + row * ldc + col;
            *p = beta == 0.0f ? 0.0f : beta * *p;
        }
    }
    """#, kernels: ["sft_fill_f32(pfl)", "sft_add_f32(pppl)", "sft_axpy_f32(fppl)", "sft_scale_f32(fppl)", "sft_mul_f32(pppl)",
                    "sft_add_bf16(pppl)", "sft_add_f32_bf16(pppl)", "sft_sumsq_f32(plp)", "sft_sum_f64(plp)", "sft_cast_f32_bf16(ppl)",
                    "sft_cast_bf16_f32(ppl)", "sft_cast_f32_f16(ppl)", "sft_cast_f16_f32(ppl)", "sft_cast_bf16_f16(ppl)",
                    "sft_cast_f16_bf16(ppl)", "sft_dropout_f32(ppplfuu)", "sft_scale_strided_f32(plllllf)"])
}
