// The differentiable ops models are written in: thin wrappers that check shapes, call the
// backend's fused kernel and record the matching backward. Shape letters: N rows (tokens),
// C channels, H heads, KV key/value heads, D head dim, V vocab.

import Foundation
import SFTKernels

@inline(__always) func check(_ ok: Bool, _ op: String, _ message: @autoclosure () -> String) throws {
    if !ok { throw SFTError.shape(op: op, message: message()) }
}

/// The differentiable operations models are built from. Each checks shapes (throwing
/// `SFTError.shape` naming the op), runs on its inputs' backend and records its backward when
/// autograd is recording.
public enum Ops {
    // MARK: linear

    /// y = x Wᵀ (+ b). x: (N, K), weight: (M, K) as stored by HF, bias: (M). Returns (N, M).
    /// x may have any leading shape; it is viewed as rows of K. x f32 or bf16; in precision
    /// bf16 the GEMMs are bf16 (f32 accumulation) and y is stored bf16 (a bf16 activation).
    public static func linear(_ x: Tensor, _ weight: Tensor, bias: Tensor? = nil, precision: Precision = .f32) throws -> Tensor {
        let K = weight.shape.last ?? 0, M = weight.shape.first ?? 0
        try check(weight.shape.count == 2 && x.shape.last == K, "linear", "x \(x.shape) · weight \(weight.shape)ᵀ")
        let N = x.count / max(1, K)
        let be = x.backend
        let outShape = Array(x.shape.dropLast()) + [M]
        let y = try Tensor(empty: outShape, on: be)
        if let bias {
            try check(bias.shape == [M], "linear", "bias \(bias.shape) for \(M) outputs")
            for r in 0..<N { try be.copy(bias.storage, to: y.storage.advanced(byBytes: r * M * 4), bytes: M * 4) }
        }
        let wt = weight.dtype, xt = x.dtype
        try linearGEMM(be, precision, transA: false, transB: true, M: N, N: M, K: K, A: x.storage, aType: xt, lda: K,
                       B: weight.storage, bType: wt, ldb: K, beta: bias == nil ? 0 : 1, C: y.storage, ldc: M)
        var inputs = [x, weight]
        if let bias { inputs.append(bias) }
        // Capture only what backward reads: x is needed for the weight's gradient alone, so a
        // frozen layer lets its input go as soon as nothing else holds it.
        let xNeedsGrad = x.requiresGrad, xShape = x.shape
        let savedX: Tensor? = weight.requiresGrad ? x : nil
        let trainsBias = bias?.requiresGrad ?? false
        Autograd.record(y, op: "linear", inputs: inputs) { g in
            var dx: Tensor? = nil
            if xNeedsGrad {
                let t = try Tensor(empty: xShape, on: be)
                try linearGEMM(be, precision, transA: false, transB: false, M: N, N: K, K: M, A: g.storage, lda: M,
                               B: weight.storage, bType: wt, ldb: K, beta: 0, C: t.storage, ldc: K)
                dx = t
            }
            if let savedX {
                let dw = try weight.gradBuffer()  // dW += gᵀ x
                try linearGEMM(be, precision, transA: true, transB: false, M: M, N: K, K: N, A: g.storage, lda: M,
                               B: savedX.storage, bType: xt, ldb: K, beta: 1, C: dw.storage, ldc: K)
            }
            if trainsBias, let bias {
                let db = try bias.gradBuffer()
                for r in 0..<N { try be.axpy(alpha: 1, g.storage.advanced(byBytes: r * M * 4), db.storage, count: M) }
            }
            return [dx, nil, nil]
        }
        return try activation(y, precision)
    }

    // MARK: elementwise

    /// a + b elementwise, f32; both must have the same number of elements (the result has a's
    /// shape). A bf16 operand (an activation) is read as it is when the other is f32 (the
    /// residual add of mixed precision), widened first when both are bf16.
    /// - Parameters:
    ///   - a: First operand.
    ///   - b: Second operand.
    /// - Throws: `SFTError.shape` when the element counts differ.
    public static func add(_ a: Tensor, _ b: Tensor) throws -> Tensor {
        try check(a.count == b.count, "add", "\(a.shape) + \(b.shape)")
        let shape = a.shape
        // The f32 operand first; a second bf16 one is read as it is, unless both are bf16.
        let (f, other) = a.dtype == .bf16 && b.dtype == .f32 ? (b, a) : (try widened(a), b)
        let a = f, b = other.dtype == .bf16 && f.dtype == .f32 ? other : try widened(other)
        let y = try Tensor(empty: shape, on: a.backend)
        try a.backend.add(a.storage, b.storage, bType: b.dtype, into: y.storage, count: y.count)
        Autograd.record(y, op: "add", inputs: [a, b]) { g in [g, g] }
        return y
    }

    /// Uniform noise in [−bound, bound) shaped like x (no gradient), drawn from the training
    /// random stream (`Autograd.random`, as dropout), so resumed runs redraw it; outside
    /// training, from a stream of seed 0.
    public static func uniformNoise(like x: Tensor, bound: Float) throws -> Tensor {
        let random = Autograd.random ?? RandomStream(seed: 0)
        var rng = SeededRandom(seed: random.seed ^ (random.take(x.count) &* 0x9E37_79B9_7F4A_7C15) ^ 0x4E45_4654)
        let values = (0..<x.count).map { _ in Float(rng.nextUnit() * 2 - 1) * bound }
        return try Tensor(values, shape: x.shape, on: x.backend)
    }

    /// alpha · x elementwise.
    /// - Parameters:
    ///   - x: The input.
    ///   - alpha: The factor.
    /// - Throws: When the backend fails.
    public static func scale(_ x: Tensor, _ alpha: Float) throws -> Tensor {
        let x = try widened(x)
        let y = try Tensor(empty: x.shape, on: x.backend)
        try x.backend.scale(alpha: alpha, x.storage, into: y.storage, count: y.count)
        let shape = x.shape, be = x.backend
        Autograd.record(y, op: "scale", inputs: [x]) { g in
            let dx = try Tensor(empty: shape, on: be)
            try be.scale(alpha: alpha, g.storage, into: dx.storage, count: dx.count)
            return [dx]
        }
        return y
    }

    /// Inverted dropout with probability `p`; identity unless `Autograd.isTraining`.
    /// Masks come from (seed, offset) counters, so checkpoint recomputation redraws them.
    public static func dropout(_ x: Tensor, p: Float) throws -> Tensor {
        guard p > 0, let random = Autograd.random else { return x }
        let x = try widened(x), be = x.backend
        let y = try Tensor(empty: x.shape, on: be)
        let seed = random.seed, offset = random.take(x.count)
        try be.dropout(x.storage, into: y.storage, mask: nil, count: x.count, p: p,
                       seed: seed, offset: offset)
        let shape = x.shape, n = x.count
        Autograd.record(y, op: "dropout", inputs: [x]) { g in
            // Same mask: redraw from the same (seed, offset) on the gradient.
            let dx = try Tensor(empty: shape, on: be)
            try be.dropout(g.storage, into: dx.storage, mask: nil, count: n, p: p,
                           seed: seed, offset: offset)
            return [dx]
        }
        return y
    }

    // MARK: normalization

    /// RMSNorm over the last dimension (C): y = x / sqrt(mean(x²) + eps) · weight.
    public static func rmsNorm(_ x: Tensor, weight: Tensor, eps: Float) throws -> Tensor {
        let x = try widened(x), C = weight.count
        try check(x.shape.last == C, "rmsnorm", "x \(x.shape), weight \(weight.shape)")
        let N = x.count / C, be = x.backend
        let y = try Tensor(empty: x.shape, on: be)
        let rstd = try Tensor(empty: [N], on: be)
        try be.rmsnormForward(x: x.storage, weight: weight.storage, y: y.storage, rstd: rstd.storage, N: N, C: C, eps: eps)
        Autograd.record(y, op: "rmsnorm", inputs: [x, weight]) { g in
            let dx = try Tensor(empty: x.shape, on: be)
            let dw = weight.requiresGrad ? try weight.gradBuffer().storage : nil
            try be.rmsnormBackward(dy: g.storage, x: x.storage, weight: weight.storage, rstd: rstd.storage,
                                   dx: dx.storage, dweight: dw, N: N, C: C)
            return [x.requiresGrad ? dx : nil, nil]
        }
        return y
    }

    /// LayerNorm over the last dimension, bias optional (MPT has none).
    public static func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor?, eps: Float) throws -> Tensor {
        let x = try widened(x), C = weight.count
        try check(x.shape.last == C && (bias == nil || bias!.count == C), "layernorm", "x \(x.shape), weight \(weight.shape)")
        let N = x.count / C, be = x.backend
        let y = try Tensor(empty: x.shape, on: be)
        let mean = try Tensor(empty: [N], on: be), rstd = try Tensor(empty: [N], on: be)
        try be.layernormForward(x: x.storage, weight: weight.storage, bias: bias?.storage, y: y.storage,
                                mean: mean.storage, rstd: rstd.storage, N: N, C: C, eps: eps)
        var inputs = [x, weight]
        if let bias { inputs.append(bias) }
        Autograd.record(y, op: "layernorm", inputs: inputs) { g in
            let dx = try Tensor(empty: x.shape, on: be)
            let dw = weight.requiresGrad ? try weight.gradBuffer().storage : nil
            let db = (bias?.requiresGrad ?? false) ? try bias!.gradBuffer().storage : nil
            try be.layernormBackward(dy: g.storage, x: x.storage, weight: weight.storage, mean: mean.storage,
                                     rstd: rstd.storage, dx: dx.storage, dweight: dw, dbias: db, N: N, C: C)
            return [x.requiresGrad ? dx : nil, nil, nil]
        }
        return y
    }

    // MARK: rotary embedding

    /// Rotate-half RoPE. x: (N, H, D) (any shape ending in H·D per token), positions: (N) i32,
    /// invFreq: (D/2). x f32 or bf16; y has x's type (the gradient is f32).
    public static func rope(_ x: Tensor, positions: Tensor, invFreq: Tensor, heads H: Int) throws -> Tensor {
        let D = invFreq.count * 2
        let N = positions.count
        try check(x.count == N * H * D && positions.dtype == .i32, "rope", "x \(x.shape), \(N) positions, H=\(H), D=\(D)")
        let be = x.backend, xt = x.dtype
        let y = try Tensor(empty: x.shape, dtype: xt, on: be)
        try be.rope(x: x.storage, ldx: H * D, y: y.storage, ldy: H * D, positions: positions.storage,
                    invFreq: invFreq.storage, N: N, H: H, D: D, inverse: false, dtype: xt)
        let shape = x.shape
        Autograd.record(y, op: "rope", inputs: [x]) { g in
            let dx = try Tensor(empty: shape, on: be)
            try be.rope(x: g.storage, ldx: H * D, y: dx.storage, ldy: H * D, positions: positions.storage,
                        invFreq: invFreq.storage, N: N, H: H, D: D, inverse: true)
            return [dx]
        }
        return y
    }

    // MARK: attention

    /// Causal attention with GQA. q: (B·T, H·D), k, v: (B·T, KV·D); docIds: (B·T) i32 or nil
    /// (packed rows never attend across documents); alibi: (H) slopes or nil. q, k, v bf16
    /// (bf16 activations): read as they are, o stored bf16; softmax, lse and gradients f32.
    public static func attention(q: Tensor, k: Tensor, v: Tensor, docIds: Tensor?, alibi: Tensor?,
                                 shape: AttentionShape) throws -> Tensor {
        let (qkv, at) = try sharedType([q, k, v])
        let (q, k, v) = (qkv[0], qkv[1], qkv[2])
        let s = shape, be = q.backend
        try check(q.count == s.B * s.T * s.H * s.D && k.count == s.B * s.T * s.KV * s.D && v.count == k.count
                  && s.H % max(1, s.KV) == 0, "attention", "q \(q.shape), k \(k.shape), v \(v.shape) for \(s)")
        let o = try Tensor(empty: q.shape, dtype: at, on: be)
        let lse = try Tensor(empty: [s.B, s.H, s.T], on: be)
        try be.attentionForward(q: q.storage, k: k.storage, v: v.storage, o: o.storage, lse: lse.storage,
                                docIds: docIds?.storage, alibi: alibi?.storage, shape: s, dtype: at)
        let oView = o.storage  // not `o`: the node lives on `o`, capturing it would leak the graph
        Autograd.record(o, op: "attention", inputs: [q, k, v]) { g in
            let dq = try Tensor(empty: q.shape, on: be), dk = try Tensor(empty: k.shape, on: be)
            let dv = try Tensor(empty: v.shape, on: be)
            try be.attentionBackward(q: q.storage, k: k.storage, v: v.storage, o: oView, dout: g.storage,
                                     lse: lse.storage, docIds: docIds?.storage, alibi: alibi?.storage,
                                     dq: dq.storage, dk: dk.storage, dv: dv.storage, shape: s, dtype: at)
            return [dq, dk, dv]
        }
        return o
    }

    // MARK: MLP

    /// silu(gate) · up; bf16 gate and up (bf16 activations) give a bf16 h, f32 gradients.
    public static func swiglu(gate: Tensor, up: Tensor) throws -> Tensor {
        try check(gate.count == up.count, "swiglu", "gate \(gate.shape), up \(up.shape)")
        let (gu, at) = try sharedType([gate, up])
        let (gate, up) = (gu[0], gu[1])
        let be = gate.backend
        let h = try Tensor(empty: gate.shape, dtype: at, on: be)
        let n = h.count
        try be.swigluForward(gate: gate.storage, up: up.storage, h: h.storage, count: n, dtype: at)
        // Closures must not capture their own output (`h`): the node lives on it.
        Autograd.record(h, op: "swiglu", inputs: [gate, up]) { g in
            let dg = try Tensor(empty: gate.shape, on: be), du = try Tensor(empty: up.shape, on: be)
            try be.swigluBackward(dh: g.storage, gate: gate.storage, up: up.storage, dgate: dg.storage,
                                  dup: du.storage, count: n, dtype: at)
            return [dg, du]
        }
        return h
    }

    // MARK: embedding

    /// Rows of `table` (V, C) for `ids` (N) i32. Returns (N, C).
    public static func embedding(_ ids: Tensor, table: Tensor) throws -> Tensor {
        try check(ids.dtype == .i32 && table.shape.count == 2, "embedding", "ids \(ids.shape) \(ids.dtype), table \(table.shape)")
        let V = table.shape[0], C = table.shape[1], N = ids.count, be = table.backend
        let out = try Tensor(empty: [N, C], on: be)
        try be.embeddingForward(ids: ids.storage, table: table.storage, out: out.storage, N: N, C: C, V: V)
        Autograd.record(out, op: "embedding", inputs: [table]) { g in
            if table.requiresGrad {
                try be.embeddingBackward(ids: ids.storage, dout: g.storage, dtable: try table.gradBuffer().storage, N: N, C: C)
            }
            return [nil]
        }
        return out
    }

    // MARK: loss

    /// Fused LM head + cross-entropy: sum over rows with a target of −log softmax(x Wᵀ)[target],
    /// divided by `normalizer` (the trained-token count of the whole optimizer step, so the
    /// loss is exact under packing and accumulation). Logits are made `chunk` rows at a time.
    /// The input gradient is computed in the same pass (and the weight's, when it trains).
    /// softcap > 0: the logits are softcap · tanh(x Wᵀ / softcap) (final-logit softcapping).
    /// Returns a scalar tensor and the number of counted tokens.
    public static func crossEntropyLMHead(_ x: Tensor, weight: Tensor, targets: Tensor, normalizer: Float,
                                          ignoreIndex: Int32 = -100, chunk: Int = 256,
                                          precision: Precision = .f32, softcap: Float = 0) throws -> (loss: Tensor, tokens: Int) {
        let x = try widened(x)
        let V = weight.shape[0], C = weight.shape[1], N = targets.count, be = x.backend
        try check(x.count == N * C && targets.dtype == .i32 && normalizer > 0, "cross_entropy",
                  "x \(x.shape), weight \(weight.shape), \(N) targets, normalizer \(normalizer)")
        let wantGrad = Autograd.isEnabled && (x.requiresGrad || weight.requiresGrad)
        let dx = wantGrad && x.requiresGrad ? try Tensor(empty: x.shape, on: be) : nil
        let dw = wantGrad && weight.requiresGrad ? try Tensor.zeros(weight.shape, on: be) : nil
        let (sum, count) = try be.crossEntropyLMHead(x: x.storage, weight: weight.storage, weightType: weight.dtype,
                                                     targets: targets.storage,
                                                     N: N, C: C, V: V, ignoreIndex: ignoreIndex, chunk: chunk,
                                                     gradScale: 1 / normalizer, softcap: softcap, dx: dx?.storage,
                                                     dweight: dw?.storage,
                                                     compute: precision == .bf16 || weight.dtype == .bf16 ? .bf16 : .f32)
        let loss = try Tensor([Float(sum / Double(normalizer))], shape: [1], on: be)
        if wantGrad {
            Autograd.record(loss, op: "cross_entropy", inputs: [x, weight]) { g in
                let s = try g.item()
                if let dw {
                    try be.axpy(alpha: s, dw.storage, try weight.gradBuffer().storage, count: dw.count)
                }
                guard let dx else { return [nil, nil] }
                if s == 1 { return [dx, nil] }
                let scaled = try Tensor(empty: dx.shape, on: be)
                try be.scale(alpha: s, dx.storage, into: scaled.storage, count: dx.count)
                return [scaled, nil]
            }
        }
        return (loss, count)
    }
}
