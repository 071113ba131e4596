// Pieces of attention every family shares: the RoPE of one forward pass with its attention
// factor, and cached decode attention (KV append + sliding window, ALiBi and softcapping over
// the cache).

import Foundation
import SFTKernels

/// The RoPE frequencies one layer uses in one forward pass and the attention factor they come
/// with (yarn, longrope).
struct LayerRope {
    public let invFreq: Tensor
    public let attentionFactor: Float

    public init(invFreq: Tensor, attentionFactor: Float) { self.invFreq = invFreq; self.attentionFactor = attentionFactor }

    /// The softmax scale for a base scale: the factor multiplies q and k, so its square the scores.
    public func scale(_ base: Float) -> Float { attentionFactor * attentionFactor * base }
}

extension KVCache {
    /// Appends the keys and values of Tq new tokens (rows `count`..<count+Tq of layer `layer`)
    /// and returns their attention output (Tq, H·D) over the cache. With a sliding window,
    /// query i (position count + i) sees only the last `window` rows up to itself, so it runs
    /// alone on that slice of the cache (ALiBi depends on distances only, so a slice keeps it).
    /// alibi: (H) slopes or nil; softcap: attention-logit softcapping, 0 = off. `count` is
    /// advanced by the model after its last layer.
    public func attend(q: Tensor, k: Tensor, v: Tensor, layer: Int, H: Int, KV: Int, D: Int, scale: Float,
                       window: Int?, alibi: Tensor? = nil, softcap: Float = 0) throws -> Tensor {
        // The cache is f32: bf16 activations (precision bf16) are widened as they enter it.
        let q = try Ops.widened(q), k = try Ops.widened(k), v = try Ops.widened(v)
        let Tq = q.shape[0], start = count, be = q.backend, rowBytes = KV * D * 4
        try be.copy(k.storage, to: keys[layer].storage.advanced(byBytes: start * rowBytes), bytes: Tq * rowBytes)
        try be.copy(v.storage, to: values[layer].storage.advanced(byBytes: start * rowBytes), bytes: Tq * rowBytes)
        let o = try Tensor(empty: [Tq, H * D], on: be)
        let S = start + Tq
        guard let window, S > window else {
            try be.attentionCached(q: q.storage, kCache: keys[layer].storage, vCache: values[layer].storage,
                                   o: o.storage, Tq: Tq, S: S, H: H, KV: KV, D: D, scale: scale,
                                   alibi: alibi?.storage, softcap: softcap)
            return o
        }
        let qRow = H * D * 4
        for i in 0..<Tq {
            let p = start + i, lo = max(0, p - window + 1)
            try be.attentionCached(q: q.storage.advanced(byBytes: i * qRow),
                                   kCache: keys[layer].storage.advanced(byBytes: lo * rowBytes),
                                   vCache: values[layer].storage.advanced(byBytes: lo * rowBytes),
                                   o: o.storage.advanced(byBytes: i * qRow), Tq: 1, S: p - lo + 1, H: H, KV: KV, D: D,
                                   scale: scale, alibi: alibi?.storage, softcap: softcap)
        }
        return o
    }
}
