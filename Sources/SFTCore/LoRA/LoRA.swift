// LoRA (Hu et al. 2021) as PEFT implements it: y = x Wᵀ + s · dropout(x) Aᵀ Bᵀ with A (r, in)
// Kaiming-uniform initialized, B (out, r) zero, s = alpha / r (alpha / √r with rsLoRA).
// Adapters attach to Linear layers by module name, so every architecture gets LoRA at once;
// parameter names match PEFT's (`….q_proj.lora_A.weight`).
//
// The variants PEFT offers on top, with PEFT's config names: per-module ranks and alphas
// (`rank_pattern`, `alpha_pattern`), initializations (`init_lora_weights`: true, false,
// "gaussian", "pissa", "pissa_niter_K", "olora" — LoRAInitialization.swift) and DoRA
// (`use_dora`, DoRA.swift).

import Foundation
import SFTKernels

/// PEFT's `init_lora_weights`.
public enum LoRAInit: Equatable, Sendable, Codable, CustomStringConvertible {
    /// `true`: A Kaiming-uniform, B zero.
    case kaiming
    /// `false`: A and B both Kaiming-uniform (the adapter changes the model from the start; for tests).
    case random
    /// A ~ N(0, 1/r), B zero.
    case gaussian
    /// The r principal singular directions of W go into B·A; the base keeps the residual.
    /// `niter` nil: "pissa" (the exact top-r); K: "pissa_niter_K" (K subspace iterations).
    case pissa(niter: Int?)
    /// The first r columns of W's QR go into B (Q) and A (R); the base keeps the residual.
    case olora

    /// Parses a PEFT `init_lora_weights` value (adapter_config.json): nil/null or true →
    /// `.kaiming`, false → `.random`, or one of the names "gaussian", "pissa", "pissa_niter_K",
    /// "olora".
    /// - Parameter value: The JSON value.
    /// - Throws: `SFTError.config` naming `init_lora_weights` for any other value.
    public init(peft value: JSONValue?) throws {
        switch value {
        case nil, .null?: self = .kaiming
        case .bool(let b)?: self = b ? .kaiming : .random
        case .string(let s)?:
            switch s {
            case "true", "True": self = .kaiming
            case "false", "False": self = .random
            case "gaussian": self = .gaussian
            case "pissa": self = .pissa(niter: nil)
            case "olora": self = .olora
            default:
                if s.hasPrefix("pissa_niter_"), let k = Int(s.dropFirst("pissa_niter_".count)), k >= 0 {
                    self = .pissa(niter: k)
                } else {
                    throw SFTError.config(field: "init_lora_weights", message: "'\(s)' is not one of true, false, gaussian, pissa, pissa_niter_K, olora")
                }
            }
        case let other?:
            throw SFTError.config(field: "init_lora_weights", message: "expected true, false or a name, got \(other)")
        }
    }

    /// The value PEFT writes in adapter_config.json.
    public var peftValue: JSONValue {
        switch self {
        case .kaiming: return true
        case .random: return false
        case .gaussian: return "gaussian"
        case .pissa(let k): return .string(k.map { "pissa_niter_\($0)" } ?? "pissa")
        case .olora: return "olora"
        }
    }

    /// The PEFT value as text: "true", "false", "gaussian", "pissa", "pissa_niter_K" or "olora".
    public var description: String { peftValue.stringValue ?? "\(peftValue)" }

    /// PiSSA and OLoRA move part of W into the adapter: the base weight is changed.
    public var mutatesBase: Bool {
        switch self { case .pissa, .olora: return true; default: return false }
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { try self.init(peft: .bool(b)) } else { try self.init(peft: .string(try c.decode(String.self))) }
    }
    public func encode(to encoder: Encoder) throws {
        var c = encoder.singleValueContainer()
        try c.encode(peftValue)
    }
}

/// The LoRA settings, with PEFT's `LoraConfig` names as coding keys (what adapter_config.json and
/// the training config's `lora:` section contain). Defaults: r 16, alpha 16, dropout 0.05, every
/// Linear but the LM head.
public struct LoRAConfig: Codable, Equatable, Sendable {
    /// Rank of every adapter (PEFT `r`), unless `rankPattern` gives a module its own.
    public var r: Int = 16
    /// PEFT `lora_alpha`: the update is scaled by alpha / r (alpha / √r with rsLoRA).
    public var alpha: Double = 16
    /// PEFT `lora_dropout`: probability of zeroing each input element of the adapter path while
    /// training.
    public var dropout: Double = 0.05
    /// Module names (last path component, e.g. "q_proj") or ["all-linear"] (every Linear but the LM head).
    public var targetModules: [String] = ["all-linear"]
    /// PEFT `use_rslora`: scale by alpha / √r instead of alpha / r.
    public var useRSLoRA: Bool = false
    /// Modules trained fully and saved whole with the adapter (e.g. "embed_tokens", "lm_head").
    public var modulesToSave: [String] = []
    /// Per-module rank / alpha: a key is a regular expression matched against the end of the
    /// module's dotted name at a dot boundary (PEFT's `(.*\.)?(key)$`), the first matching key wins.
    public var rankPattern: [String: Int] = [:]
    /// PEFT `alpha_pattern`: per-module alpha, keys matched like `rankPattern`'s.
    public var alphaPattern: [String: Double] = [:]
    /// PEFT `init_lora_weights`: how A and B start (default Kaiming-uniform A, zero B).
    public var initWeights: LoRAInit = .kaiming
    /// DoRA: a trained magnitude per output row (DoRA.swift).
    public var useDoRA: Bool = false

    /// - Parameters:
    ///   - r: Rank.
    ///   - alpha: Scaling numerator.
    ///   - dropout: Adapter-input dropout probability.
    ///   - targetModules: Module names to adapt, or ["all-linear"].
    ///   - useRSLoRA: Whether to scale by alpha / √r.
    ///   - modulesToSave: Modules trained fully and saved with the adapter.
    ///   - rankPattern: Per-module ranks.
    ///   - alphaPattern: Per-module alphas.
    ///   - initWeights: The initialization.
    ///   - useDoRA: Whether to add DoRA's magnitude vector.
    public init(r: Int = 16, alpha: Double = 16, dropout: Double = 0.05, targetModules: [String] = ["all-linear"],
                useRSLoRA: Bool = false, modulesToSave: [String] = [], rankPattern: [String: Int] = [:],
                alphaPattern: [String: Double] = [:], initWeights: LoRAInit = .kaiming, useDoRA: Bool = false) {
        self.r = r; self.alpha = alpha; self.dropout = dropout; self.targetModules = targetModules
        self.useRSLoRA = useRSLoRA; self.modulesToSave = modulesToSave
        self.rankPattern = rankPattern; self.alphaPattern = alphaPattern; self.initWeights = initWeights
        self.useDoRA = useDoRA
    }

    enum CodingKeys: String, CodingKey {
        case r, alpha = "lora_alpha", dropout = "lora_dropout", targetModules = "target_modules"
        case useRSLoRA = "use_rslora", modulesToSave = "modules_to_save"
        case rankPattern = "rank_pattern", alphaPattern = "alpha_pattern", initWeights = "init_lora_weights"
        case useDoRA = "use_dora"
    }

    /// s, the factor of the low-rank update for the default rank and alpha: alpha / r, or
    /// alpha / √r with rsLoRA.
    public var scaling: Float { scaling(r: r, alpha: alpha) }

    func scaling(r: Int, alpha: Double) -> Float { Float(useRSLoRA ? alpha / Double(r).squareRoot() : alpha / Double(r)) }

    /// The first pattern key that matches `module` (PEFT's `get_pattern_key`), checked in a
    /// stable order (PEFT keeps the JSON's order; a config whose keys overlap should not rely on it).
    static func patternKey<V>(_ pattern: [String: V], _ module: String) throws -> String? {
        for key in pattern.keys.sorted() {
            guard let re = try? NSRegularExpression(pattern: "^(.*\\.)?(\(key))$") else {
                throw SFTError.config(field: "rank_pattern", message: "'\(key)' is not a valid regular expression")
            }
            if re.firstMatch(in: module, range: NSRange(module.startIndex..., in: module)) != nil { return key }
        }
        return nil
    }

    /// The rank and alpha of the adapter on `module` (its dotted name in the model).
    public func rankAndAlpha(for module: String) throws -> (r: Int, alpha: Double) {
        let r = try Self.patternKey(rankPattern, module).map { rankPattern[$0]! } ?? self.r
        let a = try Self.patternKey(alphaPattern, module).map { alphaPattern[$0]! } ?? alpha
        guard r > 0 else { throw SFTError.config(field: "rank_pattern", message: "rank \(r) for \(module) must be positive") }
        return (r, a)
    }

    /// Checks the settings that have no valid meaning otherwise.
    /// - Throws: `SFTError.config` naming `r` or `rank_pattern` when a rank is not positive.
    public func validate() throws {
        guard r > 0 else { throw SFTError.config(field: "r", message: "LoRA rank must be positive, got \(r)") }
        for (k, v) in rankPattern where v <= 0 {
            throw SFTError.config(field: "rank_pattern", message: "rank \(v) for '\(k)' must be positive")
        }
    }
}

/// One Linear layer's low-rank update s · B A (PEFT's `lora_A`/`lora_B` pair), applied as
/// y += s · dropout(x) Aᵀ Bᵀ.
public final class LoRAAdapter {
    /// A, (r, in): PEFT's `lora_A` (named `….lora_A.weight`).
    public let a: WeightOnly
    /// B, (out, r): PEFT's `lora_B` (named `….lora_B.weight`).
    public let b: WeightOnly
    /// s: alpha / r, or alpha / √r with rsLoRA.
    public let scaling: Float
    /// Dropout probability on the adapter's input while training.
    public let dropout: Float
    /// r, this adapter's rank (after `rank_pattern`).
    public let rank: Int
    /// This adapter's alpha (after `alpha_pattern`).
    public let alpha: Double
    /// DoRA's magnitude vector (out), `lora_magnitude_vector` in PEFT; nil for plain LoRA.
    public var magnitude: WeightOnly?
    /// PiSSA / OLoRA: the adapter's initial A and B, which the base weight had subtracted;
    /// saving converts the adapter to one that applies to the original base (PEFT's
    /// `path_initial_model_for_weight_conversion`).
    public var initialAB: (a: Tensor, b: Tensor)?
    /// DoRA: ‖W_j‖² of the frozen base, computed once.
    var baseNormsSquared: [Float]?

    /// An adapter with rank `r` and alpha `alpha` (the module's, after rank/alpha patterns),
    /// initialized as `config.initWeights` says for the non-mutating kinds (PiSSA and OLoRA
    /// start from `.kaiming` here and are set by `Linear.initializeFromWeight`).
    public init(inFeatures: Int, outFeatures: Int, r: Int, alpha: Double, config: LoRAConfig,
                rng: inout SeededRandom, on backend: Backend) throws {
        rank = r
        self.alpha = alpha
        // kaiming_uniform_(a=√5) on an (r, in) matrix: bound = 1/√in.
        func uniform(_ count: Int, fanIn: Int) -> [Float] {
            let bound = 1 / Double(fanIn).squareRoot()
            return (0..<count).map { _ in Float((rng.nextUnit() * 2 - 1) * bound) }
        }
        let aValues: [Float]
        if config.initWeights == .gaussian {
            aValues = (0..<(r * inFeatures)).map { _ in Float(rng.nextNormal() / Double(r)) }
        } else {
            aValues = uniform(r * inFeatures, fanIn: inFeatures)
        }
        a = WeightOnly(Parameter(try Tensor(aValues, shape: [r, inFeatures], on: backend), trainable: true))
        let bTensor = config.initWeights == .random
            ? try Tensor(uniform(outFeatures * r, fanIn: r), shape: [outFeatures, r], on: backend)
            : try Tensor.zeros([outFeatures, r], on: backend)
        b = WeightOnly(Parameter(bTensor, trainable: true))
        scaling = config.scaling(r: r, alpha: alpha)
        dropout = Float(config.dropout)
    }

    /// An adapter with the config's default rank and alpha.
    /// - Parameters:
    ///   - inFeatures: The layer's input width.
    ///   - outFeatures: The layer's output width.
    ///   - config: The LoRA settings.
    ///   - rng: The random stream the initialization draws from.
    ///   - backend: The device the adapter lives on.
    /// - Throws: When allocation fails.
    public convenience init(inFeatures: Int, outFeatures: Int, config: LoRAConfig, rng: inout SeededRandom, on backend: Backend) throws {
        try self.init(inFeatures: inFeatures, outFeatures: outFeatures, r: config.r, alpha: config.alpha, config: config,
                      rng: &rng, on: backend)
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
    /// Folds the adapter into the base weight (W += s·B·A; with DoRA W ← (m/n) ⊙ (W + s·B·A)
    /// by rows) and removes it.
    public func mergeLoRA() throws {
        guard let lora else { return }
        let rowScale = try lora.magnitude.map { m -> [Float] in
            let n = try doraNorms(), mv = try m.weight.value.floats()
            return zip(mv, n).map { $1 > 0 ? $0 / $1 : 0 }
        }
        if quantized != nil { try dequantize() }  // QLoRA: merge into the dequantized base
        var w = try weight.value.floats()
        let d = try lora.delta()
        for i in w.indices { w[i] += d[i] }
        if let rowScale {
            for j in 0..<outFeatures { for i in 0..<inFeatures { w[j * inFeatures + i] *= rowScale[j] } }
        }
        try weight.value.assign(w)
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
        try config.validate()
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
            let (r, alpha) = try config.rankAndAlpha(for: name)
            linear.lora = try LoRAAdapter(inFeatures: linear.inFeatures, outFeatures: linear.outFeatures, r: r, alpha: alpha,
                                          config: config, rng: &rng, on: linear.weight.value.backend)
            if config.initWeights.mutatesBase { try linear.initializeFromBase(config.initWeights, name: name, rng: &rng) }
            if config.useDoRA { try linear.addDoRAMagnitude() }
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
