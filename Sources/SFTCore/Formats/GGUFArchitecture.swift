// How one model family is stored in GGUF, as llama.cpp's converter writes it: the
// `general.architecture` name, the tensor-name table (GGUF name ↔ HF parameter name), the
// value transforms the converter applies (q/k row permutation for Llama's interleaved RoPE,
// Gemma's norms stored as 1 + w), and the reader of the family's `<arch>.*` metadata into an
// HF config object. Each family keeps its own table beside its model file (as llama.cpp keeps
// them per architecture); `GGUFArchitecture.all` lists them for loading, and each model says
// which one it writes (`CausalLM.ggufExport()`).

import Foundation

/// How one model family is stored in GGUF, as llama.cpp's converter writes it: the
/// `general.architecture` name, the tensor-name table (GGUF ↔ HF names), the value transforms (q/k
/// row permutation, norms stored as 1 + w) and the reader of its `<arch>.*` metadata.
public struct GGUFArchitecture: Sendable {
    /// `general.architecture`.
    public let name: String
    /// HF prefix of decoder layer N's parameters, up to N ("model.layers.", "transformer.blocks.").
    public let layerPrefix: String
    /// Whole-model tensors: GGUF name → HF name.
    public let globals: [String: String]
    /// Per-block tensors: GGUF module (`attn_q`) → HF module path inside a layer (`self_attn.q_proj`).
    public let blocks: [String: String]
    /// GGUF tensors the HF model derives from its config (`rope_freqs`, `rope_factors_long`): no HF name.
    public let derived: Set<String>
    /// Whether the converter permutes q/k rows (HF rotate-half RoPE → ggml interleaved RoPE).
    public let permutesQK: Bool
    /// Whether norm weights are stored as 1 + w (Gemma's zero-centred norms; ggml multiplies by w).
    public let normsPlusOne: Bool
    /// The HF config object (`model_type` included) from this architecture's metadata and tensors.
    let readConfig: @Sendable (GGUFFile) -> [String: Any]

    init(name: String, layerPrefix: String, globals: [String: String], blocks: [String: String],
         derived: Set<String> = [], permutesQK: Bool = false, normsPlusOne: Bool = false,
         readConfig: @escaping @Sendable (GGUFFile) -> [String: Any]) {
        self.name = name; self.layerPrefix = layerPrefix; self.globals = globals; self.blocks = blocks
        self.derived = derived; self.permutesQK = permutesQK; self.normsPlusOne = normsPlusOne
        self.readConfig = readConfig
    }

    /// Every architecture sft reads, by `general.architecture`.
    public static let all: [String: GGUFArchitecture] = {
        let archs = [LlamaConfig.gguf("llama"), LlamaConfig.gguf("mistral"), LlamaConfig.gguf("qwen2"), LlamaConfig.gguf("qwen3"),
                     Phi3Config.gguf, Gemma2Config.gguf, Gemma3Config.gguf, MPTConfig.gguf]
        return Dictionary(uniqueKeysWithValues: archs.map { ($0.name, $0) })
    }()

    /// An architecture without a table here: Llama's tensor names, no value transforms, the
    /// common config keys with `model_type` = the architecture (which no builder knows).
    static func unknown(_ arch: String) -> GGUFArchitecture {
        let llama = LlamaConfig.gguf("llama")
        return GGUFArchitecture(name: arch, layerPrefix: llama.layerPrefix, globals: llama.globals, blocks: llama.blocks,
                                derived: llama.derived) { file in
            commonConfig(file, arch: arch, keys: LlamaConfig.ggufConfigKeys).merging(["model_type": arch]) { _, b in b }
        }
    }

    /// The HF name of a GGUF tensor; nil for tensors the HF model derives from its config.
    /// Names outside the table pass through unchanged (so strict loading names them).
    public func hfName(_ gguf: String) -> String? {
        if derived.contains(gguf) { return nil }
        if let g = globals[gguf] { return g }
        let parts = gguf.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "blk", let n = Int(parts[1]), let module = blocks[String(parts[2])] else { return gguf }
        return "\(layerPrefix)\(n).\(module).\(parts[3])"
    }

    /// The GGUF name of an HF parameter, or nil when llama.cpp has none.
    public func ggufName(forHF name: String) -> String? {
        if let g = globals.first(where: { $0.value == name })?.key { return g }
        guard name.hasPrefix(layerPrefix) else { return nil }
        let rest = name.dropFirst(layerPrefix.count)
        guard let dot = rest.firstIndex(of: "."), let n = Int(rest[..<dot]) else { return nil }
        let path = rest[rest.index(after: dot)...]
        guard let last = path.lastIndex(of: ".") else { return nil }
        let module = String(path[..<last]), leaf = path[path.index(after: last)...]
        guard let g = blocks.first(where: { $0.value == module })?.key else { return nil }
        return "blk.\(n).\(g).\(leaf)"
    }

    /// Whether the stored values of this HF parameter are 1 + w.
    func storesPlusOne(hf name: String) -> Bool { normsPlusOne && name.hasSuffix("norm.weight") }

    /// The config keys most architectures share: `<arch>.<key>` → HF key, plus
    /// `tie_word_embeddings` (no output.weight), `vocab_size` (from the token list when not
    /// stored) and the special token ids.
    static func commonConfig(_ file: GGUFFile, arch: String, keys: [(gguf: String, hf: String)]) -> [String: Any] {
        let m = file.metadata
        var c: [String: Any] = [:]
        for (g, h) in keys {
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
        return c
    }

    /// The RoPE part of a config (Llama-style keys): `rope_scaling` from `rope.scaling.*` and
    /// llama.cpp's `rope_freqs` tensor (as `freq_factors`); keys under `<arch>.rope.` with no HF
    /// meaning here are passed on under their GGUF key.
    static func ropeConfig(_ file: GGUFFile, arch: String) -> [String: Any] {
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

    /// llama.cpp's Gemma 2 / 3 query scale as HF's `query_pre_attn_scalar`: head_dim, except
    /// for a model with the 27B's layer count (`layers27B`: 46 for gemma2, 62 for gemma3), whose
    /// queries it scales by (hidden / heads)^-½.
    static func gemmaQueryScalar(layers: Int, layers27B: Int, hidden: Int, heads: Int, headDim: Int) -> Int {
        layers == layers27B ? hidden / max(1, heads) : headDim
    }

    /// `<arch>.*` keys under `prefix` that the family's reader does not know: passed on under
    /// their GGUF key so strict config decoding fails naming them.
    static func unknownKeys(_ file: GGUFFile, arch: String, known: Set<String>) -> [String: Any] {
        var c: [String: Any] = [:]
        for (key, v) in file.metadata where key.hasPrefix(arch + ".") && !known.contains(String(key.dropFirst(arch.count + 1))) {
            c[key] = "\(v)"
        }
        return c
    }
}

/// What a model writes into a GGUF file besides its parameters.
public struct GGUFModelExport {
    /// The family the file is written as (`general.architecture` and the tensor names).
    public var architecture: GGUFArchitecture
    /// `<arch>.*` hyper-parameters.
    public var metadata: [(String, GGUFValue)]
    /// Tensors llama.cpp reads that HF derives from the config (`rope_freqs`, `rope_factors_*`), f32.
    public var derivedTensors: [(name: String, values: [Float])]
    /// Heads of q and of k, for the row permutation (when the architecture permutes).
    public var heads: (q: Int, kv: Int)

    /// An export description; each argument sets the property of the same name (`heads` matters
    /// only when the architecture permutes q/k rows).
    public init(architecture: GGUFArchitecture, metadata: [(String, GGUFValue)],
                derivedTensors: [(name: String, values: [Float])] = [], heads: (q: Int, kv: Int) = (0, 0)) {
        self.architecture = architecture; self.metadata = metadata; self.derivedTensors = derivedTensors; self.heads = heads
    }
}
