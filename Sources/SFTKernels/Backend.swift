// The op set every backend implements (DESIGN.md "The op set"). Coarse fused ops with their
// backward passes; no autograd here. All tensors are views into device buffers, f32 unless a
// parameter says otherwise; layouts are row-major with explicit leading dimensions.
//
// Shape letters: N rows (= B*T tokens), C channels, B batch, T tokens, H query heads,
// KV key/value heads, D head dim, V vocab.

/// Shape of a causal attention call. q/o rows have `ldq`/`ldo` floats between tokens,
/// k/v rows `ldk`/`ldv`, so q, k and v may be column slices of one fused qkv buffer.
/// `window` (sliding-window attention, Mistral / Gemma): token t sees keys s with
/// t − window < s ≤ t (and in its document); nil: every earlier key.
public struct AttentionShape: Sendable, Equatable {
    /// Batch rows B, tokens per row T, query heads H, key/value heads KV (a divisor of H) and
    /// head width D.
    public var B: Int, T: Int, H: Int, KV: Int, D: Int
    /// Floats between consecutive tokens' rows of q, k, v and o (defaults H·D, KV·D, KV·D, H·D;
    /// larger when they are column slices of a fused buffer).
    public var ldq: Int, ldk: Int, ldv: Int, ldo: Int
    /// Multiplies q·k before the softmax (default D^-½).
    public var scale: Float
    /// Sliding window in tokens, the query's own included; nil: full causal attention.
    public var window: Int?
    /// Attention-logit softcapping (Gemma 2): the scaled score x becomes softcap · tanh(x / softcap)
    /// before ALiBi and the mask; 0 = off.
    public var softcap: Float

    /// A shape with packed rows and D^-½ scaling unless given.
    /// - Parameters:
    ///   - B: Batch rows.
    ///   - T: Tokens per row.
    ///   - H: Query heads.
    ///   - KV: Key/value heads.
    ///   - D: Head width.
    ///   - ldq: q row stride in floats; nil: H·D.
    ///   - ldk: k row stride; nil: KV·D.
    ///   - ldv: v row stride; nil: KV·D.
    ///   - ldo: Output row stride; nil: H·D.
    ///   - scale: Score scale; nil: D^-½.
    ///   - window: Sliding window; nil: none.
    ///   - softcap: Logit softcap; 0: none.
    public init(B: Int, T: Int, H: Int, KV: Int, D: Int, ldq: Int? = nil, ldk: Int? = nil,
                ldv: Int? = nil, ldo: Int? = nil, scale: Float? = nil, window: Int? = nil, softcap: Float = 0) {
        self.window = window
        self.softcap = softcap
        self.B = B; self.T = T; self.H = H; self.KV = KV; self.D = D
        self.ldq = ldq ?? H * D
        self.ldk = ldk ?? KV * D
        self.ldv = ldv ?? KV * D
        self.ldo = ldo ?? H * D
        self.scale = scale ?? 1 / Float(D).squareRoot()
    }
}

/// Hyper-parameters of one AdamW step (bias corrections computed by the caller from the step).
public struct AdamWStep: Sendable, Equatable {
    /// Learning rate; the moment decay rates β1, β2; the ε added to √v̂; and the decoupled weight
    /// decay (p −= lr · weightDecay · p).
    public var lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// 1 − β1^step and 1 − β2^step, which divide the moments.
    public var biasCorrection1: Float, biasCorrection2: Float
    /// The hyper-parameters of step `step` (1-based), with its bias corrections.
    /// - Parameters:
    ///   - lr: Learning rate of this step (after the schedule).
    ///   - beta1: First-moment decay (`adam_beta1`).
    ///   - beta2: Second-moment decay (`adam_beta2`).
    ///   - eps: Denominator epsilon (`adam_epsilon`).
    ///   - weightDecay: Decoupled weight decay (`weight_decay`).
    ///   - step: The 1-based optimizer step.
    public init(lr: Float, beta1: Float, beta2: Float, eps: Float, weightDecay: Float, step: Int) {
        self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
        self.weightDecay = weightDecay
        self.biasCorrection1 = 1 - Float(Foundation.pow(Double(beta1), Double(step)))
        self.biasCorrection2 = 1 - Float(Foundation.pow(Double(beta2), Double(step)))
    }
}

import Foundation

/// A compute backend: memory, transfers, a stream, and the op set.
public protocol Backend: AnyObject, Sendable {
    /// The device this backend's buffers live on and its ops run on.
    var device: Device { get }

    // MARK: memory and transfers
    /// A buffer of at least `bytes` bytes (contents undefined) from the caching allocator.
    /// Throws `KernelError.outOfMemory` when the device has no room even after emptying the cache.
    func allocate(bytes: Int) throws -> Buffer
    /// Copies `bytes` bytes from host memory `src` into the device buffer at `dst`.
    func upload(_ src: UnsafeRawPointer, to dst: BufferView, bytes: Int) throws
    /// Copies `bytes` bytes from the device buffer at `src` into host memory `dst`, after the ops
    /// enqueued before it have written them.
    func download(_ src: BufferView, to dst: UnsafeMutableRawPointer, bytes: Int) throws
    /// Device-to-device copy.
    func copy(_ src: BufferView, to dst: BufferView, bytes: Int) throws
    /// Waits until every enqueued op has finished.
    func synchronize() throws
    /// Current, peak and cached bytes of this backend's allocator.
    var memoryStats: MemoryStats { get }
    /// Sets the peak of `memoryStats` to the current bytes (to measure one phase of a run).
    func resetPeakMemory()
    /// Bytes the device can still allocate, as its driver reports them; nil when the backend
    /// does not say (the CPU: the caller reads the system's available memory).
    func freeDeviceMemory() -> Int?

    // MARK: GEMM
    /// Batched strided GEMM, row-major: C[i] = alpha * op(A[i]) op(B[i]) + beta * C[i] for
    /// i < batch, with op(A) (M×K), op(B) (K×N), C (M×N); strides in elements.
    func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
              A: BufferView, lda: Int, strideA: Int, B: BufferView, ldb: Int, strideB: Int,
              beta: Float, C: BufferView, ldc: Int, strideC: Int, batch: Int) throws

    /// GEMM in bf16 with f32 accumulation (mixed precision; batch 1, layout as `gemm`):
    /// C (f32) = alpha · op(A) op(B) + beta · C, A and B each f32 or bf16 (`aType`, `bType`);
    /// f32 operands are rounded to bf16 (nearest even) first. See WeightForms/DenseBF16.swift.
    func gemmBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                  A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                  beta: Float, C: BufferView, ldc: Int) throws

    /// Two bf16 GEMMs summed in one pass over C — a Linear's product and its LoRA adapter's
    /// (`Ops.loraLinear`): C = alpha · (op(A) op(B) + op(A2) op(B2)) + beta · C, op(A2) (M×K2)
    /// and op(B2) (K2×N) with the same transposes, K2 ≤ 512, operands as `gemmBF16`. C is f32 or
    /// bf16 (`cType`; summed in f32 and rounded once, beta must be 0). Backends without their
    /// own run two `gemmBF16` and a cast (DenseBF16.swift).
    func gemmBF16Pair(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                      A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                      K2: Int, A2: BufferView, a2Type: DType, lda2: Int, B2: BufferView, b2Type: DType, ldb2: Int,
                      beta: Float, C: BufferView, cType: DType, ldc: Int) throws

    // MARK: elementwise (n elements, f32)
    /// y[i] = value for i < n.
    func fill(_ y: BufferView, value: Float, count n: Int) throws
    /// y = a + b elementwise (y may alias a or b).
    func add(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws
    /// y += alpha · x elementwise (BLAS axpy; gradient accumulation).
    func axpy(alpha: Float, _ x: BufferView, _ y: BufferView, count n: Int) throws
    /// y = alpha · x elementwise (y may alias x).
    func scale(alpha: Float, _ x: BufferView, into y: BufferView, count n: Int) throws
    /// y = a · b elementwise (y may alias a or b).
    func mul(_ a: BufferView, _ b: BufferView, into y: BufferView, count n: Int) throws
    /// Σ x[i]², accumulated in f64 (gradient norms for clipping).
    func sumOfSquares(_ x: BufferView, count n: Int) throws -> Double
    /// Converts between storage dtypes (f32, bf16, f16).
    func cast(_ x: BufferView, from: DType, into y: BufferView, to: DType, count n: Int) throws
    /// Inverted dropout: y = x · keep / (1 − p), `keep` drawn from a counter-based hash of
    /// (seed, offset + i), so every backend and chunking draws the same mask; `mask` (optional, u8)
    /// gets the 0/1 keeps. Backward is the same call on dy with the same seed and offset.
    func dropout(_ x: BufferView, into y: BufferView, mask: BufferView?, count n: Int, p: Float,
                 seed: UInt64, offset: UInt64) throws

    // MARK: normalization; backward accumulates dw/db (+=), writes dx
    /// y = x · rstd · weight per row of x (N, C), with rstd = 1 / √(mean(x²) + eps) written to
    /// `rstd` (N) for backward.
    func rmsnormForward(x: BufferView, weight: BufferView, y: BufferView, rstd: BufferView,
                        N: Int, C: Int, eps: Float) throws
    /// Writes dx (N, C) from dy and the forward's x and rstd; accumulates dweight (C) += when given.
    func rmsnormBackward(dy: BufferView, x: BufferView, weight: BufferView, rstd: BufferView,
                         dx: BufferView, dweight: BufferView?, N: Int, C: Int) throws
    /// y = (x − mean) · rstd · weight (+ bias) per row of x (N, C), writing each row's mean and
    /// rstd = 1 / √(var + eps) (N) for backward.
    func layernormForward(x: BufferView, weight: BufferView, bias: BufferView?, y: BufferView,
                          mean: BufferView, rstd: BufferView, N: Int, C: Int, eps: Float) throws
    /// Writes dx (N, C) from dy and the forward's x, mean and rstd; accumulates dweight and dbias
    /// (C) += when given.
    func layernormBackward(dy: BufferView, x: BufferView, weight: BufferView, mean: BufferView,
                           rstd: BufferView, dx: BufferView, dweight: BufferView?,
                           dbias: BufferView?, N: Int, C: Int) throws

    // MARK: rope (rotate-half); inverse = backward
    /// Rotary embedding in the rotate-half layout: for each of the N tokens (rows `ldx`/`ldy`
    /// floats apart) and H heads of width D, pairs (i, i + D/2) rotate by positions[n] · invFreq[i]
    /// (positions i32 (N), invFreq f32 (D/2)); `inverse` rotates back (the backward). y may be x.
    func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView,
              invFreq: BufferView, N: Int, H: Int, D: Int, inverse: Bool) throws

    // MARK: attention (causal, GQA, document ids, ALiBi); dq/dk/dv written
    /// docIds (B, T) i32: a document is a maximal run of equal ids, and a token attends only to
    /// earlier tokens of its own run. alibi (H): slopes. lse (B, H, T) is saved for backward.
    /// In backward, dout has o's layout (ldo) and dq, dk, dv have q's, k's and v's.
    func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                          lse: BufferView, docIds: BufferView?, alibi: BufferView?,
                          shape: AttentionShape) throws
    /// The gradients of `attentionForward`: writes dq, dk, dv from dout, the forward's inputs, its
    /// output o and its lse, with the same shape, documents and slopes.
    func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView,
                           dout: BufferView, lse: BufferView, docIds: BufferView?,
                           alibi: BufferView?, dq: BufferView, dk: BufferView, dv: BufferView,
                           shape: AttentionShape) throws

    /// Attention of Tq new query tokens against a KV cache of S tokens (batch 1, generation):
    /// query i sits at position S − Tq + i and sees cache rows 0...(S − Tq + i).
    /// q, o: (Tq, H·D); kCache, vCache: (≥S, KV·D). alibi (H) slopes or nil and softcap (0 = off)
    /// as in attentionForward, cache row j at position j.
    func attentionCached(q: BufferView, kCache: BufferView, vCache: BufferView, o: BufferView, Tq: Int, S: Int,
                         H: Int, KV: Int, D: Int, scale: Float, alibi: BufferView?, softcap: Float) throws

    // MARK: swiglu
    /// h = silu(gate) · up elementwise (the SwiGLU MLP's activation).
    func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int) throws
    /// Writes dgate and dup from dh and the forward's gate and up.
    func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView,
                        dup: BufferView, count n: Int) throws

    // MARK: column slices
    /// dst[r, 0..<width] = src[r, 0..<width] for r < rows, rows `ldSrc` / `ldDst` floats apart
    /// (the parts of fused projections: q / k / v of qkv_proj, gate / up of gate_up_proj).
    func copyColumns(_ src: BufferView, ldSrc: Int, into dst: BufferView, ldDst: Int, rows: Int, width: Int) throws

    // MARK: clamp
    /// y = min(max(x, −limit), limit) (MPT's clip_qkv); backward: dx = dy where −limit ≤ x ≤ limit, else 0.
    func clampForward(_ x: BufferView, into y: BufferView, count n: Int, limit: Float) throws
    /// The backward of `clampForward`: dx = dy where −limit ≤ x ≤ limit, else 0.
    func clampBackward(dy: BufferView, x: BufferView, dx: BufferView, count n: Int, limit: Float) throws

    // MARK: gelu
    /// y = gelu(x), or gelu(x) · up (GeGLU) when `up` is given; `approximate`: the tanh form
    /// (PyTorch's approximate="tanh"), else the exact erf form. Backward writes dx (and dup).
    func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool) throws
    /// The backward of `geluForward`: writes dx, and dup when `up` was given.
    func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                      count n: Int, approximate: Bool) throws

    // MARK: embedding
    /// out[n] = table[ids[n]] for the N ids (i32) into a (V, C) table; throws naming the row when
    /// an id is outside 0..<V.
    func embeddingForward(ids: BufferView, table: BufferView, out: BufferView, N: Int, C: Int,
                          V: Int) throws
    /// dtable[ids[n]] += dout[n] for the N rows of dout (N, C) (repeated ids accumulate).
    func embeddingBackward(ids: BufferView, dout: BufferView, dtable: BufferView, N: Int,
                           C: Int) throws

    // MARK: fused LM head + cross-entropy
    /// loss = sum over rows with target != ignoreIndex of -log softmax(x W^T)[target],
    /// computed `chunk` rows at a time so the (N × V) logits never exist at once.
    /// When dx/dweight are given, writes dx = gradScale * d loss/dx and accumulates
    /// dweight += gradScale * d loss/dW in the same pass. x: (N, C), weight: (V, C).
    /// softcap > 0 (Gemma 2's final_logit_softcapping): the loss is over softcap · tanh(x Wᵀ / softcap)
    /// and the gradients go back through it; 0 = off.
    /// Returns (summed loss, number of counted rows).
    /// `compute` .bf16: its GEMMs run as `gemmBF16` (bf16 products, f32 accumulation; mixed
    /// precision); the softmax and the loss stay f32. `weightType` .bf16: the weight is stored
    /// bf16 (a frozen LM head; needs compute .bf16 and no dweight). softcap > 0: the logits are
    /// softcap · tanh(x Wᵀ / softcap) (final-logit softcapping, Gemma 2).
    func crossEntropyLMHead(x: BufferView, weight: BufferView, weightType: DType, targets: BufferView, N: Int,
                            C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float, softcap: Float,
                            dx: BufferView?, dweight: BufferView?, compute: DType) throws -> (loss: Double, count: Int)

    // MARK: bf16 activations (BackendActivationTypes.swift: which operands `dtype` covers;
    // defaults widen into f32 scratch)
    /// y (f32) = a (f32) + b, with b stored as `bType` (f32, or bf16: the residual add of a bf16
    /// activation).
    func add(_ a: BufferView, _ b: BufferView, bType: DType, into y: BufferView, count n: Int) throws
    /// `rope(x:ldx:y:ldy:positions:invFreq:N:H:D:inverse:)` with x and y stored as `dtype` (f32
    /// or bf16); the rotation computes in f32 and a bf16 y is rounded once.
    func rope(x: BufferView, ldx: Int, y: BufferView, ldy: Int, positions: BufferView, invFreq: BufferView,
              N: Int, H: Int, D: Int, inverse: Bool, dtype: DType) throws
    /// `attentionForward(q:k:v:o:lse:docIds:alibi:shape:)` with q, k, v and o stored as `dtype`
    /// (f32 or bf16); lse and the softmax stay f32.
    func attentionForward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, lse: BufferView,
                          docIds: BufferView?, alibi: BufferView?, shape: AttentionShape, dtype: DType) throws
    /// `attentionBackward(q:k:v:o:dout:lse:docIds:alibi:dq:dk:dv:shape:)` with q, k, v and o
    /// stored as `dtype` (f32 or bf16); dout, lse, dq, dk and dv are f32.
    func attentionBackward(q: BufferView, k: BufferView, v: BufferView, o: BufferView, dout: BufferView,
                           lse: BufferView, docIds: BufferView?, alibi: BufferView?, dq: BufferView,
                           dk: BufferView, dv: BufferView, shape: AttentionShape, dtype: DType) throws
    /// `swigluForward(gate:up:h:count:)` with gate, up and h stored as `dtype` (f32 or bf16).
    func swigluForward(gate: BufferView, up: BufferView, h: BufferView, count n: Int, dtype: DType) throws
    /// `swigluBackward(dh:gate:up:dgate:dup:count:)` with gate and up stored as `dtype` (f32 or
    /// bf16); dh, dgate and dup are f32.
    func swigluBackward(dh: BufferView, gate: BufferView, up: BufferView, dgate: BufferView, dup: BufferView,
                        count n: Int, dtype: DType) throws
    /// `geluForward(x:up:y:count:approximate:)` with x, up and y stored as `dtype` (f32 or bf16).
    func geluForward(x: BufferView, up: BufferView?, y: BufferView, count n: Int, approximate: Bool, dtype: DType) throws
    /// `geluBackward(dy:x:up:dx:dup:count:approximate:)` with x and up stored as `dtype` (f32 or
    /// bf16); dy, dx and dup are f32.
    func geluBackward(dy: BufferView, x: BufferView, up: BufferView?, dx: BufferView, dup: BufferView?,
                      count n: Int, approximate: Bool, dtype: DType) throws

    // MARK: optimizer
    /// One AdamW update of n values in place: m and v take the moments of grad, then
    /// param −= lr · (m̂ / (√v̂ + eps) + weightDecay · param), with the bias corrections of `step`.
    func adamw(param: BufferView, grad: BufferView, m: BufferView, v: BufferView, count n: Int,
               step: AdamWStep) throws

    // MARK: weight forms (WeightForms.swift; defaults and fallbacks: BackendFallbacks.swift)
    /// Whether this backend runs ops on `form` natively (see WeightForms.swift for what runs
    /// where it does not).
    func supports(_ form: WeightFormKind) -> Bool
    /// Rows [r0, r0 + rows) of a 4-bit matrix decoded to f32 into `out` (rows × w.cols).
    func dequantize4bit(_ w: QuantizedMatrix, rows r0: Int, count rows: Int, into out: BufferView) throws
    /// y (n, w.rows) = x (n, w.cols) · Wᵀ for a 4-bit W and a few rows n (decode); f32.
    func matVec4bit(_ w: QuantizedMatrix, x: BufferView, y: BufferView, n: Int) throws
    /// The 4-bit linear op: y (N, M) = x (N, K) · Wᵀ (+ bias), f32 in and out (Backend+Linear4bit.swift).
    func linear4bit(x: BufferView, weight w: QuantizedMatrix, bias: BufferView?, y: BufferView, N: Int) throws
    /// Its input gradient: dx (N, K) = dy (N, M) · W (overwrites dx).
    func linear4bitInputGradient(dy: BufferView, weight w: QuantizedMatrix, dx: BufferView, N: Int) throws
    /// The GGML blocks of W (rows, cols), copied from host memory into this backend's layout.
    func packBlocks(_ type: GGMLType, rows: Int, cols: Int, bytes: UnsafeRawBufferPointer) throws -> PackedBlocks
    /// y_k (=, +=) W_k x for one to four packed matrices sharing x (cols f32), or SwiGLU of a
    /// (gate, up) pair into the first y; see `quantizedMatVecs` for the math.
    func packedMatVec(_ products: [PackedProduct], x: BufferView, epilogue: MatVecEpilogue,
                      activations: MatVecActivations) throws
    /// Returns the blocks the allocator keeps for reuse to the system.
    func emptyCache()
}

extension Backend {
    /// The fused LM head + cross-entropy in f32, without softcapping.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float,
                                   dx: BufferView?, dweight: BufferView?) throws -> (loss: Double, count: Int) {
        try crossEntropyLMHead(x: x, weight: weight, weightType: .f32, targets: targets, N: N, C: C, V: V,
                               ignoreIndex: ignoreIndex, chunk: chunk, gradScale: gradScale, softcap: 0, dx: dx,
                               dweight: dweight, compute: .f32)
    }

    /// The fused LM head + cross-entropy with an f32 weight, its GEMMs in `compute`.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float,
                                   dx: BufferView?, dweight: BufferView?, compute: DType) throws -> (loss: Double, count: Int) {
        try crossEntropyLMHead(x: x, weight: weight, weightType: .f32, targets: targets, N: N, C: C, V: V,
                               ignoreIndex: ignoreIndex, chunk: chunk, gradScale: gradScale, softcap: 0, dx: dx,
                               dweight: dweight, compute: compute)
    }

    /// The fused LM head + cross-entropy in f32 with final-logit softcapping.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float, softcap: Float,
                                   dx: BufferView?, dweight: BufferView?) throws -> (loss: Double, count: Int) {
        try crossEntropyLMHead(x: x, weight: weight, weightType: .f32, targets: targets, N: N, C: C, V: V,
                               ignoreIndex: ignoreIndex, chunk: chunk, gradScale: gradScale, softcap: softcap, dx: dx,
                               dweight: dweight, compute: .f32)
    }

    /// The fused LM head + cross-entropy with the weight in `weightType`, without softcapping.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, weightType: DType, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float,
                                   dx: BufferView?, dweight: BufferView?, compute: DType) throws -> (loss: Double, count: Int) {
        try crossEntropyLMHead(x: x, weight: weight, weightType: weightType, targets: targets, N: N, C: C, V: V,
                               ignoreIndex: ignoreIndex, chunk: chunk, gradScale: gradScale, softcap: 0, dx: dx,
                               dweight: dweight, compute: compute)
    }
}

/// Argument checks every backend runs before touching memory: the op name and the offending
/// sizes go into the error.
extension Backend {
    /// Throws unless `view` is a buffer of this backend's device with `bytes` bytes from its offset.
    /// (`name` is built only for the error message: ops run these checks on every call, and
    /// building the text each time cost a small op like rmsnorm backward half its time.)
    func check(_ view: BufferView, bytes: Int, _ op: String, _ name: @autoclosure () -> String) throws {
        guard view.buffer.device == device else {
            throw KernelError.invalidArgument(op: op, message: "\(name()) is on \(view.buffer.device), expected \(device)")
        }
        guard bytes >= 0, view.byteOffset >= 0, view.byteOffset + bytes <= view.buffer.bytes else {
            throw KernelError.invalidArgument(
                op: op, message: "\(name()) needs \(bytes) bytes at offset \(view.byteOffset), its buffer has \(view.buffer.bytes)")
        }
    }

    /// Throws unless `view` holds `count` 4-byte elements (f32 or i32), aligned.
    func check(_ view: BufferView, count: Int, _ op: String, _ name: @autoclosure () -> String) throws {
        guard count >= 0 else {
            throw KernelError.invalidArgument(op: op, message: "\(name()): negative element count \(count)")
        }
        guard view.byteOffset % 4 == 0 else {
            throw KernelError.invalidArgument(op: op, message: "\(name()): byte offset \(view.byteOffset) is not a multiple of 4")
        }
        try check(view, bytes: count * 4, op, name())
    }

    /// Throws unless `view` holds `rows` rows of `width` floats, `ld` floats apart.
    func check(_ view: BufferView, rows: Int, width: Int, ld: Int, _ op: String,
               _ name: @autoclosure () -> String) throws {
        guard ld >= width else {
            throw KernelError.invalidArgument(op: op, message: "\(name()): row stride \(ld) < row width \(width)")
        }
        try check(view, count: rows == 0 ? 0 : (rows - 1) * ld + width, op, name())
    }

    /// Throws when a size is negative.
    func nonNegative(_ op: String, _ sizes: KeyValuePairs<String, Int>) throws {
        for (name, value) in sizes where value < 0 {
            throw KernelError.invalidArgument(op: op, message: "\(name) = \(value) is negative")
        }
    }
}

extension Backend {
    /// Backends whose driver says nothing about free memory (the CPU).
    public func freeDeviceMemory() -> Int? { nil }
}
