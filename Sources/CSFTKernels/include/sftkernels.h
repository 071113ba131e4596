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

// ---------------------------------------------------------------------------------------------
// Causal attention with GQA, packed documents and optional ALiBi.
// q: (B, T, H, D), row stride ldq floats per token; k, v: (B, T, KV, D), strides ldk, ldv;
// o: (B, T, H, D) stride ldo. Query head h reads kv head h / (H / KV).
// doc: (B, T) document ids or NULL. A document is a maximal run of equal ids (packed rows put
// each document in one contiguous run); token t attends to s <= t of its own run only.
// alibi: (H) slopes or NULL; adds -slope * (t - s) to the (scaled) score.
// lse: (B, H, T) log-sum-exp of the scores, saved for backward.
// Work is split into units — (b, h, block of query rows) in forward; (b, kv head, key tile)
// for dk/dv and (b, h, query block) for dq in backward — so every output row has one writer.
// next: a counter shared by the parts of one call, 0 before the call; parts take units from it
// largest first as they go (balanced even when the OS delays a part). NULL: each part runs a
// fixed share. The result does not depend on which part ran a unit. dq, dk, dv are written (=).
// Return 0, or -1 (message in sft_last_error) when scratch memory cannot be allocated.
// ---------------------------------------------------------------------------------------------

int sft_attention_fwd_f32(const float *q, int64_t ldq, const float *k, int64_t ldk,
                          const float *v, int64_t ldv, float *o, int64_t ldo, float *lse,
                          const int32_t *doc, const float *alibi, int64_t B, int64_t T,
                          int64_t H, int64_t KV, int64_t D, float scale, int64_t *next, int part,
                          int nparts);
int sft_attention_bwd_f32(const float *q, int64_t ldq, const float *k, int64_t ldk,
                          const float *v, int64_t ldv, const float *o, int64_t ldo,
                          const float *dout, int64_t lddo, const float *lse,
                          const int32_t *doc, const float *alibi, float *dq, int64_t lddq,
                          float *dk, int64_t lddk, float *dv, int64_t lddv, int64_t B,
                          int64_t T, int64_t H, int64_t KV, int64_t D, float scale, int64_t *next,
                          int part, int nparts);

// ---------------------------------------------------------------------------------------------
// SwiGLU: h = silu(g) * u over n elements. Backward writes dg, du (=).
// ---------------------------------------------------------------------------------------------

void sft_swiglu_fwd_f32(const float *g, const float *u, float *h, int64_t n);
void sft_swiglu_bwd_f32(const float *dh, const float *g, const float *u, float *dg, float *du,
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
// Cross-entropy over one chunk of logit rows (the LM head GEMM produces the chunk).
// logits: (n, V), overwritten with d(loss)/d(logits) * grad_scale when want_grad != 0.
// targets: (n); rows whose target == ignore_index (or is outside [0, V): callers check)
// contribute no loss and zero gradient.
// Returns the summed loss (double) over non-ignored rows; *count gets their number.
// Parallel over rows with (part, nparts); each part returns its own partial sum.
// ---------------------------------------------------------------------------------------------

double sft_xent_rows_f32(float *logits, const int32_t *targets, int64_t n, int64_t V,
                         int32_t ignore_index, float grad_scale, int want_grad,
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
// attends to cache rows 0..S-Tq+i. Split over heads with (part, nparts).
// ---------------------------------------------------------------------------------------------

void sft_attention_cached_f32(const float *q, const float *kc, const float *vc, float *o,
                              int64_t Tq, int64_t S, int64_t H, int64_t KV, int64_t D,
                              float scale, int part, int nparts);

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
/// Instruction sets of the quantized kernels (sft_matvec_q_isa forces one, for tests).
enum { SFT_ISA_AUTO = 0, SFT_ISA_GENERIC = 1, SFT_ISA_AVX2 = 2, SFT_ISA_AVX512 = 3 };
int sft_matvec_q_isa(int isa, int type, const void *w, const float *x, float *y, int64_t nrows,
                     int64_t ncols, int part, int nparts);
/// The best instruction set the quantized kernels use on this CPU (SFT_ISA_*).
int sft_quant_isa_level(void);

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
// CUDA loader (run-time dlopen; no build-time toolkit). Declared by the CUDA work.
// ---------------------------------------------------------------------------------------------

#ifdef __cplusplus
}
#endif

#endif // SFTKERNELS_H
