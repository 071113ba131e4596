// PEFT-compatible adapter folders: `adapter_config.json` + `adapter_model.safetensors` with
// PEFT's key names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so an
// adapter trained here loads with `PeftModel.from_pretrained`, and one trained with PEFT loads
// here.

import Foundation
import SFTKernels

/// Reads and writes LoRA adapters as PEFT folders (`adapter_config.json` and
/// `adapter_model.safetensors`), interchangeable with Hugging Face PEFT.
public enum PEFTAdapter {
    static let prefix = "base_model.model."

    /// Writes the adapters (and `modulesToSave` weights) of `model` to `directory`.
    /// Adapters initialized from the base weight (PiSSA, OLoRA) are saved converted to plain
    /// LoRA on the original base, as PEFT's `path_initial_model_for_weight_conversion` does:
    /// ΔW = s·(B A − B₀ A₀) = s'·[B, −B₀][A; A₀] with rank 2r (alpha doubled, or ×√2 with rsLoRA,
    /// so s' = s), and the folder's README says so.
    public static func save(_ model: Module, config: LoRAConfig, baseModel: String, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        var targets = Set<String>()
        var converted = false
        for (name, module) in model.namedModules() {
            guard let linear = module as? Linear, let lora = linear.lora else { continue }
            targets.insert(String(name.split(separator: ".").last ?? ""))
            var a = try lora.a.weight.value.floats(), b = try lora.b.weight.value.floats()
            var r = lora.rank
            if let (a0, b0) = lora.initialAB {
                converted = true
                a += try a0.floats()
                let b0v = try b0.floats(), M = linear.outFeatures
                var wide = [Float](repeating: 0, count: M * 2 * r)
                for m in 0..<M {
                    for k in 0..<r { wide[m * 2 * r + k] = b[m * r + k]; wide[m * 2 * r + r + k] = -b0v[m * r + k] }
                }
                b = wide
                r *= 2
            }
            tensors.append((prefix + name + ".lora_A.weight", try SafetensorsTensor(a, shape: [r, linear.inFeatures])))
            tensors.append((prefix + name + ".lora_B.weight", try SafetensorsTensor(b, shape: [linear.outFeatures, r])))
            if let m = lora.magnitude {
                tensors.append((prefix + name + ".lora_magnitude_vector", try SafetensorsTensor(try m.weight.value.floats(), shape: [linear.outFeatures])))
            }
        }
        let saved = savedModuleParameters(model, config: config)
        for (name, p) in saved {
            tensors.append((prefix + name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape)))
        }
        guard !tensors.isEmpty else { throw SFTError.config(field: "lora", message: "the model has no LoRA adapters to save") }
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("adapter_model.safetensors"))
        let grow = converted ? 2.0 : 1.0, alphaGrow = converted ? (config.useRSLoRA ? 2.0.squareRoot() : 2.0) : 1.0
        let json: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.r * Int(grow), "lora_alpha": config.alpha * alphaGrow,
            "lora_dropout": config.dropout, "target_modules": targets.sorted(), "use_rslora": config.useRSLoRA,
            "modules_to_save": config.modulesToSave.isEmpty ? NSNull() : config.modulesToSave as Any, "bias": "none",
            "base_model_name_or_path": baseModel, "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": converted ? true : config.initWeights.peftValue.foundationValue, "use_dora": config.useDoRA,
            "rank_pattern": config.rankPattern.mapValues { $0 * Int(grow) },
            "alpha_pattern": config.alphaPattern.mapValues { $0 * grow }, "revision": NSNull(),
        ]
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
        try writeSynced(data, to: directory.appendingPathComponent("adapter_config.json"))
        let readme = directory.appendingPathComponent("README.md")
        if converted {
            let text = """
            # LoRA adapter (converted from \(config.initWeights) initialization)

            Trained with `init_lora_weights: \(config.initWeights)`, which moved the principal part of each
            adapted weight into the adapter and left the residual in the base. Saved converted, as PEFT's
            `save_pretrained(path_initial_model_for_weight_conversion=...)` does: this is a plain LoRA
            adapter of rank \(2 * config.r) (the trained [A; A₀] and [B, −B₀]) that applies to the
            original base model `\(baseModel)`.

            """
            try writeSynced(Data(text.utf8), to: readme)
        } else if FileManager.default.fileExists(atPath: readme.path) {
            try FileManager.default.removeItem(at: readme)
        }
    }

    /// Parameters of `modulesToSave` modules, by model name.
    static func savedModuleParameters(_ model: Module, config: LoRAConfig) -> [(String, Parameter)] {
        guard !config.modulesToSave.isEmpty else { return [] }
        return model.namedParameters().filter { name, _ in
            config.modulesToSave.contains { t in name.hasPrefix(t + ".") || name.contains("." + t + ".") }
                && !name.contains(".lora_")
        }
    }

    /// Reads an adapter folder's config.
    public static func readConfig(_ directory: URL) throws -> LoRAConfig {
        let url = directory.appendingPathComponent("adapter_config.json")
        guard let data = FileManager.default.contents(atPath: url.path) else {
            throw SFTError.io(path: url.path, message: "no adapter_config.json (not a PEFT adapter folder)")
        }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SFTError.format(path: url.path, offset: nil, message: "not a JSON object")
        }
        if let t = o["peft_type"] as? String, t != "LORA" {
            throw SFTError.unsupported("\(url.path): peft_type \(t) (only LORA adapters)")
        }
        var c = LoRAConfig()
        // Ranks are allocated from (rank × features), so a hostile one must not reach the allocator.
        let maxRank = 1 << 20
        guard let r = o["r"] as? Int, r > 0, r <= maxRank else {
            throw SFTError.format(path: url.path, offset: nil, message: "missing or invalid 'r' (\(o["r"] ?? "none"); an integer in 1...\(maxRank))")
        }
        c.r = r
        c.alpha = (o["lora_alpha"] as? Double) ?? Double(r)
        c.dropout = (o["lora_dropout"] as? Double) ?? 0
        c.useRSLoRA = (o["use_rslora"] as? Bool) ?? false
        if let t = o["target_modules"] as? [String] { c.targetModules = t }
        else if let t = o["target_modules"] as? String { c.targetModules = [t] }
        c.modulesToSave = (o["modules_to_save"] as? [String]) ?? []
        c.useDoRA = (o["use_dora"] as? Bool) ?? false
        for (k, v) in (o["rank_pattern"] as? [String: Any]) ?? [:] {
            guard let r = v as? Int, r > 0, r <= maxRank else {
                throw SFTError.format(path: url.path, offset: nil, message: "rank_pattern['\(k)'] \(v) is not an integer in 1...\(maxRank)")
            }
            c.rankPattern[k] = r
        }
        for (k, v) in (o["alpha_pattern"] as? [String: Any]) ?? [:] {
            guard let a = (v as? NSNumber)?.doubleValue else { throw SFTError.format(path: url.path, offset: nil, message: "alpha_pattern['\(k)'] is not a number") }
            c.alphaPattern[k] = a
        }
        do { c.initWeights = try LoRAInit(peft: o["init_lora_weights"].map(JSONValue.init(foundation:))) } catch {
            throw SFTError.format(path: url.path, offset: nil, message: "\(error)")
        }
        for key in ["layers_to_transform", "layers_pattern", "megatron_config", "loftq_config", "eva_config", "corda_config", "trainable_token_indices"] {
            if let v = o[key], !(v is NSNull), !((v as? [Any])?.isEmpty ?? false), !((v as? [String: Any])?.isEmpty ?? false) {
                throw SFTError.unsupported("\(url.path): \(key) is not supported")
            }
        }
        if let v = o["use_qalora"] as? Bool, v { throw SFTError.unsupported("\(url.path): use_qalora is not supported") }
        if let fan = o["fan_in_fan_out"] as? Bool, fan { throw SFTError.unsupported("\(url.path): fan_in_fan_out adapters") }
        return c
    }

    /// Attaches the adapter in `directory` to `model` and loads its weights (strict: every
    /// tensor must land, every adapter must be filled).
    @discardableResult
    public static func load(_ directory: URL, into model: Module) throws -> LoRAConfig {
        let config = try readConfig(directory)
        try model.applyLoRA(config, seed: 0)
        let file = try SafetensorsFile(url: directory.appendingPathComponent("adapter_model.safetensors"))
        var expected: [String: Parameter] = [:]
        for (name, module) in model.namedModules() {
            guard let linear = module as? Linear, let lora = linear.lora else { continue }
            expected[name + ".lora_A.weight"] = lora.a.weight
            expected[name + ".lora_B.weight"] = lora.b.weight
            if let m = lora.magnitude { expected[name + ".lora_magnitude_vector"] = m.weight }
        }
        for (name, p) in savedModuleParameters(model, config: config) { expected[name] = p }
        var filled = Set<String>()
        for raw in file.names {
            // PEFT stores "…lora_A.weight" (adapter name stripped); tolerate "…lora_A.default.weight".
            var name = raw.hasPrefix(prefix) ? String(raw.dropFirst(prefix.count)) : raw
            name = name.replacingOccurrences(of: ".default.weight", with: ".weight")
                .replacingOccurrences(of: ".modules_to_save.default.", with: ".")
            if name.hasSuffix(".lora_magnitude_vector.weight") { name = String(name.dropLast(".weight".count)) }
            guard let p = expected[name] else {
                throw SFTError.weights(key: raw, message: "adapter tensor has no matching layer in the model")
            }
            guard let info = file.tensor(named: raw), info.shape == p.value.shape else {
                throw SFTError.weights(key: raw, message: "shape \(file.tensor(named: raw)?.shape ?? []) in the adapter, \(p.value.shape) in the model")
            }
            try p.value.assign(try file.loadF32(raw))
            filled.insert(name)
        }
        if let missing = Set(expected.keys).subtracting(filled).sorted().first {
            throw SFTError.weights(key: missing, message: "missing from \(directory.path)/adapter_model.safetensors")
        }
        model.setTrainable(false)
        return config
    }
}
