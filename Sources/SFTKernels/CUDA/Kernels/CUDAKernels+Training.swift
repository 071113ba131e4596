// CUDA C for the remaining training ops: SwiGLU, embedding gather / scatter-add, the
// cross-entropy rows of the fused LM head (with the row gather/scatter around its GEMMs), and
// AdamW (one tensor, or many tensors in one launch). Same math as swiglu.c, embedding.c,
// xent.c and adamw.c.

extension CUDAKernels {
    /// SwiGLU, embedding, cross-entropy rows, row gather/scatter, AdamW.
    public static let training = CUDAModuleSource(name: "training", body: #"""
    // h = silu(g) u;  dg = dh u sig (1 + g (1 - sig));  du = dh silu(g)
    extern "C" __global__ void sft_swiglu_fwd_f32(const float *g, const float *u, float *h, i64 n) {
        GRID_STRIDE(i, n) {
            const float sig = 1.0f / (1.0f + expf(-g[i]));
            h[i] = g[i] * sig * u[i];
        }
    }
    extern "C" __global__ void sft_swiglu_fwd_bf16(const u16 *g, const u16 *u, u16 *h, i64 n) {
        GRID_STRIDE(i, n) {
            const float gi = bf16_to_f32(g[i]), sig = 1.0f / (1.0f + expf(-gi));
            h[i] = f32_to_bf16(gi * sig * bf16_to_f32(u[i]));
        }
    }
    // T: float, or u16 for bf16 gate and up (f32 dh, dg, du).
    template <typename T>
    __device__ __forceinline__ void swiglu_bwd_body(const float *dh, const T *g, const T *u, float *dg, float *du, i64 n) {
        GRID_STRIDE(i, n) {
            const float gi = load_act(g, i), ui = load_act(u, i);
            const float sig = 1.0f / (1.0f + expf(-gi)), silu = gi * sig;
            dg[i] = dh[i] * ui * sig * (1.0f + gi * (1.0f - sig));
            du[i] = dh[i] * silu;
        }
    }
    extern "C" __global__ void sft_swiglu_bwd_f32(const float *dh, const float *g, const float *u,
                                                  float *dg, float *du, i64 n) {
        swiglu_bwd_body(dh, g, u, dg, du, n);
    }
    extern "C" __global__ void sft_swiglu_bwd_bf16(const float *dh, const u16 *g, const u16 *u,
                                                   float *dg, float *du, i64 n) {
        swiglu_bwd_body(dh, g, u, dg, du, n);
    }

    // out[n] = table[ids[n]] (a block per row). An id outside [0, V) writes a zero row and is
    // reported through the error word (code 1).
    extern "C" __global__ void sft_embedding_fwd_f32(const int *ids, const float *table, float *out,
                                                     i64 N, i64 C, i64 V, int *err) {
        const i64 n = blockIdx.x;
        const int id = ids[n];
        float *row = out + n * C;
        if (id < 0 || id >= V) {
            if (threadIdx.x == 0) report_error(err, 1, n, id);
            for (i64 c = threadIdx.x; c < C; c += blockDim.x) row[c] = 0.0f;
            return;
        }
        const float *src = table + (i64)id * C;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) row[c] = src[c];
    }
    // dtable[ids[n]] += dout[n]; repeated ids meet in atomics. Code 2 for an id outside the
    // table's `rows`.
    extern "C" __global__ void sft_embedding_bwd_f32(const int *ids, const float *dout, float *dtable,
                                                     i64 N, i64 C, i64 rows, int *err) {
        const i64 n = blockIdx.x;
        const int id = ids[n];
        if (id < 0 || id >= rows) {
            if (threadIdx.x == 0) report_error(err, 2, n, id);
            return;
        }
        float *dst = dtable + (i64)id * C;
        const float *src = dout + n * C;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x) atomicAdd(dst + c, src[c]);
    }

    // Cross-entropy of one chunk of logit rows (a block per row), in place:
    //   loss_r = logsumexp(z_r) - z_r[t_r];  z_r <- grad_scale (softmax(z_r) - onehot(t_r))
    // Rows whose target is ignore_index (or outside [0, V)) get loss 0 and zero gradient.
    // softcap > 0 (final-logit softcapping): z is first replaced by y = softcap tanh(z / softcap)
    // and the gradient is (softmax(y) - onehot) (1 - (y / softcap)^2) grad_scale.
    extern "C" __global__ void sft_xent_rows_f32(float *logits, const int *targets, i64 n, i64 V,
                                                 int ignore_index, float grad_scale, int want_grad,
                                                 float softcap, double *row_loss) {
        __shared__ float scratch[32];
        const i64 r = blockIdx.x;
        float *z = logits + r * V;
        const int t = targets[r];
        if (t == ignore_index || t < 0 || t >= V) {
            if (want_grad) for (i64 j = threadIdx.x; j < V; j += blockDim.x) z[j] = 0.0f;
            if (threadIdx.x == 0) row_loss[r] = 0.0;
            return;
        }
        if (softcap > 0.0f) {
            for (i64 j = threadIdx.x; j < V; j += blockDim.x) z[j] = softcap * tanhf(z[j] / softcap);
            __syncthreads();   // thread 0 reads z[t] below
        }
        float m = -SFT_INF;
        for (i64 j = threadIdx.x; j < V; j += blockDim.x) m = fmaxf(m, z[j]);
        m = block_max(m, scratch);
        float s = 0.0f;
        for (i64 j = threadIdx.x; j < V; j += blockDim.x) s += expf(z[j] - m);
        s = block_sum(s, scratch);
        if (threadIdx.x == 0) row_loss[r] = (double)m + log((double)s) - (double)z[t];
        if (!want_grad) return;
        __syncthreads();   // z[t] is read above before any thread overwrites it
        const float k = grad_scale / s;
        if (softcap > 0.0f) {
            const float inv = 1.0f / softcap;
            for (i64 j = threadIdx.x; j < V; j += blockDim.x) {
                const float y = z[j], u = y * inv;
                z[j] = (expf(y - m) * k - (j == t ? grad_scale : 0.0f)) * (1.0f - u * u);
            }
            return;
        }
        for (i64 j = threadIdx.x; j < V; j += blockDim.x) z[j] = expf(z[j] - m) * k;
        __syncthreads();
        if (threadIdx.x == 0) z[t] -= grad_scale;
    }

    // dst[j] = src[rows[j]] and dst[rows[j]] = src[j] for rows of C floats; int gather.
    extern "C" __global__ void sft_gather_rows_f32(const float *src, const int *rows, float *dst,
                                                   i64 n, i64 C) {
        GRID_STRIDE(e, n * C) dst[e] = src[(i64)rows[e / C] * C + e % C];
    }
    extern "C" __global__ void sft_scatter_rows_f32(const float *src, const int *rows, float *dst,
                                                    i64 n, i64 C) {
        GRID_STRIDE(e, n * C) dst[(i64)rows[e / C] * C + e % C] = src[e];
    }
    extern "C" __global__ void sft_gather_i32(const int *src, const int *idx, int *dst, i64 n) {
        GRID_STRIDE(i, n) dst[i] = src[idx[i]];
    }

    // AdamW, decoupled weight decay:
    //   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr (m/bc1 / (sqrt(v/bc2) + eps) + wd p)
    __device__ __forceinline__ void adamw_one(float *p, const float *g, float *m, float *v, i64 i,
                                              float lr, float b1, float b2, float eps, float wd,
                                              float inv_bc1, float inv_bc2) {
        const float gi = g[i];
        const float mi = b1 * m[i] + (1.0f - b1) * gi;
        const float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] -= lr * (mi * inv_bc1 / (sqrtf(vi * inv_bc2) + eps) + wd * p[i]);
    }
    extern "C" __global__ void sft_adamw_f32(float *p, const float *g, float *m, float *v, i64 n,
                                             float lr, float b1, float b2, float eps, float wd,
                                             float bc1, float bc2) {
        const float inv_bc1 = 1.0f / bc1, inv_bc2 = 1.0f / bc2;
        GRID_STRIDE(i, n) adamw_one(p, g, m, v, i, lr, b1, b2, eps, wd, inv_bc1, inv_bc2);
    }
    // Many tensors in one launch: block b updates `per_block` elements of the tensor whose
    // first_block <= b (the list is sorted by first_block). 56 bytes per entry.
    struct AdamTensor {
        float *p;
        const float *g;
        float *m, *v;
        i64 n, first_block;
        float weight_decay, pad;
    };
    extern "C" __global__ void sft_adamw_multi_f32(const AdamTensor *list, int count, i64 per_block,
                                                   float lr, float b1, float b2, float eps,
                                                   float bc1, float bc2) {
        int lo = 0, hi = count - 1;
        while (lo < hi) {
            const int mid = (lo + hi + 1) / 2;
            if (list[mid].first_block <= (i64)blockIdx.x) lo = mid; else hi = mid - 1;
        }
        const AdamTensor t = list[lo];
        const i64 base = ((i64)blockIdx.x - t.first_block) * per_block;
        const i64 stop = base + per_block < t.n ? base + per_block : t.n;
        const float inv_bc1 = 1.0f / bc1, inv_bc2 = 1.0f / bc2;
        for (i64 i = base + threadIdx.x; i < stop; i += blockDim.x)
            adamw_one(t.p, t.g, t.m, t.v, i, lr, b1, b2, eps, t.weight_decay, inv_bc1, inv_bc2);
    }
    """#, kernels: ["sft_swiglu_fwd_f32(pppl)", "sft_swiglu_fwd_bf16(pppl)", "sft_swiglu_bwd_f32(pppppl)", "sft_swiglu_bwd_bf16(pppppl)",
                    "sft_embedding_fwd_f32(ppplllp)", "sft_embedding_bwd_f32(ppplllp)", "sft_xent_rows_f32(ppllififp)",
                    "sft_gather_rows_f32(pppll)", "sft_scatter_rows_f32(pppll)", "sft_gather_i32(pppl)", "sft_adamw_f32(pppplfffffff)",
                    "sft_adamw_multi_f32(pilffffff)"])
}
