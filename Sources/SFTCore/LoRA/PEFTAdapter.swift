// PEFT-compatible adapter folders: `adapter_config.json` + `adapter_model.safetensors` with
// PEFT's key names (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), so an
// adapter trained here loads with `PeftModel.from_pretrained`, and one trained with PEFT loads
// here.

import Foundation

public enum PEFTAdapter {
    static let prefix = "base_model.model."

    /// Writes the adapters (and `modulesToSave` weights) of `model` to `directory`.
    public static func save(_ model: Module, config: LoRAConfig, baseModel: String, to directory: URL) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        var targets = Set<String>()
        for (name, module) in model.namedModules() {
            guard let linear = module as? Linear, let lora = linear.lora else { continue }
            targets.insert(String(name.split(separator: ".").last ?? ""))
            for (suffix, p) in [("lora_A.weight", lora.a.weight), ("lora_B.weight", lora.b.weight)] {
                tensors.append((prefix + name + "." + suffix, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape)))
            }
        }
        let saved = savedModuleParameters(model, config: config)
        for (name, p) in saved {
            tensors.append((prefix + name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape)))
        }
        guard !tensors.isEmpty else { throw SFTError.config(field: "lora", message: "the model has no LoRA adapters to save") }
        try Safetensors.write(tensors, metadata: ["format": "pt"], to: directory.appendingPathComponent("adapter_model.safetensors"))
        let json: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": config.r, "lora_alpha": config.alpha,
            "lora_dropout": config.dropout, "target_modules": targets.sorted(), "use_rslora": config.useRSLoRA,
            "modules_to_save": config.modulesToSave.isEmpty ? NSNull() : config.modulesToSave as Any, "bias": "none",
            "base_model_name_or_path": baseModel, "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": true, "use_dora": false, "revision": NSNull(),
        ]
        let data = try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys])
        try writeSynced(data, to: directory.appendingPathComponent("adapter_config.json"))
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
        guard let r = o["r"] as? Int, r > 0 else { throw SFTError.format(path: url.path, offset: nil, message: "missing or invalid 'r'") }
        c.r = r
        c.alpha = (o["lora_alpha"] as? Double) ?? Double(r)
        c.dropout = (o["lora_dropout"] as? Double) ?? 0
        c.useRSLoRA = (o["use_rslora"] as? Bool) ?? false
        if let t = o["target_modules"] as? [String] { c.targetModules = t }
        else if let t = o["target_modules"] as? String { c.targetModules = [t] }
        c.modulesToSave = (o["modules_to_save"] as? [String]) ?? []
        if (o["use_dora"] as? Bool) == true { throw SFTError.unsupported("\(url.path): DoRA adapters") }
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
        }
        for (name, p) in savedModuleParameters(model, config: config) { expected[name] = p }
        var filled = Set<String>()
        for raw in file.names {
            // PEFT stores "…lora_A.weight" (adapter name stripped); tolerate "…lora_A.default.weight".
            var name = raw.hasPrefix(prefix) ? String(raw.dropFirst(prefix.count)) : raw
            name = name.replacingOccurrences(of: ".default.weight", with: ".weight")
                .replacingOccurrences(of: ".modules_to_save.default.", with: ".")
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
