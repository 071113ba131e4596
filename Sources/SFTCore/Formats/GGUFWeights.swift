// GGUF as a WeightSource: GGUF tensor names mapped once to HF checkpoint names, values
// dequantized to f32, and llama.cpp's q/k row permutation undone.
//
// Why the permutation: llama.cpp's HF->GGUF converter reorders the rows of q_proj and k_proj
// (weights and biases) of Llama-architecture models so that ggml's interleaved RoPE, which
// rotates pairs (2i, 2i+1), computes what HF's rotate-half RoPE computes on pairs (i, i+D/2).
// Per head of D rows it stores HF row s*D/2 + i at position 2i + s (s = 0, 1; i < D/2). Here
// we read it back: HF row h*D + s*D/2 + i = GGUF row h*D + 2i + s, with H = n_head for q and
// KV = n_head_kv for k. tools/make_gguf_fixtures.py checks the direction numerically.
import Foundation
import SFTKernels

public final class GGUFWeights: WeightSource {
    public let file: GGUFFile
    public let names: [String]
    /// HF name -> GGUF tensor info.
    private let infos: [String: GGUFTensorInfo]
    /// HF name -> number of heads whose rows must be un-permuted.
    private let permuteHeads: [String: Int]

    /// Architectures whose converter permutes q/k rows (rotate-half in HF, interleaved in ggml).
    public static let permutedArchitectures: Set<String> = ["llama", "mistral"]

    public convenience init(url: URL) throws { try self.init(file: GGUFFile(url: url)) }

    public init(file: GGUFFile) throws {
        self.file = file
        let arch = file.metadata["general.architecture"]?.string ?? ""
        var names: [String] = [], infos: [String: GGUFTensorInfo] = [:], perm: [String: Int] = [:]
        for t in file.tensors {
            guard let hf = GGUFWeights.hfName(t.name) else { continue }
            guard infos[hf] == nil else {
                throw SFTError.format(path: file.url.path, offset: t.offset, message: "tensors map to the same HF name '\(hf)'")
            }
            names.append(hf)
            infos[hf] = t
            guard GGUFWeights.permutedArchitectures.contains(arch), let layer = GGUFWeights.layerIndex(t.name) else { continue }
            let isQ = t.name.hasSuffix(".attn_q.weight") || t.name.hasSuffix(".attn_q.bias")
            let isK = t.name.hasSuffix(".attn_k.weight") || t.name.hasSuffix(".attn_k.bias")
            guard isQ || isK else { continue }
            let key = "\(arch).attention.head_count" + (isK ? "_kv" : "")
            // head counts are usually one number, but may be one per layer
            let value = file.metadata[key] ?? (isK ? file.metadata["\(arch).attention.head_count"] : nil)
            guard let heads = value?.int ?? value?.ints.flatMap({ layer < $0.count ? $0[layer] : nil }), heads > 0 else {
                throw SFTError.format(path: file.url.path, offset: nil, message: "tensor '\(t.name)': metadata \(key) missing, needed to undo the q/k row permutation")
            }
            let rows = t.shape[0]
            guard rows % (2 * heads) == 0 else {
                throw SFTError.format(path: file.url.path, offset: t.offset, message: "tensor '\(t.name)': \(rows) rows do not split into \(heads) heads of even size")
            }
            perm[hf] = heads
        }
        self.names = names
        self.infos = infos
        self.permuteHeads = perm
    }

    /// GGUF name -> HF name for Llama-family models; other names pass through unchanged, and
    /// tensors that HF derives from the config (rope_freqs) map to nil.
    public static func hfName(_ gguf: String) -> String? {
        switch gguf {
        case "token_embd.weight": return "model.embed_tokens.weight"
        case "output_norm.weight": return "model.norm.weight"
        case "output_norm.bias": return "model.norm.bias"
        case "output.weight": return "lm_head.weight"
        case "output.bias": return "lm_head.bias"
        case "rope_freqs.weight": return nil
        default: break
        }
        let parts = gguf.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", let n = Int(parts[1]),
              let module = blockModules[String(parts[2])] else { return gguf }
        return "model.layers.\(n).\(module).\(parts[3])"
    }

    /// Per-block GGUF tensor name -> HF module path inside `model.layers.N`.
    public static let blockModules: [String: String] = [
        "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj", "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
        "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
    ]

    private static func layerIndex(_ name: String) -> Int? {
        let p = name.split(separator: ".")
        return p.count >= 2 && p[0] == "blk" ? Int(p[1]) : nil
    }

    /// The GGUF tensor behind an HF name.
    public func ggufTensor(for name: String) -> GGUFTensorInfo? { infos[name] }

    public func shape(of name: String) -> [Int]? { infos[name]?.shape }

    public func loadF32(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
        guard let info = infos[name] else { throw SFTError.weights(key: name, message: "no such tensor in \(file.url.path)") }
        guard let heads = permuteHeads[name] else { return try file.dequantize(info, into: out) }
        let values = try file.dequantize(info)
        let rowLen = info.elementCount / info.shape[0]
        values.withUnsafeBufferPointer { src in
            GGUFWeights.unpermuteRows(rows: info.shape[0], heads: heads) { hfRow, ggufRow in
                (out + hfRow * rowLen).update(from: src.baseAddress! + ggufRow * rowLen, count: rowLen)
            }
        }
    }

    /// A tensor's stored (quantized) bytes with rows in HF order, for kernels that compute on
    /// the quantized form (`quantizedMatVec`). Rows are whole blocks, so un-permuting moves
    /// bytes only.
    public func loadRaw(_ name: String) throws -> (type: GGMLType, shape: [Int], bytes: [UInt8]) {
        guard let info = infos[name] else { throw SFTError.weights(key: name, message: "no such tensor in \(file.url.path)") }
        let raw = file.rawBytes(of: info)
        guard let heads = permuteHeads[name] else { return (info.type, info.shape, Array(raw)) }
        let rowBytes = info.byteCount / info.shape[0]
        var out = [UInt8](repeating: 0, count: info.byteCount)
        out.withUnsafeMutableBytes { dst in
            GGUFWeights.unpermuteRows(rows: info.shape[0], heads: heads) { hfRow, ggufRow in
                dst.baseAddress!.advanced(by: hfRow * rowBytes).copyMemory(from: raw.baseAddress! + ggufRow * rowBytes, byteCount: rowBytes)
            }
        }
        return (info.type, info.shape, out)
    }

    /// Calls `body(hfRow, ggufRow)` for every row: within head h of D rows, HF row
    /// h*D + s*D/2 + i was stored at h*D + 2i + s.
    static func unpermuteRows(rows: Int, heads: Int, _ body: (Int, Int) -> Void) {
        let D = rows / heads
        for h in 0 ..< heads {
            for s in 0 ..< 2 {
                for i in 0 ..< D / 2 { body(h * D + s * D / 2 + i, h * D + 2 * i + s) }
            }
        }
    }

    /// HF config.json keys from GGUF metadata `<arch>.<key>` (the data-driven part of `config`).
    public static let configKeys: [(gguf: String, hf: String)] = [
        ("block_count", "num_hidden_layers"), ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"), ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("attention.layer_norm_rms_epsilon", "rms_norm_eps"),
        ("attention.layer_norm_epsilon", "layer_norm_epsilon"), ("rope.freq_base", "rope_theta"),
        ("context_length", "max_position_embeddings"), ("vocab_size", "vocab_size"),
        ("attention.key_length", "head_dim"),
    ]

    /// An HF-style config from the metadata: `model_type`, the keys in `configKeys`,
    /// `tie_word_embeddings` (true when there is no output.weight), `vocab_size` (from the
    /// token list when not stored), `bos_token_id` / `eos_token_id`, and the RoPE scaling
    /// (`rope_scaling` from `rope.scaling.*`, llama.cpp's `rope_freqs` tensor as
    /// `freq_factors`). Metadata under `<arch>.rope.` that has no HF meaning here is passed on
    /// under its GGUF key, so the model's strict config decoding fails naming it.
    public var config: [String: JSONValue] { configValues.mapValues(JSONValue.init(foundation:)) }

    /// `config` as Swift values.
    private var configValues: [String: Any] {
        let m = file.metadata
        let arch = m["general.architecture"]?.string ?? ""
        var c: [String: Any] = ["model_type": arch]
        for (g, h) in GGUFWeights.configKeys {
            guard let v = m["\(arch).\(g)"] else { continue }
            switch v {
            // f32 values as their shortest decimal (1e-05, as config.json writes it)
            case .float32(let f): c[h] = Double("\(f)") ?? Double(f)
            case .float64(let d): c[h] = d
            default: if let i = v.int { c[h] = i }
            }
        }
        c["tie_word_embeddings"] = file.tensor(named: "output.weight") == nil
        if c["vocab_size"] == nil, let n = m["tokenizer.ggml.tokens"]?.array?.count { c["vocab_size"] = n }
        if let b = m["tokenizer.ggml.bos_token_id"]?.int { c["bos_token_id"] = b }
        if let e = m["tokenizer.ggml.eos_token_id"]?.int { c["eos_token_id"] = e }
        if let w = m["\(arch).attention.sliding_window"]?.int, w > 0 { c["sliding_window"] = w }
        for (key, value) in ropeConfig(arch: arch) { c[key] = value }
        return c
    }

    /// The RoPE part of `config`.
    private func ropeConfig(arch: String) -> [String: Any] {
        let m = file.metadata, prefix = "\(arch).rope."
        var c: [String: Any] = [:]
        var scaling: [String: Any] = [:]
        for key in m.keys.sorted() where key.hasPrefix(prefix) {
            let v = m[key]!, short = String(key.dropFirst(prefix.count))
            switch short {
            case "freq_base": break   // configKeys: rope_theta
            case "dimension_count":
                // Partial rotary embeddings are not implemented: the rotated dims must be the head.
                let headDim = m["\(arch).attention.key_length"]?.int
                    ?? (m["\(arch).embedding_length"]?.int).flatMap { e in m["\(arch).attention.head_count"]?.int.map { e / max(1, $0) } }
                if v.int != headDim { c[key] = v.int ?? 0 }
            case "scaling.type":
                switch v.string {
                case "none": break
                case "linear": scaling["rope_type"] = "linear"
                case "yarn": scaling["rope_type"] = "yarn"
                default: c[key] = v.string ?? "?"
                }
            case "scaling.factor": if let f = v.float { scaling["factor"] = f }
            case "scale_linear": if let f = v.float { scaling["rope_type"] = "linear"; scaling["factor"] = f }
            case "scaling.original_context_length": if let n = v.int { scaling["original_max_position_embeddings"] = n }
            case "scaling.finetuned": break   // provenance only
            case "scaling.attn_factor" where v.float == 1: break
            default: c[key] = "\(v)"
            }
        }
        if let t = file.tensor(named: "rope_freqs.weight"), let f = try? file.dequantize(t) {
            scaling["rope_type"] = scaling["rope_type"] ?? "default"
            scaling["freq_factors"] = f.map(Double.init)
        }
        if let type = scaling["rope_type"] as? String, type == "linear" || type == "yarn" || scaling["freq_factors"] != nil {
            c["rope_scaling"] = scaling
        } else if !scaling.isEmpty, scaling["rope_type"] == nil {
            c["rope_scaling"] = scaling.merging(["rope_type": "default"]) { a, _ in a }
        }
        return c
    }
}
