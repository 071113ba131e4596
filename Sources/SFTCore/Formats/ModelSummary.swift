// A summary of a model file or folder for `sftctl inspect`: format, architecture, parameter
// count, stored types, the config values models care about, and the tokenizer's kind,
// special tokens and chat template. Data-driven: key lists below, no per-model code, so
// other concerns (tokenizers, templates) can extend it by adding keys.
import Foundation
import SFTKernels

/// What `sftctl inspect` shows about a model file or folder: format, architecture, parameter count,
/// stored types, the config values models care about, and the tokenizer's kind, special tokens and
/// chat template.
public struct ModelSummary {
    /// "GGUF v3" or "HF folder" or "safetensors".
    public var format: String
    /// GGUF `general.architecture` or config.json's `model_type` ("llama", "qwen2"), when present.
    public var architecture: String?
    /// GGUF `general.name`, or config.json's `_name_or_path` (else the folder name).
    public var name: String?
    /// Values over all tensors.
    public var parameterCount: Int
    /// Number of tensors.
    public var tensorCount: Int
    /// Stored element type (GGML type or safetensors dtype) -> number of tensors.
    public var typeCounts: [String: Int]
    /// Selected HF config values (keys in `ModelSummary.configKeys` that are present).
    public var config: [String: JSONValue]
    /// Tokenizer kind: GGUF `tokenizer.ggml.model` ("gpt2", "llama") or tokenizer.json's
    /// model type ("BPE").
    public var tokenizerKind: String?
    /// Tokens in the vocabulary, when the tokenizer could be read.
    public var vocabularySize: Int?
    /// Special token role ("bos", "eos", "unknown", "padding" ...) -> (id when known, text).
    public var specialTokens: [String: (id: Int?, text: String?)]
    /// Whether the tokenizer files carry a chat template.
    public var hasChatTemplate: Bool
    /// Other metadata worth showing (GGUF keys such as tokenizer.ggml.pre, general.file_type).
    public var extra: [String: String]

    /// HF config keys shown, in this order.
    public static let configKeys = [
        "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
        "head_dim", "intermediate_size", "vocab_size", "max_position_embeddings", "rope_theta",
        "rms_norm_eps", "tie_word_embeddings", "torch_dtype",
    ]
    /// GGUF metadata keys shown as `extra` when present.
    public static let ggufExtraKeys = [
        "general.file_type", "general.quantization_version", "general.size_label", "general.license",
        "tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token",
        "tokenizer.ggml.add_space_prefix",
    ]
    /// tokenizer_config.json keys naming special tokens -> role.
    public static let hfSpecialTokenKeys = ["bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"]

    /// Summarizes a `.gguf` file, a `.safetensors` file or an HF model folder.
    public init(url: URL) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw SFTError.io(path: url.path, message: "no such file or folder")
        }
        format = ""; parameterCount = 0; tensorCount = 0; typeCounts = [:]; config = [:]
        specialTokens = [:]; hasChatTemplate = false; extra = [:]
        if isDir.boolValue {
            try summarizeFolder(HFModelFolder(url: url))
        } else if url.pathExtension.lowercased() == "safetensors" {
            let f = try SafetensorsFile(url: url)
            format = "safetensors"
            tensorCount = f.tensors.count
            for t in f.tensors { parameterCount += t.elementCount; typeCounts[t.dtype.rawValue, default: 0] += 1 }
        } else {
            try summarizeGGUF(GGUFWeights(url: url))
        }
    }

    private mutating func summarizeGGUF(_ w: GGUFWeights) {
        let g = w.file, m = g.metadata
        format = "GGUF v\(g.version)"
        architecture = m["general.architecture"]?.string
        name = m["general.name"]?.string
        tensorCount = g.tensors.count
        for t in g.tensors { parameterCount += t.elementCount; typeCounts[t.type.name, default: 0] += 1 }
        let c = w.config
        for k in Self.configKeys { if let v = c[k] { config[k] = v } }
        tokenizerKind = m["tokenizer.ggml.model"]?.string
        let tokens = m["tokenizer.ggml.tokens"]?.strings
        vocabularySize = tokens?.count
        for key in g.metadataKeys where key.hasPrefix("tokenizer.ggml.") && key.hasSuffix("_token_id") {
            guard let id = m[key]?.int else { continue }
            let role = String(key.dropFirst("tokenizer.ggml.".count).dropLast("_token_id".count))
            specialTokens[role] = (id, tokens.flatMap { id >= 0 && id < $0.count ? $0[id] : nil })
        }
        hasChatTemplate = g.metadataKeys.contains { $0 == "tokenizer.chat_template" || $0.hasPrefix("tokenizer.chat_template.") }
        for k in Self.ggufExtraKeys { if let v = m[k] { extra[k] = v.string ?? v.description } }
        if let merges = m["tokenizer.ggml.merges"]?.array?.count { extra["tokenizer.ggml.merges"] = "\(merges) merges" }
    }

    private mutating func summarizeFolder(_ f: HFModelFolder) throws {
        format = "HF folder (\(f.weights.files.count) safetensors file\(f.weights.files.count == 1 ? "" : "s"))"
        architecture = f.config["model_type"]?.stringValue
        name = f.config["_name_or_path"]?.stringValue ?? f.url.lastPathComponent
        tensorCount = f.names.count
        for file in f.weights.files {
            for t in file.tensors { parameterCount += t.elementCount; typeCounts[t.dtype.rawValue, default: 0] += 1 }
        }
        for k in Self.configKeys { if let v = f.config[k] { config[k] = v } }
        if let u = f.tokenizerURL, let tok = try? HFModelFolder.readJSONObject(u), let model = tok["model"] as? [String: Any] {
            tokenizerKind = model["type"] as? String
            if let vocab = model["vocab"] as? [String: Any] { vocabularySize = vocab.count }
            else if let vocab = model["vocab"] as? [Any] { vocabularySize = vocab.count }
        }
        if let u = f.tokenizerConfigURL, let tc = try? HFModelFolder.readJSONObject(u) {
            for (key, role) in Self.hfSpecialTokenKeys {
                let text = (tc[key] as? String) ?? ((tc[key] as? [String: Any])?["content"] as? String)
                if let text { specialTokens[role] = (nil, text) }
            }
            hasChatTemplate = tc["chat_template"] != nil
        }
        if let b = f.config["bos_token_id"]?.intValue { specialTokens["bos", default: (nil, nil)].id = b }
        if let e = f.config["eos_token_id"]?.intValue { specialTokens["eos", default: (nil, nil)].id = e }
    }

    /// The summary as one JSON object (keys sorted).
    public var json: JSONValue {
        var o: [String: JSONValue] = [
            "format": .string(format), "parameters": .int(parameterCount), "tensors": .int(tensorCount),
            "types": .sortedObject(typeCounts.mapValues(JSONValue.int)), "config": .sortedObject(config),
            "chat_template": .bool(hasChatTemplate),
        ]
        if let architecture { o["architecture"] = .string(architecture) }
        if let name { o["name"] = .string(name) }
        var tok: [String: JSONValue] = [:]
        if let tokenizerKind { tok["kind"] = .string(tokenizerKind) }
        if let vocabularySize { tok["vocab_size"] = .int(vocabularySize) }
        var special: [String: JSONValue] = [:]
        for (role, t) in specialTokens {
            var s: [String: JSONValue] = [:]
            if let id = t.id { s["id"] = .int(id) }
            if let text = t.text { s["text"] = .string(text) }
            special[role] = .sortedObject(s)
        }
        tok["special_tokens"] = .sortedObject(special)
        o["tokenizer"] = .sortedObject(tok)
        if !extra.isEmpty { o["metadata"] = .sortedObject(extra.mapValues(JSONValue.string)) }
        return .sortedObject(o)
    }

    /// Human-readable lines.
    public var lines: [String] {
        var out = ["format:        \(format)"]
        if let architecture { out.append("architecture:  \(architecture)") }
        if let name { out.append("name:          \(name)") }
        out.append("parameters:    \(Self.grouped(parameterCount)) (\(Self.short(parameterCount)))")
        out.append("tensors:       \(tensorCount): " + typeCounts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
        let cfg = Self.configKeys.compactMap { k in config[k].map { "\(k)=\($0.stringValue ?? $0.serialized())" } }
        if !cfg.isEmpty { out.append("config:        " + cfg.joined(separator: " ")) }
        var tok = tokenizerKind ?? "unknown"
        if let vocabularySize { tok += " (\(vocabularySize) tokens)" }
        out.append("tokenizer:     \(tok)")
        let special = specialTokens.sorted { $0.key < $1.key }.map { role, t -> String in
            var s = role
            if let id = t.id { s += "=\(id)" }
            if let text = t.text { s += " \(text.debugDescription)" }
            return s
        }
        if !special.isEmpty { out.append("special:       " + special.joined(separator: ", ")) }
        out.append("chat template: \(hasChatTemplate ? "yes" : "no")")
        for (k, v) in extra.sorted(by: { $0.key < $1.key }) { out.append("  \(k) = \(v)") }
        return out
    }

    static func grouped(_ n: Int) -> String {
        var s = String(n), out = ""
        while s.count > 3 { out = "," + s.suffix(3) + out; s = String(s.dropLast(3)) }
        return s + out
    }

    static func short(_ n: Int) -> String {
        let units: [(Double, String)] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")]
        for (v, u) in units where Double(n) >= v {
            let x = (Double(n) / v * 10).rounded() / 10
            return "\(x)\(u)"
        }
        return String(n)
    }
}
