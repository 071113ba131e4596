// Random weights of a named Llama-family shape (Llama-3.2-1B-like, Llama-2 7B/13B/70B, a tiny
// one), for benchmarks of shapes no file here holds: `sftctl bench train --shape 7b`, and
// tools/gpu-check. A `WeightSource`, so the model is built, quantized on load (QLoRA) and put
// on any device exactly as a real checkpoint would be.
//
// Values: norms are 1; every other tensor repeats a fixed pool of 65 536 normal values
// (σ = 0.02) from an offset hashed from its name. Generating 70 billion independent values
// would take minutes and change no timing; the pool keeps every tensor different.

import Foundation
import SFTKernels

/// Random weights of a named Llama-family shape (`tiny`, `1b`, `7b`, `13b`, `70b`), for benchmarks
/// of shapes no file here holds (`sftctl bench train --shape 7b`). Norms are 1; every other tensor
/// repeats a fixed pool of 65 536 normal values (σ = 0.02) from an offset hashed from its name.
public final class SyntheticWeights: WeightSource {
    /// The named shapes: HF config keys of each.
    public static var shapes: [String: [String: JSONValue]] { [
        "tiny": llama(hidden: 64, intermediate: 160, layers: 2, heads: 4, kvHeads: 2, vocab: 512),
        "1b": llama(hidden: 2048, intermediate: 8192, layers: 16, heads: 32, kvHeads: 8, vocab: 128_256),
        "7b": llama(hidden: 4096, intermediate: 11008, layers: 32, heads: 32, kvHeads: 32, vocab: 32000),
        "13b": llama(hidden: 5120, intermediate: 13824, layers: 40, heads: 40, kvHeads: 40, vocab: 32000),
        "70b": llama(hidden: 8192, intermediate: 28672, layers: 80, heads: 64, kvHeads: 8, vocab: 32000),
    ] }

    public let config: [String: JSONValue]
    public let names: [String]
    private let shapeOf: [String: [Int]]
    private let pool: [Float]

    /// - Parameters:
    ///   - shape: a key of `shapes`.
    ///   - layers: keep only this many decoder layers (a partial-depth model of the same width).
    public init(shape: String, layers: Int? = nil) throws {
        guard var c = Self.shapes[shape] else {
            throw SFTError.config(field: "shape", message: "'\(shape)' is not one of \(Self.shapes.keys.sorted().joined(separator: ", "))")
        }
        if let layers {
            guard layers > 0 else { throw SFTError.config(field: "layers", message: "must be at least 1") }
            c["num_hidden_layers"] = .int(layers)
        }
        config = c
        let C = c["hidden_size"]!.intValue!, F = c["intermediate_size"]!.intValue!, L = c["num_hidden_layers"]!.intValue!
        let H = c["num_attention_heads"]!.intValue!, KV = c["num_key_value_heads"]!.intValue!, V = c["vocab_size"]!.intValue!
        let D = C / H
        var s: [String: [Int]] = ["model.embed_tokens.weight": [V, C], "model.norm.weight": [C], "lm_head.weight": [V, C]]
        for l in 0..<L {
            let p = "model.layers.\(l)."
            s[p + "input_layernorm.weight"] = [C]
            s[p + "post_attention_layernorm.weight"] = [C]
            s[p + "self_attn.q_proj.weight"] = [H * D, C]
            s[p + "self_attn.k_proj.weight"] = [KV * D, C]
            s[p + "self_attn.v_proj.weight"] = [KV * D, C]
            s[p + "self_attn.o_proj.weight"] = [C, H * D]
            s[p + "mlp.gate_proj.weight"] = [F, C]
            s[p + "mlp.up_proj.weight"] = [F, C]
            s[p + "mlp.down_proj.weight"] = [C, F]
        }
        shapeOf = s
        names = s.keys.sorted()
        var rng = SeededRandom(seed: 0x5EED)
        pool = (0..<65536).map { _ in Float(rng.nextNormal() * 0.02) }
    }

    public func shape(of name: String) -> [Int]? { shapeOf[name] }

    public func loadF32(_ name: String, into: UnsafeMutablePointer<Float>) throws {
        guard let shape = shapeOf[name] else { throw SFTError.weights(key: name, message: "no such tensor in the synthetic shape") }
        let n = shape.reduce(1, *)
        if name.hasSuffix("norm.weight") {
            into.update(repeating: 1, count: n)
            return
        }
        var offset = Int(truncatingIfNeeded: name.utf8.reduce(UInt64(1469598103934665603)) { ($0 ^ UInt64($1)) &* 1099511628211 } % UInt64(pool.count))
        var done = 0
        pool.withUnsafeBufferPointer { p in
            while done < n {
                let m = min(n - done, pool.count - offset)
                (into + done).update(from: p.baseAddress! + offset, count: m)
                done += m
                offset = 0
            }
        }
    }

    private static func llama(hidden: Int, intermediate: Int, layers: Int, heads: Int, kvHeads: Int, vocab: Int) -> [String: JSONValue] {
        ["model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": .int(hidden),
         "intermediate_size": .int(intermediate), "num_hidden_layers": .int(layers), "num_attention_heads": .int(heads),
         "num_key_value_heads": .int(kvHeads), "vocab_size": .int(vocab), "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
         "max_position_embeddings": 4096, "tie_word_embeddings": false]
    }
}
