// CUDA C for RMSNorm / LayerNorm (forward, backward) and rotate-half RoPE. Same math as the C
// kernels norm.c and rope.c; a block per row for the row reductions, and dweight/dbias as
// column sums over slices of rows (partials, then one accumulate pass) so no atomics are
// needed and the result does not depend on timing.

extension CUDAKernels {
    /// RMSNorm and LayerNorm forward and backward, the column sums for dweight/dbias, RoPE.
    public static let norm = CUDAModuleSource(name: "norm", body: #"""
    // RMSNorm: r = 1 / sqrt(mean(x^2) + eps);  y = x r w.   (a block per row)
    extern "C" __global__ void sft_rmsnorm_fwd_f32(const float *x, const float *w, float *y,
                                                   float *rstd, i64 N, i64 C, float eps) {
        __shared__ float scratch[32];
        const i64 n = blockIdx.x;
        const float *xr = x + n * C;
        float *yr = y + n * C;
        float s = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += xr[c] * xr[c];
        s = block_sum(s, scratch);
        const float r = 1.0f / sqrtf(s / (float)C + eps);
        if (threadIdx.x == 0) rstd[n] = r;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) yr[c] = xr[c] * r * w[c];
    }
    extern "C" __global__ void sft_rmsnorm_fwd_bf16(const u16 *x, const float *w, u16 *y,
                                                    float *rstd, i64 N, i64 C, float eps) {
        __shared__ float scratch[32];
        const i64 n = blockIdx.x;
        const u16 *xr = x + n * C;
        u16 *yr = y + n * C;
        float s = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) { float v = bf16_to_f32(xr[c]); s += v * v; }
        s = block_sum(s, scratch);
        const float r = 1.0f / sqrtf(s / (float)C + eps);
        if (threadIdx.x == 0) rstd[n] = r;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) yr[c] = f32_to_bf16(bf16_to_f32(xr[c]) * r * w[c]);
    }
    // With g = dy w:  dx = r g - x r^3 mean(g x).
    extern "C" __global__ void sft_rmsnorm_bwd_dx_f32(const float *dy, const float *x, const float *w,
                                                      const float *rstd, float *dx, i64 N, i64 C) {
        __shared__ float scratch[32];
        const i64 n = blockIdx.x;
        const float *dyr = dy + n * C, *xr = x + n * C;
        float *dxr = dx + n * C;
        const float r = rstd[n];
        float s = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += dyr[c] * xr[c] * w[c];
        s = block_sum(s, scratch);
        const float k = s / (float)C * r * r * r;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) dxr[c] = r * dyr[c] * w[c] - k * xr[c];
    }

    // LayerNorm: mu = mean(x); r = 1 / sqrt(mean((x - mu)^2) + eps);  y = (x - mu) r w + b.
    extern "C" __global__ void sft_layernorm_fwd_f32(const float *x, const float *w, const float *b,
                                                     float *y, float *mean, float *rstd, i64 N,
                                                     i64 C, float eps) {
        __shared__ float scratch[32];
        const i64 n = blockIdx.x;
        const float *xr = x + n * C;
        float *yr = y + n * C;
        float s = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) s += xr[c];
        const float mu = block_sum(s, scratch) / (float)C;
        float v = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) v += (xr[c] - mu) * (xr[c] - mu);
        const float r = 1.0f / sqrtf(block_sum(v, scratch) / (float)C + eps);
        if (threadIdx.x == 0) { mean[n] = mu; rstd[n] = r; }
        for (i64 c = threadIdx.x; c < C; c += blockDim.x)
            yr[c] = (xr[c] - mu) * r * w[c] + (b ? b[c] : 0.0f);
    }
    // With xhat = (x - mu) r and g = dy w:  dx = r (g - mean(g) - xhat mean(g xhat)).
    extern "C" __global__ void sft_layernorm_bwd_dx_f32(const float *dy, const float *x, const float *w,
                                                        const float *mean, const float *rstd,
                                                        float *dx, i64 N, i64 C) {
        __shared__ float scratch[32];
        const i64 n = blockIdx.x;
        const float *dyr = dy + n * C, *xr = x + n * C;
        float *dxr = dx + n * C;
        const float mu = mean[n], r = rstd[n];
        float a = 0, b = 0;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
            a += dyr[c] * w[c];
            b += dyr[c] * w[c] * xr[c];
        }
        const float g_mean = block_sum(a, scratch) / (float)C;
        const float gx_mean = block_sum(b, scratch) / (float)C;
        const float gxhat_mean = r * (gx_mean - mu * g_mean);
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) {
            const float xhat = (xr[c] - mu) * r;
            dxr[c] = r * (dyr[c] * w[c] - g_mean - xhat * gxhat_mean);
        }
    }

    // Column partial sums over a slice of rows (grid.y = slice): pw[s][c] = sum dy (x - mu) r
    // (mu = 0 when mean is NULL: RMSNorm), pb[s][c] = sum dy (when pb is not NULL).
    extern "C" __global__ void sft_norm_dw_partial_f32(const float *dy, const float *x,
                                                       const float *mean, const float *rstd,
                                                       float *pw, float *pb, i64 N, i64 C,
                                                       i64 rows_per_slice) {
        const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x, s = blockIdx.y;
        if (c >= C) return;
        const i64 n0 = s * rows_per_slice, n1 = n0 + rows_per_slice < N ? n0 + rows_per_slice : N;
        float aw = 0, ab = 0;
        for (i64 n = n0; n < n1; n++) {
            const float d = dy[n * C + c], mu = mean ? mean[n] : 0.0f;
            aw += d * (x[n * C + c] - mu) * rstd[n];
            ab += d;
        }
        if (pw) pw[s * C + c] = aw;
        if (pb) pb[s * C + c] = ab;
    }
    // out[c] += sum over slices of partial[s][c]
    extern "C" __global__ void sft_colsum_add_f32(const float *partial, i64 S, i64 C, float *out) {
        const i64 c = (i64)blockIdx.x * blockDim.x + threadIdx.x;
        if (c >= C) return;
        float a = 0;
        for (i64 s = 0; s < S; s++) a += partial[s * C + c];
        out[c] += a;
    }

    // RoPE, rotate-half (HF Llama): for i < D/2 with angle = pos f_i (negated when inverse),
    //   y[i] = x[i] cos - x[i+D/2] sin;   y[i+D/2] = x[i+D/2] cos + x[i] sin.
    // One thread per (token, head, pair); it reads both halves before writing: x == y is fine.
    // T: float, or u16 for bf16 x and y (rotation in f32, results rounded to bf16).
    template <typename T>
    __device__ __forceinline__ void rope_body(const T *x, i64 ldx, T *y, i64 ldy, const int *pos,
                                              const float *inv_freq, i64 N, i64 H, i64 D, int inverse) {
        const i64 half = D / 2;
        GRID_STRIDE(e, N * H * half) {
            const i64 i = e % half, h = (e / half) % H, n = e / (half * H);
            const float angle = (float)pos[n] * inv_freq[i];
            float sn, cs;
            sincosf(angle, &sn, &cs);
            if (inverse) sn = -sn;
            const T *xh = x + n * ldx + h * D;
            T *yh = y + n * ldy + h * D;
            const float a = load_act(xh, i), b = load_act(xh, i + half);
            store_act(yh, i, a * cs - b * sn);
            store_act(yh, i + half, b * cs + a * sn);
        }
    }
    extern "C" __global__ void sft_rope_f32(const float *x, i64 ldx, float *y, i64 ldy, const int *pos,
                                            const float *inv_freq, i64 N, i64 H, i64 D, int inverse) {
        rope_body(x, ldx, y, ldy, pos, inv_freq, N, H, D, inverse);
    }
    extern "C" __global__ void sft_rope_bf16(const u16 *x, i64 ldx, u16 *y, i64 ldy, const int *pos,
                                             const float *inv_freq, i64 N, i64 H, i64 D, int inverse) {
        rope_body(x, ldx, y, ldy, pos, inv_freq, N, H, D, inverse);
    }
    """#, kernels: ["sft_rmsnorm_fwd_f32(ppppllf)", "sft_rmsnorm_fwd_bf16(ppppllf)", "sft_rmsnorm_bwd_dx_f32(pppppll)",
                    "sft_layernorm_fwd_f32(ppppppllf)", "sft_layernorm_bwd_dx_f32(ppppppll)", "sft_norm_dw_partial_f32(pppppplll)",
                    "sft_colsum_add_f32(pllp)", "sft_rope_f32(plplppllli)",
                    "sft_rope_bf16(plplppllli)"])
}
