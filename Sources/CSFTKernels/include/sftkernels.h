// sftkernels.h — the one seam between Swift and native code in sft.
//
// Plain C: explicit pointers, element counts, shapes and strides; every function that can fail
// returns an int status (0 = ok) and leaves a message for sft_last_error(). Row-major layouts.
// Shape letters (as in the Swift code): N rows (tokens, = B*T), C channels, B batch, T tokens,
// H query heads, KV key/value heads, D head dim, V vocab, F feed-forward width.
//
// Work splitting: kernels that are worth running on several cores take (part, nparts) and do
// their share of the rows; the Swift side runs the parts on sft_parallel_for's thread pool.
// GEMMs are split into blocks on the same pool, with OpenBLAS single-threaded inside each.
//
// Sections are owned by concern: keep additions inside the matching section.
#ifndef SFTKERNELS_H
#define SFTKERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------------------------
// Status
// ---------------------------------------------------------------------------------------------

/// The message of the last failing call on this thread ("" when none).
const char *sft_last_error(void);
/// Sets this thread's error message (printf-style) and returns -1.
int sft_set_error(const char *fmt, ...);
/// Instruction set the CPU kernels dispatch to at run time: "avx512", "avx2" or "generic".
const char *sft_cpu_isa(void);
/// Makes the CPU kernels use a given instruction set ("avx512", "avx2", "generic"), for tests
/// and benchmarks of every variant on one machine. Fails when the CPU lacks it.
int sft_cpu_set_isa(const char *name);
/// Runs fn(ctx, i) for every i in [0, n) on the calling thread and up to threads - 1 pool
/// workers (created on first use, kept for the process), and returns when all have finished.
/// Pieces are handed out in order as threads free up. Calls from inside a piece, or while
/// another thread's call is running, run their pieces on the calling thread.
void sft_parallel_for(int64_t n, int threads, void (*fn)(void *ctx, int64_t i), void *ctx);

// ---------------------------------------------------------------------------------------------
// Elementwise (f32 unless named); n = element count
// ---------------------------------------------------------------------------------------------

void sft_fill_f32(float *y, float value, int64_t n);
/// y = a + b
void sft_add_f32(const float *a, const float *b, float *y, int64_t n);
/// y (f32) = a (f32) + b (bf16): the residual add of mixed precision.
void sft_add_f32_bf16(const float *a, const uint16_t *b, float *y, int64_t n);
/// y += alpha * x
void sft_axpy_f32(float alpha, const float *x, float *y, int64_t n);
/// y = alpha * x
void sft_scale_f32(float alpha, const float *x, float *y, int64_t n);
/// y = a * b
void sft_mul_f32(const float *a, const float *b, float *y, int64_t n);
/// sum of squares in double (for global gradient norms)
double sft_sumsq_f32(const float *x, int64_t n);
/// bf16 <-> f32 (round to nearest even), f16 <-> f32
void sft_bf16_to_f32(const uint16_t *x, float *y, int64_t n);
void sft_f32_to_bf16(const float *x, uint16_t *y, int64_t n);
void sft_f16_to_f32(const uint16_t *x, float *y, int64_t n);
void sft_f32_to_f16(const float *x, uint16_t *y, int64_t n);
/// Inverted dropout: y = x * keep / (1-p), keep drawn from a counter-based hash of
/// (seed, offset + i) so every backend and every chunking draws the same mask (the hash is
/// spelled out in elementwise.c). mask (nullable) gets 0/1 bytes. Backward: the same call on dy.
void sft_dropout_f32(const float *x, float *y, uint8_t *mask, int64_t n, float p,
                     uint64_t seed, uint64_t offset);

// ---------------------------------------------------------------------------------------------
// Normalization. x, y: (N, C); w, b: (C); mean, rstd: (N) saved for backward.
// Backward accumulates into dw/db (+=) so gradient accumulation needs no extra buffer;
// dw/db may be NULL for frozen weights. dx is written (=).
// Parts: forward splits rows; backward splits rows for dx and columns for dw/db, so the parts
// of one call never write the same memory.
// ---------------------------------------------------------------------------------------------

void sft_rmsnorm_fwd_f32(const float *x, const float *w, float *y, float *rstd,
                         int64_t N, int64_t C, float eps, int part, int nparts);
void sft_rmsnorm_bwd_f32(const float *dy, const float *x, const float *w, const float *rstd,
                         float *dx, float *dw, int64_t N, int64_t C, int part, int nparts);
void sft_layernorm_fwd_f32(const float *x, const float *w, const float *b, float *y,
                           float *mean, float *rstd, int64_t N, int64_t C, float eps,
                           int part, int nparts);
void sft_layernorm_bwd_f32(const float *dy, const float *x, const float *w, const float *mean,
                           const float *rstd, float *dx, float *dw, float *db, int64_t N,
                           int64_t C, int part, int nparts);

// ---------------------------------------------------------------------------------------------
// Rotary position embedding, rotate-half layout (HF): for i < D/2,
//   y[i]       = x[i] cos(p f_i) - x[i+D/2] sin(p f_i)
//   y[i+D/2]   = x[i+D/2] cos(p f_i) + x[i] sin(p f_i)
// x, y: (N, H, D) with row stride ldx/ldy floats between tokens (so q/k can be views into a
// fused qkv buffer); pos: (N) positions (packing restarts them per document);
// inv_freq: (D/2) frequencies, already Llama-3-scaled where the config asks.
// inverse != 0 rotates by -angle: that is the backward pass (rotation is orthogonal).
// x == y (in place) is allowed.
// ---------------------------------------------------------------------------------------------

void sft_rope_f32(const float *x, int64_t ldx, float *y, int64_t ldy, const int32_t *pos,
                  const float *inv_freq, int64_t N, int64_t H, int64_t D, int inverse,
                  int part, int nparts);
/// The same over bf16 x and y (mixed precision): rotation in f32, results rounded to bf16.
void sft_rope_bf16(const uint16_t *x, int64_t ldx, uint16_t *y, int64_t ldy, const int32_t *pos,
                   const float *inv_freq, int64_t N, int64_t H, int64_t D, int inverse,
                   int part, int nparts);

// ---------------------------------------------------------------------------------------------
// Causal attention with GQA, packed documents and optional ALiBi.
// q: (B, T, H, D), row stride ldq floats per token; k, v: (B, T, KV, D), strides ldk, ldv;
// o: (B, T, H, D) stride ldo. Query head h reads kv head h / (H / KV).
// doc: (B, T) document ids or NULL. A document is a maximal run of equal ids (packed rows put
// each document in one contiguous run); token t attends to s <= t of its own run only.
// alibi: (H) slopes or NULL; adds -slope * (t - s) to the (scaled) score.
// window: sliding window (Mistral, Gemma): t sees s only when t - s < window; <= 0: no window.
// softcap: > 0 replaces the scaled score x by softcap * tanh(x / softcap) before ALiBi and the
// mask (Gemma 2's attn_logit_softcapping); <= 0: off.
// lse: (B, H, T) log-sum-exp of the scores, saved for backward.
// Work is split into units — (b, h, block of query rows) in forward, (b, kv head, run of key
// tiles) in backward — so every output row has one writer; backward's dq gets a share from
// every run of key tiles: the first run's goes to dq, the others' to `work`
// (sft_attention_bwd_work_floats floats, contents don't matter before the call), and once
// every part has returned, sft_attention_bwd_sum_f32 (in parts of rows) adds them to dq.
// next: a counter shared by the parts of one call, 0 before the call; parts take units from it
// largest first as they go (balanced even when the OS delays a part). NULL: each part runs a
// fixed share. The result does not depend on which part ran a unit. dq, dk, dv are written (=).
// Return 0, or -1 (message in sft_last_error) when scratch memory cannot be allocated.
// ---------------------------------------------------------------------------------------------

int sft_attention_fwd_f32(const float *q, int64_t ldq, const float *k, int64_t ldk,
                          const float *v, int64_t ldv, float *o, int64_t ldo, float *lse,
                          const int32_t *doc, const float *alibi, int64_t window, int64_t B,
                          int64_t T, int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                          int64_t *next, int part, int nparts);
int sft_attention_bwd_f32(const float *q, int64_t ldq, const float *k, int64_t ldk,
                          const float *v, int64_t ldv, const float *o, int64_t ldo,
                          const float *dout, int64_t lddo, const float *lse,
                          const int32_t *doc, const float *alibi, int64_t window, float *dq,
                          int64_t lddq,
                          float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B,
                          int64_t T, int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                          float *work, int64_t *next, int part, int nparts);
/// The forward over bf16 q, k, v and o (mixed precision; uint16 bits, leading dimensions in
/// elements): the f32 kernel's math on the values widened exactly, tile by tile, with P rounded
/// to bf16 for O = P V (m, l, lse from the unrounded p, as FlashAttention) and o rounded to
/// nearest even; lse f32. Where sft_gemm_bf16_variant() is "avx512bf16" and D is even, S = Q K^T
/// and O += P V run on vdpbf16ps (attention.c).
int sft_attention_fwd_bf16(const uint16_t *q, int64_t ldq, const uint16_t *k, int64_t ldk,
                           const uint16_t *v, int64_t ldv, uint16_t *o, int64_t ldo, float *lse,
                           const int32_t *doc, const float *alibi, int64_t window, int64_t B,
                           int64_t T, int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                           int64_t *next, int part, int nparts);
/// The backward over bf16 q, k, v and o (as sft_attention_fwd_bf16); dout, lse, dq, dk, dv and
/// `work` are f32, and the dq shares are summed by sft_attention_bwd_sum_f32 as for f32.
int sft_attention_bwd_bf16(const uint16_t *q, int64_t ldq, const uint16_t *k, int64_t ldk,
                           const uint16_t *v, int64_t ldv, const uint16_t *o, int64_t ldo,
                           const float *dout, int64_t lddo, const float *lse,
                           const int32_t *doc, const float *alibi, int64_t window, float *dq,
                           int64_t lddq, float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B,
                           int64_t T, int64_t H, int64_t KV, int64_t D, float scale, float softcap,
                           float *work, int64_t *next, int part, int nparts);
int64_t sft_attention_bwd_work_floats(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t D);
void sft_attention_bwd_sum_f32(const float *work, float *dq, int64_t lddq, int64_t B, int64_t T,
                               int64_t H, int64_t KV, int64_t D, int part, int nparts);

// ---------------------------------------------------------------------------------------------
// SwiGLU: h = silu(g) * u over n elements. Backward writes dg, du (=).
// ---------------------------------------------------------------------------------------------

// GELU (tanh_form 0: exact erf form, 1: tanh approximation): y = gelu(x), or gelu(x) * u when u
// is not NULL (GeGLU). Backward writes dx, and du when u and du are given (gelu.c).
void sft_gelu_fwd_f32(const float *x, const float *u, float *y, int64_t n, int tanh_form);
void sft_gelu_bwd_f32(const float *dy, const float *x, const float *u, float *dx, float *du, int64_t n,
                      int tanh_form);
/// bf16 activations: x, u, y bf16 (y rounded to nearest even); backward dy, dx, du f32.
void sft_gelu_fwd_bf16(const uint16_t *x, const uint16_t *u, uint16_t *y, int64_t n, int tanh_form);
void sft_gelu_bwd_bf16(const float *dy, const uint16_t *x, const uint16_t *u, float *dx, float *du, int64_t n,
                       int tanh_form);

// Clamp to [-limit, limit]; backward passes dy where -limit <= x <= limit (clamp.c).
void sft_clamp_fwd_f32(const float *x, float *y, int64_t n, float limit);
void sft_clamp_bwd_f32(const float *dy, const float *x, float *dx, int64_t n, float limit);

void sft_swiglu_fwd_f32(const float *g, const float *u, float *h, int64_t n);
void sft_swiglu_bwd_f32(const float *dh, const float *g, const float *u, float *dg, float *du,
                        int64_t n);
/// bf16 activations: g, u, h bf16 (h rounded to nearest even); backward dh, dg, du f32.
void sft_swiglu_fwd_bf16(const uint16_t *g, const uint16_t *u, uint16_t *h, int64_t n);
void sft_swiglu_bwd_bf16(const float *dh, const uint16_t *g, const uint16_t *u, float *dg, float *du,
                         int64_t n);

// ---------------------------------------------------------------------------------------------
// Embedding: out[i] = table[ids[i]] (N, C). Backward: dtable[ids[i]] += dout[i].
// Returns nonzero (with a message) when an id is outside [0, V).
// ---------------------------------------------------------------------------------------------

int sft_embedding_fwd_f32(const int32_t *ids, const float *table, float *out, int64_t N,
                          int64_t C, int64_t V);
void sft_embedding_bwd_f32(const int32_t *ids, const float *dout, float *dtable, int64_t N,
                           int64_t C);

// ---------------------------------------------------------------------------------------------
// bf16 GEMM with f32 accumulation (gemm_bf16.c): C (M×N, f32) = alpha · op(A) op(B) + beta · C,
// row-major; op(A) is M×K (A stored K×M when trans_a), op(B) is K×N (B stored N×K when trans_b).
// A and B are f32 (rounded to bf16, nearest even, as they are packed) or bf16 (a_bf16 / b_bf16).
// beta == 0: C is not read. Part `part` of `nparts` computes a block of C (see the file).
// ---------------------------------------------------------------------------------------------

int sft_gemm_bf16(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                  const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                  float beta, float *C, int64_t ldc, int part, int nparts);
/// The readable reference: the same math as three plain loops (one thread).
void sft_gemm_bf16_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                       float beta, float *C, int64_t ldc);
/// Two products summed in one pass over C (a Linear's and its LoRA adapter's): C = alpha ·
/// (op(A) op(B) + op(A2) op(B2)) + beta · C, op(A2) M×K2 and op(B2) K2×N with the same
/// transposes, K2 <= 576 (its pairs follow the last depth block's in the same panels). C is
/// f32, or bf16 (c_bf16: summed in f32 and rounded once, nearest even; beta must be 0).
int sft_gemm_bf16_pair(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                       const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                       int64_t K2, const void *A2, int a2_bf16, int64_t lda2, const void *B2, int b2_bf16, int64_t ldb2,
                       float beta, void *C, int c_bf16, int64_t ldc, int part, int nparts);
/// The pair's readable reference (one thread).
void sft_gemm_bf16_pair_ref(int trans_a, int trans_b, int64_t M, int64_t N, int64_t K, float alpha,
                            const void *A, int a_bf16, int64_t lda, const void *B, int b_bf16, int64_t ldb,
                            int64_t K2, const void *A2, int a2_bf16, int64_t lda2, const void *B2, int b2_bf16,
                            int64_t ldb2, float beta, void *C, int c_bf16, int64_t ldc);
/// The micro-kernel in use: "avx512bf16", "avx512", "avx2" or "generic".
const char *sft_gemm_bf16_variant(void);
/// Forces a micro-kernel (or "auto") for tests and benchmarks; fails when the CPU lacks it.
/// The env var SFT_GEMM_BF16 does the same at first use.
int sft_gemm_bf16_set_variant(const char *name);
/// Runs a register-only loop of vdpbf16ps (24 independent accumulators) `iters` times on the
/// calling thread and returns the flops done, or -1 without AVX512_BF16. *sink gets the sum.
double sft_dpbf16_peak(int64_t iters, float *sink);

// ---------------------------------------------------------------------------------------------
// Cross-entropy over one chunk of logit rows (the LM head GEMM produces the chunk).
// logits: (n, V), overwritten with d(loss)/d(logits) * grad_scale when want_grad != 0.
// targets: (n); rows whose target == ignore_index (or is outside [0, V): callers check)
// contribute no loss and zero gradient. softcap > 0: the loss is over softcap tanh(z / softcap)
// (final-logit softcapping) and the gradient is taken back through it; <= 0: off.
// Returns the summed loss (double) over non-ignored rows; *count gets their number.
// Parallel over rows with (part, nparts); each part returns its own partial sum.
// ---------------------------------------------------------------------------------------------

double sft_xent_rows_f32(float *logits, const int32_t *targets, int64_t n, int64_t V,
                         int32_t ignore_index, float grad_scale, int want_grad, float softcap,
                         int64_t *count, int part, int nparts);

// ---------------------------------------------------------------------------------------------
// AdamW on f32 master weights, decoupled weight decay:
//   m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   p -= lr * (m / bc1 / (sqrt(v / bc2) + eps) + wd * p)
// bc1 = 1 - b1^t, bc2 = 1 - b2^t (computed by the caller).
// ---------------------------------------------------------------------------------------------

void sft_adamw_f32(float *p, const float *g, float *m, float *v, int64_t n, float lr, float b1,
                   float b2, float eps, float wd, float bc1, float bc2);

// ---------------------------------------------------------------------------------------------
// Generation: attention of Tq new tokens against a KV cache of S tokens (batch 1).
// q, o: (Tq, H, D) rows of H*D floats; kc, vc: (S, KV, D). Query i is at position S-Tq+i and
// attends to cache rows 0..S-Tq+i. alibi (H slopes) or NULL and softcap (> 0, else off) as in
// sft_attention_fwd_f32, with cache row j at position j. Split over heads with (part, nparts).
// ---------------------------------------------------------------------------------------------

void sft_attention_cached_f32(const float *q, const float *kc, const float *vc, float *o,
                              int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                              float scale, const float *alibi, float softcap, int part, int nparts);

// ---------------------------------------------------------------------------------------------
// Dequantization (GGUF blocks, bitsandbytes NF4/FP4). Formats section: owned by the GGUF /
// quantization code. Each block type has a readable reference in the .c file.
// ---------------------------------------------------------------------------------------------

// GGML block types (ids as stored in GGUF): F32, F16, BF16, F64, I8..I64, Q4_0, Q4_1, Q5_0,
// Q5_1, Q8_0, IQ4_NL (32-value blocks) and Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K (256-value
// super-blocks). Layouts and reference decoders: quant_gguf.c.

/// Nonzero when sft_gguf_dequantize supports GGML type id `type`.
int sft_gguf_can_dequantize(int type);
/// Decodes n values (a whole number of blocks) of GGML type `type` at src into dst (f32).
int sft_gguf_dequantize(int type, const void *src, float *dst, int64_t n);
/// Dot product of one quantized row of n values (n a multiple of 32) with f32 x.
float sft_vec_dot_q4_0_f32(const void *row, const float *x, int64_t n);
float sft_vec_dot_q4_1_f32(const void *row, const float *x, int64_t n);
float sft_vec_dot_q8_0_f32(const void *row, const float *x, int64_t n);
/// y[r] = dot(W[r, :], x) for this part's share of the nrows rows; W is (nrows, ncols) in
/// GGML type `type`, rows contiguous (ncols a multiple of the block size). Decodes on the fly.
int sft_matvec_q(int type, const void *w, const float *x, float *y, int64_t nrows, int64_t ncols,
                 int part, int nparts);
/// Instruction sets of the quantized kernels (the isa arguments force one, for tests).
/// AVX512VNNI: AVX-512 F/BW/VL with VNNI (vpdpbusd), used by the int8-activation kernels.
enum { SFT_ISA_AUTO = 0, SFT_ISA_GENERIC = 1, SFT_ISA_AVX2 = 2, SFT_ISA_AVX512 = 3, SFT_ISA_AVX512VNNI = 4 };
int sft_matvec_q_isa(int isa, int type, const void *w, const float *x, float *y, int64_t nrows,
                     int64_t ncols, int part, int nparts);
/// The best instruction set the quantized kernels use on this CPU (SFT_ISA_*).
int sft_quant_isa_level(void);

// Integer-activation kernels (quant_dot.c), llama.cpp's way of running batch-1 matvecs: x is
// quantized once per product to integer blocks of 32 (d = max|x|/127 or /32767, q = x/d
// rounded half to even), and each weight block times activation block is an integer dot
// product scaled once: d_w d_x sum(q_w q_x) (+ m_w s for types with a minimum).
/// 8-bit activation block (for Q4_0, Q4_1, Q5_0, Q5_1): s = d * sum(qs).
typedef struct { float d; float s; int8_t qs[32]; } sft_q8x_block;
/// 16-bit activation block (for Q8_0: as fast as 8 bits there, 128 times finer).
typedef struct { float d; int16_t qs[32]; } sft_q16x_block;
/// Bits of the activation blocks GGML type `type` is dotted with: 8, 16, or 0 (no integer
/// kernel; such types use the f32-activation kernels above).
int sft_qx_bits(int type);
/// Quantizes x (n, a multiple of 32) into n/32 blocks of `bits` (8: sft_q8x_block, 16:
/// sft_q16x_block). Every isa gives the same bits.
int sft_qx_quantize(int isa, int bits, const float *x, int64_t n, void *xq);
/// Nonzero when GGML type `type` has the interleaved layout (Q4_0, Q4_1, Q8_0): rows in groups
/// of 8 with their codes regrouped so one vector holds a few codes of each of the 8 rows; the
/// integer kernels read it several times faster. Same size; the rows % 8 last rows stay as
/// they were.
int sft_qx_can_interleave(int type);
/// W (rows, cols) of type `type` from GGML row layout (src) to the interleaved one (dst), and
/// back. src and dst must not overlap.
int sft_qx_interleave(int type, const void *src, int64_t rows, int64_t cols, void *dst);
int sft_qx_deinterleave(int type, const void *src, int64_t rows, int64_t cols, void *dst);
/// One matrix of sft_qmatvec: W (rows, cols) in GGML type `type`, rows contiguous (or
/// interleaved, see above); y (rows).
typedef struct { int type; const void *w; int64_t rows; float *y; int interleaved; } sft_qmv_out;
/// What sft_qmatvec does with each dot: y = W x, y += W x, or (two matrices of equal rows,
/// gate then up) y0 = silu(W0 x) * (W1 x) with outs[1].y unused.
enum { SFT_QMV_STORE = 0, SFT_QMV_ACCUMULATE = 1, SFT_QMV_SWIGLU = 2 };
/// y_k = W_k x for 1 to 4 matrices sharing x (cols): with int_x, x is quantized once per
/// activation format in use and types with an integer kernel use it (others the f32 kernels
/// above); rows of all matrices are split into pieces on the thread pool (sft_parallel_for,
/// `threads` threads). Each row is computed whole by one thread, so the result does not
/// depend on `threads`.
int sft_qmatvec(int isa, int int_x, const sft_qmv_out *outs, int nouts, const float *x,
                int64_t cols, int mode, int threads);

// bitsandbytes 4-bit formats (QLoRA): NF4 / FP4 codes with one f32 absmax per block of
// `blocksize` values of the flattened tensor; byte i holds value 2i in its high nibble and
// value 2i+1 in its low nibble. Optional double quantization of the absmax values: 8-bit
// codes against the signed dynamic map in blocks of 256, plus an f32 offset. Rounding rules
// and the reference code: quant_nf4.c.
enum { SFT_Q4_NF4 = 0, SFT_Q4_FP4 = 1 };
/// The 16 values of a 4-bit type indexed by code (NULL for an unknown type).
const float *sft_q4_code(int type);
/// bitsandbytes' create_dynamic_map(signed=True): 256 ascending f32 values into code.
void sft_dynamic_map_signed(float *code);
/// Reference quantizer: x (n) -> packed ((n+1)/2 bytes) and absmax (ceil(n/blocksize)).
int sft_nf4_quantize_ref(int type, const float *x, int64_t n, int64_t blocksize, uint8_t *packed,
                         float *absmax);
/// The same quantizer, vectorized per instruction set and split over blocks with (part,
/// nparts); blocksize even, at most 4096. Equal to the reference bit for bit.
int sft_nf4_quantize(int type, const float *x, int64_t n, int64_t blocksize, uint8_t *packed,
                     float *absmax, int part, int nparts);
/// Reference dequantizer: y (n) = value[code] * absmax[block].
int sft_nf4_dequantize_ref(int type, const uint8_t *packed, const float *absmax, int64_t n,
                           int64_t blocksize, float *y);
/// Fast dequantizer of values [start, start+count) of a quantized tensor into y (count):
/// packed is the whole tensor's codes, absmax the scales from block start/blocksize on.
/// Vectorized per instruction set; equal to the reference bit for bit.
int sft_nf4_dequantize(int type, const uint8_t *packed, const float *absmax, int64_t blocksize,
                       int64_t start, int64_t count, float *y);
/// y[r] = dot(W[r, :], x) for this part's rows of W (rows, cols) stored 4-bit (batch-1 decode).
int sft_nf4_matvec(int type, const uint8_t *packed, const float *absmax, int64_t blocksize,
                   const float *x, float *y, int64_t rows, int64_t cols, int part, int nparts);
/// bitsandbytes' reference quantize_blockwise: x (n) -> q (n) codes into the ascending 256-value
/// code, absmax (ceil(n/blocksize)).
int sft_quantize_blockwise8_ref(const float *x, int64_t n, int64_t blocksize, const float *code,
                                uint8_t *q, float *absmax);
/// y[i] = code[q[e]] * absmax[e / blocksize] + offset for e = start + i, i < count (q and
/// absmax are the whole arrays), rounded after the product and after the sum.
void sft_dequantize_blockwise8(const uint8_t *q, const float *absmax, const float *code,
                               int64_t blocksize, float offset, int64_t start, int64_t count,
                               float *y);

// ---------------------------------------------------------------------------------------------
// CUDA loader (run-time dlopen; no build-time toolkit). cuda_loader.c.
// The driver API (libcuda.so.1), NVRTC and cuBLASLt are found and opened at run time; only the
// functions below are used, declared here with sft_ names and plain C types (no CUDA headers).
// Each sft_cu* / sft_nvrtc* wrapper calls the loaded symbol of the same name (the driver's _v2
// variants where CUDA's header maps to them) and returns its status code unchanged, or
// SFT_CUDA_NOT_LOADED when its library is not loaded.
// Search order for each library: the directories in $SFT_CUDA_LIBS (colon-separated),
// $CUDA_HOME/lib64, $CUDA_PATH/lib64, /usr/local/cuda/lib64, the dynamic loader's own path
// (LD_LIBRARY_PATH, ld.so.cache), then the lib folders of NVIDIA's PyPI wheels
// (site-packages/nvidia/{cu13,cu12,cuda_nvrtc,cublas}/lib) under the usual Python prefixes.
// ---------------------------------------------------------------------------------------------

enum { SFT_CUDA_LIB_DRIVER = 0, SFT_CUDA_LIB_NVRTC = 1, SFT_CUDA_LIB_CUBLASLT = 2, SFT_CUDA_LIB_COUNT = 3 };
/// Returned by a wrapper whose library is not loaded (not a CUDA, NVRTC or cuBLAS code).
enum { SFT_CUDA_NOT_LOADED = -9999 };

/// Opens the three libraries once per process (later calls return the first result) and
/// resolves their symbols. Returns a bit mask of the libraries now usable (1 << SFT_CUDA_LIB_*).
int sft_cuda_load(void);
/// The file a library was loaded from ("" when it was not).
const char *sft_cuda_lib_path(int lib);
/// Every place searched for it, "; "-separated, with the reason each was rejected.
const char *sft_cuda_lib_tried(int lib);
/// Why it is unusable ("" when loaded).
const char *sft_cuda_lib_error(int lib);
/// NULL for NVIDIA's library; when the loaded `lib` is part of sft's emulated GPU
/// (tools/cuda-emulate), its one-line description.
const char *sft_cuda_emulation(int lib);
/// The file name searched for a library ("libcuda.so.1", "libnvrtc.so*", "libcublasLt.so*").
const char *sft_cuda_lib_name(int lib);
/// Searches for `lib` as sft_cuda_load does, but in `dirs` (colon-separated, may be NULL) and,
/// when `defaults` != 0, the usual places; opens and closes what it finds, keeping nothing.
/// Returns 0 with the file in `path`, or -1 with what was tried in `tried` (and `path` "").
int sft_cuda_probe(int lib, const char *dirs, int defaults, char *path, size_t path_cap,
                   char *tried, size_t tried_cap);

/// Opens a further CUDA library (e.g. NCCL) with the same search order: $SFT_CUDA_LIBS folders
/// (files matching `pattern`), the CUDA homes, the loader's path (`loader_names`, at most 3,
/// NULL-terminated), the wheel folders `wheel_dirs` (at most 2, NULL-terminated) under the usual
/// site-packages. A candidate must export every name in `symbols` (NULL-terminated). Returns
/// the dlopen handle with the file in `path`, or NULL with what was tried in `tried`.
void *sft_cuda_open_library(const char *pattern, const char *const *loader_names,
                            const char *const *wheel_dirs, const char *const *symbols, char *path,
                            size_t path_cap, char *tried, size_t tried_cap);

// Driver API types (CUDA's cuda.h spells them CUresult, CUdevice, CUdeviceptr, CUcontext, ...).
typedef int sft_CUresult;
typedef int sft_CUdevice;
typedef unsigned long long sft_CUdeviceptr;
typedef struct sft_CUctx_st *sft_CUcontext;
typedef struct sft_CUmod_st *sft_CUmodule;
typedef struct sft_CUfunc_st *sft_CUfunction;
typedef struct sft_CUstream_st *sft_CUstream;
typedef struct sft_CUevent_st *sft_CUevent;

// Driver API constants used (values from CUDA's cuda.h).
enum {
    SFT_CUDA_SUCCESS = 0,
    SFT_CUDA_ERROR_OUT_OF_MEMORY = 2,
    SFT_CUDA_ERROR_NOT_READY = 600,
    SFT_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    SFT_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75,
    SFT_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76,
    SFT_CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97,
    SFT_CU_STREAM_NON_BLOCKING = 1,
    SFT_CU_EVENT_DISABLE_TIMING = 2,
    SFT_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8,
};

sft_CUresult sft_cuInit(unsigned int flags);
sft_CUresult sft_cuDriverGetVersion(int *version);
sft_CUresult sft_cuGetErrorName(sft_CUresult error, const char **name);
sft_CUresult sft_cuGetErrorString(sft_CUresult error, const char **text);
sft_CUresult sft_cuDeviceGetCount(int *count);
sft_CUresult sft_cuDeviceGet(sft_CUdevice *device, int ordinal);
sft_CUresult sft_cuDeviceGetName(char *name, int len, sft_CUdevice device);
sft_CUresult sft_cuDeviceGetAttribute(int *value, int attribute, sft_CUdevice device);
sft_CUresult sft_cuDeviceTotalMem(size_t *bytes, sft_CUdevice device);
sft_CUresult sft_cuDevicePrimaryCtxRetain(sft_CUcontext *context, sft_CUdevice device);
sft_CUresult sft_cuCtxSetCurrent(sft_CUcontext context);
sft_CUresult sft_cuMemGetInfo(size_t *free_bytes, size_t *total_bytes);
sft_CUresult sft_cuMemAlloc(sft_CUdeviceptr *ptr, size_t bytes);
sft_CUresult sft_cuMemFree(sft_CUdeviceptr ptr);
sft_CUresult sft_cuMemAllocHost(void **ptr, size_t bytes);
sft_CUresult sft_cuMemFreeHost(void *ptr);
sft_CUresult sft_cuMemcpyHtoDAsync(sft_CUdeviceptr dst, const void *src, size_t bytes, sft_CUstream stream);
sft_CUresult sft_cuMemcpyDtoHAsync(void *dst, sft_CUdeviceptr src, size_t bytes, sft_CUstream stream);
sft_CUresult sft_cuMemcpyDtoDAsync(sft_CUdeviceptr dst, sft_CUdeviceptr src, size_t bytes, sft_CUstream stream);
sft_CUresult sft_cuMemsetD8Async(sft_CUdeviceptr dst, unsigned char value, size_t count, sft_CUstream stream);
sft_CUresult sft_cuMemsetD32Async(sft_CUdeviceptr dst, unsigned int value, size_t count, sft_CUstream stream);
sft_CUresult sft_cuStreamCreate(sft_CUstream *stream, unsigned int flags);
sft_CUresult sft_cuStreamSynchronize(sft_CUstream stream);
sft_CUresult sft_cuEventCreate(sft_CUevent *event, unsigned int flags);
sft_CUresult sft_cuEventRecord(sft_CUevent event, sft_CUstream stream);
sft_CUresult sft_cuEventQuery(sft_CUevent event);
sft_CUresult sft_cuEventSynchronize(sft_CUevent event);
sft_CUresult sft_cuModuleLoadData(sft_CUmodule *module, const void *image);
sft_CUresult sft_cuModuleGetFunction(sft_CUfunction *function, sft_CUmodule module, const char *name);
sft_CUresult sft_cuFuncSetAttribute(sft_CUfunction function, int attribute, int value);
sft_CUresult sft_cuLaunchKernel(sft_CUfunction function, unsigned int grid_x, unsigned int grid_y,
                                unsigned int grid_z, unsigned int block_x, unsigned int block_y,
                                unsigned int block_z, unsigned int shared_bytes,
                                sft_CUstream stream, void **params, void **extra);

/// NVRTC's version (e.g. 13, 2); -1 when NVRTC is not loaded.
int sft_nvrtc_version(int *major, int *minor);
/// Compiles one CUDA C source with NVRTC: `cubin` != 0 gives machine code for the real
/// architecture named in the options, 0 gives PTX. On success *image (free with sft_cuda_free)
/// and *image_size hold the result. *log (free with sft_cuda_free; may be NULL) gets the
/// compiler's log in every case. Returns 0, or -1 with a message in sft_last_error().
int sft_nvrtc_compile(const char *source, const char *name, const char *const *options,
                      int noptions, int cubin, void **image, size_t *image_size, char **log);
void sft_cuda_free(void *p);

// cuBLASLt (data type values from CUDA's library_types.h).
enum { SFT_CUDA_R_32F = 0, SFT_CUDA_R_16F = 2, SFT_CUDA_R_16BF = 14 };
/// Creates / destroys a cuBLASLt handle. Return a cuBLAS status (0 = success).
int sft_cublaslt_create(void **handle);
int sft_cublaslt_destroy(void *handle);
/// The cuBLASLt version number (e.g. 130200), 0 when not loaded.
size_t sft_cublaslt_version(void);
/// Row-major batched strided GEMM on `stream`: C[i] = alpha op(A[i]) op(B[i]) + beta C[i],
/// op(A) (M×K), op(B) (K×N), C (M×N); leading dimensions and strides in elements; a/b/c_type
/// SFT_CUDA_R_*; f32 accumulation (tf32 != 0 lets f32 inputs use TF32 tensor cores).
/// Returns 0, or -1 with a message naming the failing cuBLASLt call in sft_last_error().
int sft_cublaslt_gemm(void *handle, int trans_a, int trans_b, int64_t M, int64_t N, int64_t K,
                      float alpha, sft_CUdeviceptr A, int a_type, int64_t lda, int64_t stride_a,
                      sft_CUdeviceptr B, int b_type, int64_t ldb, int64_t stride_b, float beta,
                      sft_CUdeviceptr C, int c_type, int64_t ldc, int64_t stride_c, int64_t batch,
                      int tf32, sft_CUdeviceptr workspace, size_t workspace_bytes,
                      sft_CUstream stream);

// ---------------------------------------------------------------------------------------------
// NCCL loader (run-time dlopen of libnccl.so.2; no build-time NCCL). nccl_loader.c.
// Searched like the CUDA libraries (sft_cuda_open_library), plus the nvidia-nccl wheels'
// nvidia/nccl/lib. Calls return 0, or -1 with a message in sft_last_error(). Collectives are
// enqueued on `stream` and act in place on device memory.
// ---------------------------------------------------------------------------------------------

enum { SFT_NCCL_UNIQUE_ID_BYTES = 128 };
/// Opens NCCL once per process; 0, or -1 (sft_nccl_tried says where it looked).
int sft_nccl_load(void);
const char *sft_nccl_lib_path(void);
const char *sft_nccl_tried(void);
/// NULL for NVIDIA's NCCL; the one-line description of sft's emulated NCCL (tools/cuda-emulate).
const char *sft_nccl_emulation(void);
/// ncclGetVersion's code (e.g. 22703 for 2.27.3), -1 when not loaded.
int sft_nccl_version(void);
/// ncclGetUniqueId into `id` (SFT_NCCL_UNIQUE_ID_BYTES bytes), to be broadcast to every rank.
int sft_nccl_unique_id(void *id);
/// ncclCommInitRank: joins the communicator of `ranks` ranks named by `id` as `rank`.
int sft_nccl_comm_init(void **comm, int ranks, const void *id, int rank);
int sft_nccl_comm_destroy(void *comm);
/// ncclGroupStart (start != 0) or ncclGroupEnd.
int sft_nccl_group(int start);
int sft_nccl_allreduce_sum_f32(sft_CUdeviceptr buf, size_t count, void *comm, sft_CUstream stream);
int sft_nccl_broadcast(sft_CUdeviceptr buf, size_t bytes, int root, void *comm, sft_CUstream stream);
/// Whether the communicator's enqueued work has finished, from the host's side: 0 (no error
/// and nothing NCCL itself reports as in progress), 1 (ncclInProgress), or -1 with the error
/// (ncclCommGetAsyncError; without that symbol, 0). A GPU's stream completion is checked
/// separately with a CUDA event.
int sft_nccl_async_state(void *comm);
/// ncclCommAbort: stops the communicator's outstanding work and frees it (after a timeout).
int sft_nccl_comm_abort(void *comm);

// ---------------------------------------------------------------------------------------------
// MPI loader (run-time dlopen of Open MPI; no build-time MPI). mpi_loader.c.
// libmpi.so.40 is searched by the dynamic loader's path ($SFT_MPI_LIB, a file, first when set).
// Collectives act on MPI_COMM_WORLD, start nonblocking and wait at most `timeout_s` seconds
// (<= 0: forever). They return 0, SFT_MPI_TIMEOUT, or -1; both failures leave a message in
// sft_last_error(). Calls must come from one thread at a time (MPI_THREAD_SERIALIZED).
// ---------------------------------------------------------------------------------------------

enum { SFT_MPI_TIMEOUT = -2 };
/// Opens libmpi once per process and resolves its symbols; 0, or -1 (see sft_mpi_load_error).
int sft_mpi_load(void);
/// The file libmpi was loaded from ("" when not loaded).
const char *sft_mpi_lib_path(void);
/// Why libmpi could not be loaded ("" when loaded or not tried).
const char *sft_mpi_load_error(void);
/// The library's version line (MPI_Get_library_version; works before MPI_Init).
int sft_mpi_library_version(char *out, size_t cap);
/// Initializes MPI (once; MPI_THREAD_SERIALIZED, errors returned as codes) and reports this
/// process's rank and the job's size.
int sft_mpi_init(int *rank, int *size);
/// In-place sum over all ranks.
int sft_mpi_allreduce_sum_f32(float *buf, size_t count, double timeout_s);
int sft_mpi_allreduce_sum_f64(double *buf, size_t count, double timeout_s);
/// Starts an in-place sum over all ranks of `count` (<= 2^28) floats and returns at once with
/// `*request` set; `buf` must stay alive and untouched until the request completes.
int sft_mpi_iallreduce_sum_f32(float *buf, size_t count, void **request);
/// Lets MPI progress `*request`; `*done` = 1 once it has completed (the request is then NULL).
int sft_mpi_request_test(void **request, int *done);
/// Waits for `*request` at most `timeout_s` seconds (<= 0: forever): 0, SFT_MPI_TIMEOUT or -1.
int sft_mpi_request_wait(void **request, double timeout_s);
/// Copies `bytes` bytes of rank `root`'s `buf` into every rank's `buf`.
int sft_mpi_broadcast(void *buf, size_t bytes, int root, double timeout_s);
int sft_mpi_barrier(double timeout_s);
/// Ends every rank of the job (MPI_Abort) with exit code `code`; exit(code) without MPI.
void sft_mpi_abort(int code);
/// MPI_Finalize when MPI was initialized (and not finalized); 0 otherwise.
int sft_mpi_finalize(void);

#ifdef __cplusplus
}
#endif

#endif // SFTKERNELS_H
