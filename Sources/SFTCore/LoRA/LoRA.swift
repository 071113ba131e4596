// LoRA (Hu et al. 2021) as PEFT implements it: y = x Wᵀ + s · dropout(x) Aᵀ Bᵀ with A (r, in)
// Kaiming-uniform initialized, B (out, r) zero, s = alpha / r (alpha / √r with rsLoRA).
// Adapters attach to Linear layers by module name, so every architecture gets LoRA at once;
// parameter names match PEFT's (`….q_proj.lora_A.weight`).

import Foundation

public struct LoRAConfig: Codable, Equatable, Sendable {
    public var r: Int = 16
    public var alpha: Double = 16
    public var dropout: Double = 0.05
    /// Module names (last path component, e.g. "q_proj") or ["all-linear"] (every Linear but the LM head).
    public var targetModules: [String] = ["all-linear"]
    public var useRSLoRA: Bool = false
    /// Modules trained fully and saved whole with the adapter (e.g. "embed_tokens", "lm_head").
    public var modulesToSave: [String] = []

    public init(r: Int = 16, alpha: Double = 16, dropout: Double = 0.05, targetModules: [String] = ["all-linear"],
                useRSLoRA: Bool = false, modulesToSave: [String] = []) {
        self.r = r; self.alpha = alpha; self.dropout = dropout; self.targetModules = targetModules
        self.useRSLoRA = useRSLoRA; self.modulesToSave = modulesToSave
    }

    enum CodingKeys: String, CodingKey {
        case r, alpha = "lora_alpha", dropout = "lora_dropout", targetModules = "target_modules"
        case useRSLoRA = "use_rslora", modulesToSave = "modules_to_save"
    }

    public var scaling: Float { Float(useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r)) }
}

public final class LoRAAdapter {
    public let a: WeightOnly
    public let b: WeightOnly
    public let scaling: Float
    public let dropout: Float

    public init(inFeatures: Int, outFeatures: Int, config: LoRAConfig, rng: inout SeededRandom, on backend: Backend) throws {
        // kaiming_uniform_(a=√5) on an (r, in) matrix: bound = 1/√in.
        let bound = 1 / Double(inFeatures).squareRoot()
        let aValues = (0..<(config.r * inFeatures)).map { _ in Float((rng.nextUnit() * 2 - 1) * bound) }
        a = WeightOnly(Parameter(try Tensor(aValues, shape: [config.r, inFeatures], on: backend), trainable: true))
        b = WeightOnly(Parameter(try Tensor.zeros([outFeatures, config.r], on: backend), trainable: true))
        scaling = config.scaling
        dropout = Float(config.dropout)
    }

    /// s · dropout(x) Aᵀ Bᵀ
    public func callAsFunction(_ x: Tensor) throws -> Tensor {
        let h = try Ops.linear(try Ops.dropout(x, p: dropout), a.weight.value)
        return try Ops.linear(try Ops.scale(h, scaling), b.weight.value)
    }

    /// The dense update s · B A (out, in), on the host.
    public func delta() throws -> [Float] {
        let A = try a.weight.value.floats(), B = try b.weight.value.floats()
        let r = a.weight.value.shape[0], inF = a.weight.value.shape[1], outF = b.weight.value.shape[0]
        var d = [Float](repeating: 0, count: outF * inF)
        for o in 0..<outF {
            for k in 0..<r {
                let bk = B[o * r + k] * scaling
                if bk == 0 { continue }
                for i in 0..<inF { d[o * inF + i] += bk * A[k * inF + i] }
            }
        }
        return d
    }
}

extension Linear {
    /// Folds the adapter into the base weight (W += s·B·A) and removes it.
    public func mergeLoRA() throws {
        guard let lora else { return }
        if quantized != nil { try dequantize() }  // QLoRA: merge into the dequantized base
        let w = try weight.value.floats(), d = try lora.delta()
        try weight.value.assign(zip(w, d).map { $0 + $1 })
        self.lora = nil
        packed = nil  // the quantized copy no longer matches the weight
    }
}

extension Module {
    /// Attaches LoRA adapters to the Linear layers `config.targetModules` selects, freezes
    /// everything else except `modulesToSave`, and returns the adapted module names.
    /// `lmHeadName` is excluded from "all-linear" as in PEFT.
    @discardableResult
    public func applyLoRA(_ config: LoRAConfig, seed: UInt64, lmHeadName: String = "lm_head") throws -> [String] {
        guard config.r > 0 else { throw SFTError.config(field: "r", message: "LoRA rank must be positive, got \(config.r)") }
        setTrainable(false)
        var rng = SeededRandom(seed: seed)
        let allLinear = config.targetModules.contains("all-linear")
        var adapted: [String] = []
        var matchedTargets = Set<String>()
        for (name, module) in namedModules() {
            guard let linear = module as? Linear else { continue }
            let last = name.split(separator: ".").last.map(String.init) ?? name
            let selected = allLinear ? last != lmHeadName : config.targetModules.contains { t in
                t == last || name == t || name.hasSuffix("." + t)
            }
            guard selected else { continue }
            matchedTargets.insert(last)
            linear.lora = try LoRAAdapter(inFeatures: linear.inFeatures, outFeatures: linear.outFeatures,
                                          config: config, rng: &rng, on: linear.weight.value.backend)
            adapted.append(name)
        }
        if !allLinear, let missing = config.targetModules.first(where: { t in !matchedTargets.contains(t) && !adapted.contains { $0.hasSuffix(t) } }) {
            throw SFTError.config(field: "target_modules", message: "no Linear layer named '\(missing)' in the model")
        }
        for target in config.modulesToSave {
            let hits = namedModules().filter { $0.0 == target || $0.0.hasSuffix("." + target) }
            guard !hits.isEmpty else {
                throw SFTError.config(field: "modules_to_save", message: "no module named '\(target)' in the model")
            }
            for (_, m) in hits { m.setTrainable(true) }
        }
        return adapted
    }
}
