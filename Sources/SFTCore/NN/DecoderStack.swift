// The part every decoder-only family shares, written once: HF's `model.` sub-tree (token
// embedding, decoder layers, final norm) and the two loops over it — the training/eval forward
// (each layer optionally recomputed in backward) and the cached decode step (positions after the
// cached tokens, every layer appending its keys and values, the cache advanced, the last row
// normalized). A family's file keeps only what its layer does.

import Foundation

/// A module applied row-wise to (N, C): the final norms of the families.
protocol RowwiseModule: Module {
    func callAsFunction(_ x: Tensor) throws -> Tensor
}

extension RMSNorm: RowwiseModule {}
extension LayerNorm: RowwiseModule {}

/// HF's `model.` (or MPT's `transformer.`) sub-tree: embedding, decoder layers, final norm,
/// under the family's names.
final class DecoderBody<Layer: Module, Norm: RowwiseModule>: Module {
    let embedTokens: Embedding
    let layers: [Layer]
    let norm: Norm
    private let names: (embedding: String, layers: String, norm: String)

    init(embedTokens: Embedding, layers: [Layer], norm: Norm,
         names: (embedding: String, layers: String, norm: String) = ("embed_tokens", "layers", "norm")) {
        self.embedTokens = embedTokens; self.layers = layers; self.norm = norm; self.names = names
    }

    override var children: [(String, Module)] {
        [(names.embedding, embedTokens)] + layers.enumerated().map { ("\(names.layers).\($0.offset)", $0.element) }
            + [(names.norm, norm)]
    }

    /// Final hidden states (N, C): `x` (the embedded tokens) through `layer(l, x)` for every
    /// layer l — each recomputed in backward instead of kept when `checkpointing` — then the
    /// final norm.
    func callAsFunction(_ x: Tensor, checkpointing: Bool, layer: @escaping (Layer, Tensor) throws -> Tensor) throws -> Tensor {
        var x = x
        for l in layers {
            x = checkpointing ? try Autograd.checkpoint([x]) { try layer(l, $0[0]) } : try layer(l, x)
        }
        return try norm(x)
    }

    /// One cached decode step of `ids` after the `cache.count` tokens already in `cache`, no
    /// gradient: `embed` the ids, run `layer(i, l, x, positions)` for every layer i (which
    /// appends its keys and values to cache layer i), advance the cache, and return the final
    /// norm of the last token's row (1, C).
    func decode(_ ids: [Int32], cache: KVCache, embed: (Tensor) throws -> Tensor,
                layer: (Int, Layer, Tensor, Tensor) throws -> Tensor) throws -> Tensor {
        try cache.checkRoom(for: ids.count)
        return try Autograd.withNoGrad {
            let be = embedTokens.weight.value.backend
            let positions = try Tensor(ints: (0..<ids.count).map { Int32(cache.count + $0) }, shape: [ids.count], on: be)
            var x = try embed(try Tensor(ints: ids, shape: [ids.count], on: be))
            for (i, l) in layers.enumerated() { x = try layer(i, l, x, positions) }
            cache.count += ids.count
            return try norm(try x.rows(ids.count - 1, 1))
        }
    }
}
