// Rotary position embeddings (Su et al. 2021) of every kind transformers defines for the zoo's
// families: the inverse frequencies θ^(−2i/D) of rotate-half RoPE, reshaped by the scaling kind
// (transformers' `ROPE_INIT_FUNCTIONS` in modeling_rope_utils.py; formulas from the papers):
//
//   default   inv_i = θ^(−2i/D)
//   linear    inv_i / factor                                   (Chen et al. 2023, position interpolation)
//   dynamic   θ' = θ (factor·L/max − (factor − 1))^(D/(D−2)) once the length L passes max (NTK-aware)
//   llama3    low frequencies / factor, high kept, smooth blend between (Llama 3.1)
//   yarn      per-frequency blend of interpolation and extrapolation by a ramp over the
//             rotation counts, and an attention factor 0.1·ln(factor) + 1 (Peng et al. 2023)
//   longrope  inv_i / ext_i with ext = short_factor, or long_factor once L passes the original
//             length, and an attention factor √(1 + ln(factor)/ln(original)) (Phi-3)
//
// The attention factor multiplies cos and sin, i.e. both q and k: the model folds its square
// into the softmax scale. Configs come in two layouts: transformers 4 (`rope_theta` and
// `rope_scaling` at top level) and transformers 5 (`rope_parameters` holding both, possibly one
// dict per layer type); GGUF metadata is mapped to the same struct in GGUFWeights.

import Foundation
import SFTKernels

/// The scaling part of a RoPE configuration (`rope_scaling`, or `rope_parameters` less
/// `rope_theta`). Keys are transformers' snake_case names.
public struct RopeScaling: Codable, Equatable, Sendable {
    /// HF `rope_type` (older configs: `type`): one of `kinds` — "default", "linear", "dynamic",
    /// "llama3", "yarn", "longrope".
    public var ropeType: String
    /// HF `factor`: how much longer than the pretraining length the context is scaled to
    /// (linear, dynamic, llama3, yarn; longrope derives its attention factor from it).
    public var factor: Double?
    /// HF `low_freq_factor` (llama3): wavelengths longer than original length / this are divided by
    /// `factor` in full.
    public var lowFreqFactor: Double?
    /// HF `high_freq_factor` (llama3): wavelengths shorter than original length / this are kept;
    /// those between the two are interpolated.
    public var highFreqFactor: Double?
    /// HF `original_max_position_embeddings`: the pretraining length the scaling is relative to
    /// (llama3, yarn, longrope).
    public var originalMaxPositionEmbeddings: Int?
    /// HF `attention_factor` (yarn, longrope): multiplies q and k after rotation; nil: derived
    /// from `factor` as transformers does.
    public var attentionFactor: Double?
    /// HF `beta_fast` (yarn): rotations per context above which dimensions are extrapolated
    /// (default 32).
    public var betaFast: Double?
    /// HF `beta_slow` (yarn): rotations per context below which dimensions are interpolated
    /// (default 1).
    public var betaSlow: Double?
    /// HF `mscale` (yarn, DeepSeek style): numerator of the derived attention factor.
    public var mscale: Double?
    /// HF `mscale_all_dim` (yarn, DeepSeek style): denominator of the derived attention factor.
    public var mscaleAllDim: Double?
    /// HF `truncate` (yarn): whether the correction range is rounded to whole dimensions (default
    /// true).
    public var truncate: Bool?
    /// HF `short_factor` (longrope): D/2 divisors of the frequencies for sequences within the
    /// original length.
    public var shortFactor: [Double]?
    /// HF `long_factor` (longrope): D/2 divisors of the frequencies for longer sequences.
    public var longFactor: [Double]?
    /// Divisors of each inverse frequency stored by llama.cpp as the `rope_freqs` tensor (its
    /// way of writing Llama 3.1's scaling); sft's own key, never in an HF config.
    public var freqFactors: [Double]?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case ropeType = "rope_type", factor
        case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
        case attentionFactor = "attention_factor", betaFast = "beta_fast", betaSlow = "beta_slow"
        case mscale, mscaleAllDim = "mscale_all_dim", truncate
        case shortFactor = "short_factor", longFactor = "long_factor", freqFactors = "freq_factors"
    }

    /// A scaling from its fields (HF names in each property's documentation); nil fields are
    /// absent from the config.
    /// - Parameters:
    ///   - ropeType: The scaling kind.
    ///   - factor: Context scaling factor.
    ///   - lowFreqFactor: llama3's low-frequency bound.
    ///   - highFreqFactor: llama3's high-frequency bound.
    ///   - originalMaxPositionEmbeddings: The pretraining length.
    ///   - attentionFactor: Explicit attention factor.
    ///   - betaFast: yarn's fast boundary.
    ///   - betaSlow: yarn's slow boundary.
    ///   - mscale: yarn's mscale.
    ///   - mscaleAllDim: yarn's mscale_all_dim.
    ///   - truncate: yarn's truncation switch.
    ///   - shortFactor: longrope's short factors.
    ///   - longFactor: longrope's long factors.
    ///   - freqFactors: llama.cpp's `rope_freqs` divisors.
    public init(ropeType: String, factor: Double? = nil, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
                originalMaxPositionEmbeddings: Int? = nil, attentionFactor: Double? = nil, betaFast: Double? = nil,
                betaSlow: Double? = nil, mscale: Double? = nil, mscaleAllDim: Double? = nil, truncate: Bool? = nil,
                shortFactor: [Double]? = nil, longFactor: [Double]? = nil, freqFactors: [Double]? = nil) {
        self.ropeType = ropeType; self.factor = factor; self.lowFreqFactor = lowFreqFactor
        self.highFreqFactor = highFreqFactor; self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
        self.attentionFactor = attentionFactor; self.betaFast = betaFast; self.betaSlow = betaSlow
        self.mscale = mscale; self.mscaleAllDim = mscaleAllDim; self.truncate = truncate
        self.shortFactor = shortFactor; self.longFactor = longFactor; self.freqFactors = freqFactors
    }

    /// The kinds implemented here.
    public static let kinds: Set<String> = ["default", "linear", "dynamic", "llama3", "yarn", "longrope"]
}

/// θ and the scaling of one RoPE, with the lengths the dynamic kinds depend on.
public struct RopeParameters: Equatable, Sendable {
    /// The base θ: pair i of a head rotates by position · θ^(−2i/D) (HF `rope_theta`).
    public var theta: Double
    /// The long-context scaling; nil: plain RoPE.
    public var scaling: RopeScaling?

    /// - Parameters:
    ///   - theta: The base θ.
    ///   - scaling: The scaling; nil for plain RoPE.
    public init(theta: Double, scaling: RopeScaling?) { self.theta = theta; self.scaling = scaling }

    /// The scaling kind, "default" when there is none.
    public var kind: String { scaling?.ropeType ?? "default" }

    /// Whether the frequencies depend on the length of the sequence being run.
    public var dependsOnLength: Bool { kind == "dynamic" || kind == "longrope" }

    /// Reads the RoPE settings from an HF config in either layout. `layerType` picks one dict
    /// of a per-layer-type `rope_parameters` (Gemma 3: `full_attention`, `sliding_attention`).
    /// Keys inside the RoPE dicts that are not implemented are errors naming them.
    public static func fromHF(_ c: [String: JSONValue], layerType: String? = nil,
                              defaultTheta: Double = 10000) throws -> RopeParameters {
        let topTheta = c["rope_theta"]?.doubleValue
        var dict: [(String, JSONValue)]? = nil
        var field = "rope_scaling"
        if let p = c["rope_parameters"], case .object(let pairs) = p {
            field = "rope_parameters"
            let nested = !pairs.isEmpty && pairs.allSatisfy { if case .object = $0.1 { return true } else { return false } }
            if nested {
                guard let layerType else {
                    throw SFTError.config(field: "rope_parameters", message: "one dict per layer type (\(pairs.map(\.0).joined(separator: ", "))) is not supported by this family")
                }
                guard let inner = p[layerType], case .object(let ip) = inner else {
                    throw SFTError.config(field: "rope_parameters.\(layerType)", message: "missing (the model has layers of type '\(layerType)')")
                }
                field = "rope_parameters.\(layerType)"
                dict = ip
            } else {
                dict = pairs
            }
        } else if let s = c["rope_scaling"], case .object(let pairs) = s {
            dict = pairs
        } else if let s = c["rope_scaling"], !s.isNull {
            throw SFTError.config(field: "rope_scaling", message: "expected an object or null")
        }
        guard let dict else { return RopeParameters(theta: topTheta ?? defaultTheta, scaling: nil) }
        var theta = topTheta ?? defaultTheta
        var scaling = RopeScaling(ropeType: "default")
        for (key, value) in dict {
            let name = "\(field).\(key)"
            func num() throws -> Double {
                guard let d = value.doubleValue else { throw SFTError.config(field: name, message: "expected a number") }
                return d
            }
            func nums() throws -> [Double] {
                guard case .array(let a) = value, let d = Optional(a.compactMap(\.doubleValue)), d.count == a.count else {
                    throw SFTError.config(field: name, message: "expected a list of numbers")
                }
                return d
            }
            if value.isNull { continue }
            switch key {
            case "rope_type", "type":
                guard let s = value.stringValue else { throw SFTError.config(field: name, message: "expected a string") }
                scaling.ropeType = s
            case "rope_theta": theta = try num()
            case "factor": scaling.factor = try num()
            case "low_freq_factor": scaling.lowFreqFactor = try num()
            case "high_freq_factor": scaling.highFreqFactor = try num()
            case "original_max_position_embeddings": scaling.originalMaxPositionEmbeddings = Int(try num())
            case "attention_factor": scaling.attentionFactor = try num()
            case "beta_fast": scaling.betaFast = try num()
            case "beta_slow": scaling.betaSlow = try num()
            case "mscale": scaling.mscale = try num()
            case "mscale_all_dim": scaling.mscaleAllDim = try num()
            case "truncate":
                guard case .bool(let b) = value else { throw SFTError.config(field: name, message: "expected true or false") }
                scaling.truncate = b
            case "short_factor": scaling.shortFactor = try nums()
            case "long_factor": scaling.longFactor = try nums()
            case "freq_factors": scaling.freqFactors = try nums()
            case "partial_rotary_factor":
                guard try num() == 1 else {
                    throw SFTError.config(field: name, message: "partial rotary embeddings are not implemented (only 1.0)")
                }
            default:
                throw SFTError.config(field: name, message: "not implemented (known RoPE keys: \(RopeScaling.CodingKeys.allCases.map(\.rawValue).filter { $0 != "freq_factors" }.joined(separator: ", ")), rope_theta)")
            }
        }
        // Phi-3 keeps the pretraining length at top level; transformers prefers it there.
        if ["llama3", "yarn", "longrope"].contains(scaling.ropeType) {
            if let top = c["original_max_position_embeddings"]?.doubleValue {
                scaling.originalMaxPositionEmbeddings = Int(top)
            } else if scaling.originalMaxPositionEmbeddings == nil {
                scaling.originalMaxPositionEmbeddings = c["max_position_embeddings"]?.doubleValue.map { Int($0) }
            }
        }
        guard RopeScaling.kinds.contains(scaling.ropeType) else {
            throw SFTError.config(field: "\(field).rope_type", message: "'\(scaling.ropeType)' is not implemented (\(RopeScaling.kinds.sorted().joined(separator: ", ")))")
        }
        let plain = scaling.ropeType == "default" && scaling.freqFactors == nil
        return RopeParameters(theta: theta, scaling: plain ? nil : scaling)
    }

    /// Inverse frequencies (D/2) and attention factor, as transformers computes them for a
    /// sequence of `seqLen` tokens (nil: at load, before any sequence).
    public func frequencies(headDim D: Int, maxPositionEmbeddings: Int, seqLen: Int? = nil) throws -> (invFreq: [Float], attentionFactor: Float) {
        guard D > 0, D % 2 == 0 else { throw SFTError.config(field: "head_dim", message: "RoPE needs an even head dim, got \(D)") }
        let half = D / 2
        let exponents = (0..<half).map { Double(2 * $0) / Double(D) }
        var inv = exponents.map { 1 / Foundation.pow(theta, $0) }
        var attention = 1.0
        let s = scaling ?? RopeScaling(ropeType: "default")
        func need<T>(_ v: T?, _ key: String) throws -> T {
            guard let v else { throw SFTError.config(field: "rope_parameters.\(key)", message: "required by rope_type '\(s.ropeType)'") }
            return v
        }
        switch s.ropeType {
        case "default":
            break
        case "linear":
            let factor = try need(s.factor, "factor")
            inv = inv.map { $0 / factor }
        case "dynamic":
            let factor = try need(s.factor, "factor")
            let L = Double(max(seqLen ?? maxPositionEmbeddings, maxPositionEmbeddings))
            let base = theta * Foundation.pow(factor * L / Double(maxPositionEmbeddings) - (factor - 1), Double(D) / Double(D - 2))
            inv = exponents.map { 1 / Foundation.pow(base, $0) }
        case "llama3":
            let factor = try need(s.factor, "factor"), low = try need(s.lowFreqFactor, "low_freq_factor")
            let high = try need(s.highFreqFactor, "high_freq_factor")
            let oldCtx = Double(try need(s.originalMaxPositionEmbeddings, "original_max_position_embeddings"))
            let lowWavelen = oldCtx / low, highWavelen = oldCtx / high
            inv = inv.map { f in
                let wavelen = 2 * Double.pi / f
                if wavelen < highWavelen { return f }
                if wavelen > lowWavelen { return f / factor }
                let smooth = (oldCtx / wavelen - low) / (high - low)
                return (1 - smooth) * f / factor + smooth * f
            }
        case "yarn":
            let original = Double(try need(s.originalMaxPositionEmbeddings, "original_max_position_embeddings"))
            let factor = s.factor ?? Double(maxPositionEmbeddings) / original
            func mscale(_ scale: Double, _ m: Double) -> Double { scale <= 1 ? 1 : 0.1 * m * Foundation.log(scale) + 1 }
            if let a = s.attentionFactor {
                attention = a
            } else if let m = s.mscale, let mAll = s.mscaleAllDim, m != 0, mAll != 0 {
                attention = mscale(factor, m) / mscale(factor, mAll)
            } else {
                attention = mscale(factor, 1)
            }
            let betaFast = s.betaFast ?? 32, betaSlow = s.betaSlow ?? 1
            // The dimension whose wavelength turns `rotations` times over the original length.
            func correctionDim(_ rotations: Double) -> Double {
                Double(D) * Foundation.log(original / (rotations * 2 * Double.pi)) / (2 * Foundation.log(theta))
            }
            var low = correctionDim(betaFast), high = correctionDim(betaSlow)
            if s.truncate ?? true { low = low.rounded(.down); high = high.rounded(.up) }
            low = max(low, 0); high = min(high, Double(D - 1))
            if low == high { high += 0.001 }
            inv = inv.enumerated().map { i, f in
                let ramp = min(max((Double(i) - low) / (high - low), 0), 1)
                let extrapolation = 1 - ramp
                return f / factor * (1 - extrapolation) + f * extrapolation
            }
        case "longrope":
            let original = try need(s.originalMaxPositionEmbeddings, "original_max_position_embeddings")
            let short = try need(s.shortFactor, "short_factor"), long = try need(s.longFactor, "long_factor")
            guard short.count == half, long.count == half else {
                throw SFTError.config(field: "rope_parameters.short_factor", message: "short_factor has \(short.count) and long_factor \(long.count) values, head_dim/2 = \(half)")
            }
            let factor = s.factor ?? Double(maxPositionEmbeddings) / Double(original)
            attention = s.attentionFactor ?? (factor <= 1 ? 1 : (1 + Foundation.log(factor) / Foundation.log(Double(original))).squareRoot())
            let ext = (seqLen ?? 0) > original ? long : short
            inv = inv.enumerated().map { $1 / ext[$0] }
        default:
            throw SFTError.config(field: "rope_parameters.rope_type", message: "'\(s.ropeType)' is not implemented (\(RopeScaling.kinds.sorted().joined(separator: ", ")))")
        }
        if let f = s.freqFactors {
            guard f.count == half else {
                throw SFTError.config(field: "rope_freqs", message: "\(f.count) frequency factors for head_dim/2 = \(half)")
            }
            inv = inv.enumerated().map { $1 / f[$0] }
        }
        return (inv.map(Float.init), Float(attention))
    }
}

/// The RoPE of one attention layer on a device: frequencies made once, or per sequence
/// length for the kinds that depend on it (dynamic, longrope), and the attention factor.
final class RotaryEmbedding {
    let parameters: RopeParameters
    let headDim: Int
    let maxPositionEmbeddings: Int
    /// Frequencies for sequences no longer than the pretraining length, (D/2).
    let invFreq: Tensor
    /// Multiplies q and k after rotation (1 except for yarn and longrope).
    let attentionFactor: Float

    /// Computes the frequencies for sequences within the pretraining length and uploads them.
    /// - Parameters:
    ///   - p: θ and scaling.
    ///   - headDim: D (even).
    ///   - maxPositionEmbeddings: The model's context length.
    ///   - backend: The device the frequencies live on.
    /// - Throws: `SFTError.config` naming the RoPE field when the scaling is incomplete or
    ///   inconsistent with D.
    init(_ p: RopeParameters, headDim: Int, maxPositionEmbeddings: Int, on backend: Backend) throws {
        parameters = p; self.headDim = headDim; self.maxPositionEmbeddings = maxPositionEmbeddings
        let (inv, a) = try p.frequencies(headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings)
        invFreq = try Tensor(inv, shape: [inv.count], on: backend)
        attentionFactor = a
    }

    /// The frequencies for a sequence whose largest position is `maxPosition` (transformers:
    /// `max(position_ids) + 1` is the length).
    func invFreq(maxPosition: Int) throws -> Tensor {
        guard parameters.dependsOnLength else { return invFreq }
        let (inv, _) = try parameters.frequencies(headDim: headDim, maxPositionEmbeddings: maxPositionEmbeddings,
                                                  seqLen: maxPosition + 1)
        return try Tensor(inv, shape: [inv.count], on: invFreq.backend)
    }

    /// The frequencies for the positions of `input`.
    func invFreq(for input: ModelInput) throws -> Tensor {
        guard parameters.dependsOnLength else { return invFreq }
        return try invFreq(maxPosition: Int(try input.positions.ints().max() ?? 0))
    }
}
