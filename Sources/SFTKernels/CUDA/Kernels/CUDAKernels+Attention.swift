// CUDA C for causal attention with GQA, packed documents and ALiBi — forward, backward and the
// cached (generation) variant — in the FlashAttention way (Dao et al. 2022): scores are made a
// tile at a time with an online softmax, the (T × T) matrix never exists, lse is saved for the
// backward pass. Same math and masking as attention.c:
//   score(t, s) = cap(scale q_t·k_s) − slope_h (t − s)   for start(t) <= s <= t
// with cap(x) = softcap tanh(x / softcap) when softcap > 0 (Gemma 2), else x.
// where start(t) is the first token of t's document (a maximal run of equal ids).
//
// Activation type: q, k, v and o are float or bf16 (u16) — the same templates instantiated
// twice (`load_act` / `store_act`), `_f32_` and `_bf16_` entries; values are f32 in registers
// and shared memory, o is rounded to bf16 once. The bf16 forward rounds P to bf16 (nearest
// even) for O = P V, as FlashAttention and the CPU's bf16 kernel do (`p_for_pv`): p is
// exp(score - m) against the row's running max at that key tile; m, l and lse come from the
// unrounded p; the f32 instantiation is unchanged. The backward is the gradient of the unrounded
// softmax in both. lse, dout, dq, dk, dv and the cached-decode kernel are f32 only.
//
// Work layout (f32 SIMT version): a block is 32 rows × 4 threads ("a quad" per row). A quad
// splits the head dimension four ways in runs of 4 dims (see quad_dim), so its dot products end
// in two shuffles and shared-memory tiles are read 16 bytes at a time, conflict-free.
// DQ = dims per thread (head dim ≤ 4·DQ, padded with zeros) and BK = keys per shared-memory
// tile are template parameters; one `extern "C"`
// entry per DQ in {4, 8, 16, 24, 32, 64} (head dims up to 16, 32, 64, 96, 128, 256).
// Backward mirrors the CPU split: one kernel sums dq per query block, one sums dk and dv per
// key block over every query (and every head of the GQA group) that sees it; each output row
// has one writer, so no atomics.

extension CUDAKernels {
    /// Head-dim classes of the attention kernels: dims per thread of a quad (4 threads per row).
    public static let attentionDQ = [4, 8, 16, 24, 32, 64]

    /// Attention forward, backward, document bounds, delta, cached decode.
    public static let attention = CUDAModuleSource(name: "attention", body: attentionBody,
                                                   kernels: attentionKernels)

    /// Element types of q, k, v and o the attention kernels are built for: the `_f32_` and
    /// `_bf16_` entry names, with the CUDA C type of each.
    static let attentionTypes = [("f32", "float"), ("bf16", "u16")]

    static var attentionKernels: [String] {
        let fwd = "plplplplpppiiiiff", bwd = "plplplpl" + "ppppp" + "plplpl" + "iiii" + "ff", cached = "ppppiiiiifpf"
        return ["sft_attn_doc_bounds(pppii)"]
            + attentionTypes.map { t, _ in "sft_attn_delta_\(t)(plplpiiii)" }
            + attentionDQ.flatMap { dq in
                attentionTypes.flatMap { t, _ in
                    ["sft_attn_fwd_\(t)_dq\(dq)(\(fwd))", "sft_attn_bwd_dq_\(t)_dq\(dq)(\(bwd))",
                     "sft_attn_bwd_dkdv_\(t)_dq\(dq)(\(bwd))"]
                } + ["sft_attn_cached_f32_dq\(dq)(\(cached))"]
            }
    }

    static var attentionBody: String {
        attentionTemplates + attentionTypes.map { t, a in
            """
            extern "C" __global__ void sft_attn_delta_\(t)(const \(a) *o, i64 ldo, const float *dout, i64 lddo,
                                                       float *delta, int B, int T, int H, int D) {
                attn_delta(o, ldo, dout, lddo, delta, B, T, H, D);
            }

            """
        }.joined() + attentionDQ.map { dq in
            // Shared-memory tiles are 2 · BK · 4·DQ floats: BK = 16 keeps the widest class at 32 KB.
            let bk = dq > 32 ? 16 : 32
            return attentionTypes.map { t, a in
                """
                extern "C" __global__ void __launch_bounds__(128) sft_attn_fwd_\(t)_dq\(dq)(ATTN_FWD_PARAMS(\(a))) {
                    attn_fwd<\(dq), \(bk)>(ATTN_FWD_ARGS);
                }
                extern "C" __global__ void __launch_bounds__(128) sft_attn_bwd_dq_\(t)_dq\(dq)(ATTN_BWD_PARAMS(\(a))) {
                    attn_bwd_dq<\(dq), \(bk)>(ATTN_BWD_ARGS);
                }
                extern "C" __global__ void __launch_bounds__(128) sft_attn_bwd_dkdv_\(t)_dq\(dq)(ATTN_BWD_PARAMS(\(a))) {
                    attn_bwd_dkdv<\(dq), \(bk)>(ATTN_BWD_ARGS);
                }

                """
            }.joined() + """
            extern "C" __global__ void __launch_bounds__(128) sft_attn_cached_f32_dq\(dq)(ATTN_CACHED_PARAMS) {
                attn_cached<\(dq)>(ATTN_CACHED_ARGS);
            }

            """
        }.joined()
    }

    static let attentionTemplates = #"""
    #define QUAD_ROWS 32   // rows per block: 128 threads, 4 per row

    __device__ __forceinline__ float quad_sum(float v) {
        v += __shfl_xor_sync(0xffffffffu, v, 1);
        v += __shfl_xor_sync(0xffffffffu, v, 2);
        return v;
    }

    // start[b][t]: first token of t's document; end[b][t]: one past its last. One block of
    // 1024 threads per batch row; each thread scans a contiguous chunk, and chunks are joined
    // by a prefix max (starts) and a suffix min (ends) in shared memory. doc may be NULL (one
    // document per row).
    extern "C" __global__ void __launch_bounds__(1024) sft_attn_doc_bounds(const int *doc, int *start,
                                                                          int *end, int T, int window) {
        __shared__ int sh[1024];
        const int nt = blockDim.x, k = threadIdx.x;
        const int *d = doc ? doc + (i64)blockIdx.x * T : 0;
        int *st = start + (i64)blockIdx.x * T, *en = end + (i64)blockIdx.x * T;
        const int per = (T + nt - 1) / nt, lo = min(T, k * per), hi = min(T, lo + per);
        // t begins a document when t == 0 or its id differs from t-1's; t+1 ends one likewise.
        #define BEGINS(t) ((t) == 0 || (d && d[t] != d[(t) - 1]))
        #define ENDS(t) ((t) + 1 == T || (d && d[(t) + 1] != d[t]))
        int last = -1;
        for (int t = lo; t < hi; t++) if (BEGINS(t)) last = t;
        sh[k] = last;
        __syncthreads();
        for (int off = 1; off < nt; off <<= 1) {
            const int v = k >= off ? sh[k - off] : -1;
            __syncthreads();
            sh[k] = max(sh[k], v);
            __syncthreads();
        }
        int cur = k > 0 ? sh[k - 1] : -1;
        // A sliding window (window > 0) starts t's keys at t - window + 1 when that is later.
        for (int t = lo; t < hi; t++) { if (BEGINS(t)) cur = t; st[t] = window > 0 ? max(cur, t - window + 1) : cur; }
        __syncthreads();
        int first = T + 1;
        for (int t = hi - 1; t >= lo; t--) if (ENDS(t)) first = t + 1;
        sh[k] = first;
        __syncthreads();
        for (int off = 1; off < nt; off <<= 1) {
            const int v = k + off < nt ? sh[k + off] : T + 1;
            __syncthreads();
            sh[k] = min(sh[k], v);
            __syncthreads();
        }
        cur = k + 1 < nt ? sh[k + 1] : T + 1;
        for (int t = hi - 1; t >= lo; t--) { if (ENDS(t)) cur = t + 1; en[t] = window > 0 ? min(cur, t + window) : cur; }
        #undef BEGINS
        #undef ENDS
    }

    // delta[b][h][t] = dout_t,h · o_t,h (one warp per row), used by both backward kernels.
    // A: the element type of o (float, or u16 for bf16).
    template <typename A>
    __device__ __forceinline__ void attn_delta(const A *o, i64 ldo, const float *dout, i64 lddo,
                                               float *delta, int B, int T, int H, int D) {
        const i64 row = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;   // (b, t, h)
        const int lane = threadIdx.x & 31;
        if (row >= (i64)B * T * H) return;
        const i64 h = row % H, bt = row / H, b = bt / T, t = bt % T;
        const A *orow = o + bt * ldo + h * D;
        const float *drow = dout + bt * lddo + h * D;
        float s = 0;
        for (int d = lane; d < D; d += 32) s += load_act(orow, d) * drow[d];
        s = warp_sum(s);
        if (lane == 0) delta[(b * H + h) * T + t] = s;
    }

    // A: the element type of q, k, v (and o in the forward).
    #define ATTN_FWD_PARAMS(A) const A *q, i64 ldq, const A *k, i64 ldk, const A *v, i64 ldv, \
        A *o, i64 ldo, float *lse, const int *start, const float *alibi, int T, int H, int KV,   \
        int D, float scale, float softcap
    #define ATTN_FWD_ARGS q, ldq, k, ldk, v, ldv, o, ldo, lse, start, alibi, T, H, KV, D, scale, softcap
    #define ATTN_BWD_PARAMS(A) const A *q, i64 ldq, const A *k, i64 ldk, const A *v, i64 ldv,         \
        const float *dout, i64 lddo, const float *lse, const float *delta, const int *start,        \
        const int *end, const float *alibi, float *dq, i64 lddq, float *dk, i64 lddk, float *dv,     \
        i64 lddv, int T, int H, int KV, int D, float scale, float softcap
    #define ATTN_BWD_ARGS q, ldq, k, ldk, v, ldv, dout, lddo, lse, delta, start, end, alibi, dq, lddq, \
        dk, lddk, dv, lddv, T, H, KV, D, scale, softcap
    #define ATTN_CACHED_PARAMS const float *q, const float *kc, const float *vc, float *o, int Tq, \
        int S, int H, int KV, int D, float scale, const float *alibi, float softcap
    #define ATTN_CACHED_ARGS q, kc, vc, o, Tq, S, H, KV, D, scale, alibi, softcap

    // Attention-logit softcapping: cap tanh(x / cap) for cap > 0, else x; and its slope at the
    // capped value y, 1 - (y / cap)^2 (1 when off).
    __device__ __forceinline__ float softcapped(float x, float cap) { return cap > 0.0f ? cap * tanhf(x / cap) : x; }
    __device__ __forceinline__ float softcap_slope(float y, float cap) {
        if (cap <= 0.0f) return 1.0f;
        const float u = y / cap;
        return 1.0f - u * u;
    }

    // A thread's i-th dim (i < DQ) in its quad: runs of 4 consecutive dims, the quad's 4 threads
    // side by side — thread l4 holds dims 16c + 4·l4 + {0,1,2,3} for c < DQ/4 — so one 16-byte
    // shared-memory load feeds 4 multiply-adds and a warp's loads of one row are 64 contiguous
    // bytes (broadcast to its 8 quads, no bank conflicts).
    __device__ __forceinline__ int quad_dim(int i, int l4) { return 16 * (i >> 2) + 4 * l4 + (i & 3); }

    // Loads rows [r0, r0 + ROWS) (those < rmax) of one head of a (B·T, ld) matrix into a
    // (ROWS, 4·DQ) shared tile of float4, zero-padded. E: float, or u16 (bf16, widened).
    template <int DQ, int ROWS, typename E>
    __device__ __forceinline__ void load_tile(float4 (*tile)[DQ], const E *base, i64 ld,
                                              int r0, int rmax, int D) {
        for (int e = threadIdx.x; e < ROWS * 4 * DQ; e += blockDim.x) {
            const int j = e / (4 * DQ), d = e % (4 * DQ), r = r0 + j;
            reinterpret_cast<float *>(tile[j])[d] = (r < rmax && d < D) ? load_act(base, (i64)r * ld + d) : 0.0f;
        }
    }

    // This thread's dims of one row, zero past D, times `mul`.
    template <int DQ, typename E>
    __device__ __forceinline__ void load_row(float *out, const E *row, int l4, int D, float mul) {
        #pragma unroll
        for (int i = 0; i < DQ; i++) {
            const int d = quad_dim(i, l4);
            out[i] = d < D ? load_act(row, d) * mul : 0.0f;
        }
    }

    // Stores this thread's dims of a row (those < D), rounded to bf16 when E is u16.
    template <int DQ, typename E>
    __device__ __forceinline__ void store_row(E *row, const float *v, int l4, int D) {
        #pragma unroll
        for (int i = 0; i < DQ; i++) {
            const int d = quad_dim(i, l4);
            if (d < D) store_act(row, d, v[i]);
        }
    }

    // a · tile_row over the quad's dims, summed across the quad (every thread gets it).
    template <int DQ>
    __device__ __forceinline__ float quad_dot(const float *a, const float4 *tile_row, int l4) {
        float s = 0;
        #pragma unroll
        for (int c = 0; c < DQ / 4; c++) {
            const float4 t = tile_row[4 * c + l4];
            s += a[4 * c] * t.x + a[4 * c + 1] * t.y + a[4 * c + 2] * t.z + a[4 * c + 3] * t.w;
        }
        return quad_sum(s);
    }

    // acc += w · tile_row over the thread's dims.
    template <int DQ>
    __device__ __forceinline__ void quad_axpy(float *acc, float w, const float4 *tile_row, int l4) {
        #pragma unroll
        for (int c = 0; c < DQ / 4; c++) {
            const float4 t = tile_row[4 * c + l4];
            acc[4 * c] += w * t.x;
            acc[4 * c + 1] += w * t.y;
            acc[4 * c + 2] += w * t.z;
            acc[4 * c + 3] += w * t.w;
        }
    }

    // p as O = P V takes it with activations of type A: f32 as is, bf16 rounded to bf16.
    __device__ __forceinline__ float p_for_pv(float p, const float *) { return p; }
    __device__ __forceinline__ float p_for_pv(float p, const u16 *) { return bf16_to_f32(f32_to_bf16(p)); }

    // Forward. grid (query blocks, H, B); block: 32 query rows × 4. Blocks are numbered so the
    // longest rows (latest queries) start first.
    template <int DQ, int BK, typename A>
    __device__ __forceinline__ void attn_fwd(ATTN_FWD_PARAMS(A)) {
        __shared__ float4 Ks[BK][DQ], Vs[BK][DQ];
        const int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
        const int t0 = (gridDim.x - 1 - blockIdx.x) * QUAD_ROWS;
        const int r = threadIdx.x >> 2, l4 = threadIdx.x & 3, t = t0 + r;
        const bool valid = t < T;
        const int tq = valid ? t : T - 1;   // rows past T compute on a real row and write nothing
        const int *st = start + (i64)b * T;
        const float slope = alibi ? alibi[h] : 0.0f;
        const i64 row0 = (i64)b * T;
        float qr[DQ], acc[DQ];
        load_row<DQ>(qr, q + (row0 + tq) * ldq + (i64)h * D, l4, D, scale);
        #pragma unroll
        for (int i = 0; i < DQ; i++) acc[i] = 0.0f;
        float m = -SFT_INF, l = 0.0f;
        const int my_start = st[tq], t_end = min(t0 + QUAD_ROWS, T);
        for (int s0 = st[t0]; s0 < t_end; s0 += BK) {
            __syncthreads();
            load_tile<DQ, BK>(Ks, k + row0 * ldk + (i64)g * D, ldk, s0, t_end, D);
            load_tile<DQ, BK>(Vs, v + row0 * ldv + (i64)g * D, ldv, s0, t_end, D);
            __syncthreads();
            float sc[BK];
            float mx = m;
            #pragma unroll
            for (int j = 0; j < BK; j++) {
                const float dot = quad_dot<DQ>(qr, Ks[j], l4);
                const int s = s0 + j;
                const bool vis = valid && s >= my_start && s <= t;
                sc[j] = vis ? softcapped(dot, softcap) - slope * (float)(t - s) : -SFT_INF;
                mx = fmaxf(mx, sc[j]);
            }
            if (mx == -SFT_INF) continue;   // nothing visible in this tile (same for the quad)
            const float corr = expf(m - mx);   // 0 on the first visible tile (m = -inf)
            float psum = 0.0f;
            #pragma unroll
            for (int j = 0; j < BK; j++) { sc[j] = expf(sc[j] - mx); psum += sc[j]; }
            l = l * corr + psum;
            m = mx;
            #pragma unroll
            for (int i = 0; i < DQ; i++) acc[i] *= corr;
            #pragma unroll
            for (int j = 0; j < BK; j++) quad_axpy<DQ>(acc, p_for_pv(sc[j], q), Vs[j], l4);
        }
        if (!valid) return;
        const float inv = 1.0f / l;
        #pragma unroll
        for (int i = 0; i < DQ; i++) acc[i] *= inv;
        store_row<DQ>(o + (row0 + t) * ldo + (i64)h * D, acc, l4, D);
        if (l4 == 0) lse[((i64)b * H + h) * T + t] = m + logf(l);
    }

    // dq for one block of 32 query rows of head h:
    //   p = exp(score - lse_t), ds = scale p (do_t·v_s - delta_t), dq_t = sum_s ds k_s.
    template <int DQ, int BK, typename A>
    __device__ __forceinline__ void attn_bwd_dq(ATTN_BWD_PARAMS(A)) {
        __shared__ float4 Ks[BK][DQ], Vs[BK][DQ];
        const int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
        const int t0 = (gridDim.x - 1 - blockIdx.x) * QUAD_ROWS;
        const int r = threadIdx.x >> 2, l4 = threadIdx.x & 3, t = t0 + r;
        const bool valid = t < T;
        const int tq = valid ? t : T - 1;
        const int *st = start + (i64)b * T;
        const float slope = alibi ? alibi[h] : 0.0f;
        const i64 row0 = (i64)b * T;
        float qr[DQ], dor[DQ], acc[DQ];
        load_row<DQ>(qr, q + (row0 + tq) * ldq + (i64)h * D, l4, D, scale);
        load_row<DQ>(dor, dout + (row0 + tq) * lddo + (i64)h * D, l4, D, 1.0f);
        #pragma unroll
        for (int i = 0; i < DQ; i++) acc[i] = 0.0f;
        const float L = lse[((i64)b * H + h) * T + tq], dl = delta[((i64)b * H + h) * T + tq];
        const int my_start = st[tq], t_end = min(t0 + QUAD_ROWS, T);
        for (int s0 = st[t0]; s0 < t_end; s0 += BK) {
            __syncthreads();
            load_tile<DQ, BK>(Ks, k + row0 * ldk + (i64)g * D, ldk, s0, t_end, D);
            load_tile<DQ, BK>(Vs, v + row0 * ldv + (i64)g * D, ldv, s0, t_end, D);
            __syncthreads();
            // One key at a time: ds is used at once, so registers hold one row's worth (fully
            // unrolled, the compiler hoists every tile load and spills).
            #pragma unroll 2
            for (int j = 0; j < BK; j++) {
                const float dot = quad_dot<DQ>(qr, Ks[j], l4);
                const float dp = quad_dot<DQ>(dor, Vs[j], l4);
                const int s = s0 + j;
                const bool vis = valid && s >= my_start && s <= t;
                const float y = softcapped(dot, softcap);
                const float p = vis ? expf(y - slope * (float)(t - s) - L) : 0.0f;
                quad_axpy<DQ>(acc, p * (dp - dl) * scale * softcap_slope(y, softcap), Ks[j], l4);
            }
        }
        if (!valid) return;
        store_row<DQ>(dq + (row0 + t) * lddq + (i64)h * D, acc, l4, D);
    }

    // dk, dv for one block of 32 key rows of kv head g: every query t that sees key s (s <= t <
    // end(s)), for every head of the group, adds dv_s += p do_t and dk_s += ds q_t.
    // grid (key blocks, KV, B); query tiles of BK rows go through shared memory.
    template <int DQ, int BK, typename A>
    __device__ __forceinline__ void attn_bwd_dkdv(ATTN_BWD_PARAMS(A)) {
        __shared__ float4 Qs[BK][DQ], Os[BK][DQ];
        __shared__ float Ls[BK], Ds[BK];
        const int b = blockIdx.z, g = blockIdx.y, G = H / KV;
        const int s0 = blockIdx.x * QUAD_ROWS;   // early keys are seen by more queries: first
        const int r = threadIdx.x >> 2, l4 = threadIdx.x & 3, s = s0 + r;
        const bool valid = s < T;
        const int sk = valid ? s : T - 1;
        const int *en = end + (i64)b * T;
        const i64 row0 = (i64)b * T;
        float kr[DQ], vr[DQ], dk_acc[DQ], dv_acc[DQ];
        load_row<DQ>(kr, k + (row0 + sk) * ldk + (i64)g * D, l4, D, scale);
        load_row<DQ>(vr, v + (row0 + sk) * ldv + (i64)g * D, l4, D, 1.0f);
        #pragma unroll
        for (int i = 0; i < DQ; i++) { dk_acc[i] = 0.0f; dv_acc[i] = 0.0f; }
        const int my_end = en[sk], t_stop = en[min(s0 + QUAD_ROWS, T) - 1];
        for (int h = g * G; h < (g + 1) * G; h++) {
            const float slope = alibi ? alibi[h] : 0.0f;
            const float *lse_h = lse + ((i64)b * H + h) * T, *delta_h = delta + ((i64)b * H + h) * T;
            for (int q0 = s0; q0 < t_stop; q0 += BK) {
                __syncthreads();
                load_tile<DQ, BK>(Qs, q + row0 * ldq + (i64)h * D, ldq, q0, t_stop, D);
                load_tile<DQ, BK>(Os, dout + row0 * lddo + (i64)h * D, lddo, q0, t_stop, D);
                for (int i = threadIdx.x; i < BK; i += blockDim.x) {
                    Ls[i] = q0 + i < T ? lse_h[q0 + i] : 0.0f;
                    Ds[i] = q0 + i < T ? delta_h[q0 + i] : 0.0f;
                }
                __syncthreads();
                #pragma unroll 2
                for (int j = 0; j < BK; j++) {
                    const float dot = quad_dot<DQ>(kr, Qs[j], l4);   // k prescaled: scale q·k
                    const float dp = quad_dot<DQ>(vr, Os[j], l4);
                    const int t = q0 + j;
                    const bool vis = valid && t >= s && t < my_end;
                    const float y = softcapped(dot, softcap);
                    const float p = vis ? expf(y - slope * (float)(t - s) - Ls[j]) : 0.0f;
                    quad_axpy<DQ>(dv_acc, p, Os[j], l4);
                    quad_axpy<DQ>(dk_acc, p * (dp - Ds[j]) * scale * softcap_slope(y, softcap), Qs[j], l4);
                }
            }
        }
        if (!valid) return;
        store_row<DQ>(dk + (row0 + s) * lddk + (i64)g * D, dk_acc, l4, D);
        store_row<DQ>(dv + (row0 + s) * lddv + (i64)g * D, dv_acc, l4, D);
    }

    // Generation: query i (position S - Tq + i) of head h against cache rows 0...that position.
    // grid (Tq, H); the 32 quads of a block take keys j ≡ quad (mod 32) with their own online
    // softmax, then merge (m, l, acc) through shared memory.
    template <int DQ>
    __device__ __forceinline__ void attn_cached(ATTN_CACHED_PARAMS) {
        __shared__ float Ms[QUAD_ROWS], Ls[QUAD_ROWS], As[QUAD_ROWS][4 * DQ];
        const int i = blockIdx.x, h = blockIdx.y, g = h / (H / KV);
        const int r = threadIdx.x >> 2, l4 = threadIdx.x & 3, last = S - Tq + i;
        const float slope = alibi ? alibi[h] : 0.0f;
        float qr[DQ], acc[DQ], kv[DQ];
        load_row<DQ>(qr, q + ((i64)i * H + h) * D, l4, D, scale);
        #pragma unroll
        for (int c = 0; c < DQ; c++) acc[c] = 0.0f;
        float m = -SFT_INF, l = 0.0f;
        // The loop bound is the same for the whole block (the shuffles need every lane);
        // quads past `last` in the final round compute on row 0 and keep nothing.
        for (int j0 = 0; j0 <= last; j0 += QUAD_ROWS) {
            const int j = j0 + r;
            const bool ok = j <= last;
            const i64 row = ((i64)(ok ? j : 0) * KV + g) * D;
            load_row<DQ>(kv, kc + row, l4, D, 1.0f);
            float part = 0.0f;
            #pragma unroll
            for (int c = 0; c < DQ; c++) part += qr[c] * kv[c];
            const float sc = softcapped(quad_sum(part), softcap) - slope * (float)(last - j);
            if (!ok) continue;
            const float mx = fmaxf(m, sc), corr = expf(m - mx), p = expf(sc - mx);
            l = l * corr + p;
            m = mx;
            load_row<DQ>(kv, vc + row, l4, D, 1.0f);
            #pragma unroll
            for (int c = 0; c < DQ; c++) acc[c] = acc[c] * corr + p * kv[c];
        }
        if (l4 == 0) { Ms[r] = m; Ls[r] = l; }
        #pragma unroll
        for (int c = 0; c < DQ; c++) As[r][quad_dim(c, l4)] = acc[c];
        __syncthreads();
        float M = -SFT_INF;
        for (int w = 0; w < QUAD_ROWS; w++) M = fmaxf(M, Ms[w]);
        float L = 0.0f;
        for (int w = 0; w < QUAD_ROWS; w++) L += Ls[w] * expf(Ms[w] - M);
        for (int d = threadIdx.x; d < D; d += blockDim.x) {
            float a = 0.0f;
            for (int w = 0; w < QUAD_ROWS; w++) a += As[w][d] * expf(Ms[w] - M);
            o[((i64)i * H + h) * D + d] = a / L;
        }
    }

    """#
}
