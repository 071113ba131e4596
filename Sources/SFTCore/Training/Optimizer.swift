// AdamW (Loshchilov & Hutter 2019) over the trainable parameters, with decoupled weight decay
// that skips norms and biases (as HF Trainer does), learning-rate schedules, and gradient
// clipping by global norm. Moments are f32 tensors on the parameter's device.

import Foundation
import SFTKernels

/// AdamW's hyper-parameters (HF TrainingArguments `adam_beta1`, `adam_beta2`, `adam_epsilon`,
/// `weight_decay`).
public struct AdamWConfig: Codable, Equatable, Sendable {
    /// Decay of the first moment (mean of gradients); default 0.9.
    public var beta1: Double = 0.9
    /// Decay of the second moment (mean of squared gradients); default 0.999.
    public var beta2: Double = 0.999
    /// Added to the square root of the second moment before dividing; default 1e-8.
    public var eps: Double = 1e-8
    /// Decoupled weight decay per step, times the learning rate (not applied to norms and biases);
    /// default 0.
    public var weightDecay: Double = 0
    /// A config; each argument sets the property of the same name.
    public init(beta1: Double = 0.9, beta2: Double = 0.999, eps: Double = 1e-8, weightDecay: Double = 0) {
        self.beta1 = beta1; self.beta2 = beta2; self.eps = eps; self.weightDecay = weightDecay
    }
}

/// AdamW (Loshchilov & Hutter 2019) over trainable parameters, with bias-corrected moments kept as
/// f32 tensors on each parameter's device and decoupled weight decay that skips norms and biases
/// (as HF Trainer).
public final class AdamW {
    /// The hyper-parameters.
    public let config: AdamWConfig
    /// The parameters it updates, by name, in the trainer's order.
    public let parameters: [(String, Parameter)]
    /// Moments by parameter name.
    public private(set) var m: [String: Tensor] = [:]
    /// Second moments by parameter name (same shape as the parameter).
    public private(set) var v: [String: Tensor] = [:]
    /// Optimizer steps taken.
    public private(set) var step = 0
    /// Parameter groups: a parameter's learning rate is the schedule's times this (default 1);
    /// LoRA+ gives lora_B its ratio.
    public let lrMultipliers: [String: Double]

    /// `keepsState(i)`: whether this optimizer holds moments for (and updates) parameter i;
    /// false for the parameters other ranks own under `zero_stage: 1`.
    public init(parameters: [(String, Parameter)], config: AdamWConfig, lrMultipliers: [String: Double] = [:],
                keepsState: (Int) -> Bool = { _ in true }) throws {
        self.config = config
        self.parameters = parameters
        self.lrMultipliers = lrMultipliers
        for (i, (name, p)) in parameters.enumerated() where keepsState(i) {
            m[name] = try Tensor.zeros(p.value.shape, on: p.value.backend)
            v[name] = try Tensor.zeros(p.value.shape, on: p.value.backend)
        }
    }

    /// HF Trainer's rule: no weight decay on biases and normalization weights.
    public static func decays(_ name: String) -> Bool {
        !(name.hasSuffix(".bias") || name.contains("norm") || name.contains("layernorm"))
    }

    /// One update at learning rate `lr`. Parameters without a gradient are left alone.
    public func update(lr: Double) throws {
        step += 1
        for (name, p) in parameters {
            guard let g = p.value.grad, let m = m[name], let v = v[name] else { continue }
            let wd = AdamW.decays(name) ? Float(config.weightDecay) : 0
            try p.value.backend.adamw(param: p.value.storage, grad: g.storage, m: m.storage, v: v.storage,
                                      count: p.value.count,
                                      step: AdamWStep(lr: Float(lr * (lrMultipliers[name] ?? 1)), beta1: Float(config.beta1), beta2: Float(config.beta2),
                                                      eps: Float(config.eps), weightDecay: wd, step: step))
        }
    }

    /// Restores the state saved by a checkpoint (the moments this optimizer keeps).
    public func restore(step: Int, m: [String: [Float]], v: [String: [Float]]) throws {
        for (name, _) in parameters where self.m[name] != nil {
            guard let mv = m[name], let vv = v[name] else {
                throw SFTError.weights(key: name, message: "optimizer state missing in the checkpoint")
            }
            try self.m[name]!.assign(mv)
            try self.v[name]!.assign(vv)
        }
        self.step = step
    }
}

/// Clips gradients in place so their global L2 norm is at most `maxNorm`; returns the norm
/// before clipping (as HF does).
@discardableResult
public func clipGradients(_ parameters: [(String, Parameter)], maxNorm: Double) throws -> Double {
    var sumsq = 0.0
    for (_, p) in parameters {
        if let g = p.value.grad { sumsq += try g.backend.sumOfSquares(g.storage, count: g.count) }
    }
    let norm = sumsq.squareRoot()
    if maxNorm > 0, norm > maxNorm {
        let s = Float(maxNorm / (norm + 1e-6))
        for (_, p) in parameters {
            if let g = p.value.grad { try g.backend.scale(alpha: s, g.storage, into: g.storage, count: g.count) }
        }
    }
    return norm
}

/// Learning-rate schedules with linear warmup (names as in HF `lr_scheduler_type`).
public struct LRSchedule: Codable, Equatable, Sendable {
    /// The schedule's shape; raw values are HF's `lr_scheduler_type` names.
    public enum Kind: String, Codable, Sendable, CaseIterable {
        /// The peak rate throughout; warmup is ignored (as HF's `constant`).
        case constant
        /// Linear warmup to the peak, then the peak.
        case constantWithWarmup = "constant_with_warmup"
        /// Linear warmup, then half a cosine from the peak down to `minRatio` × peak at the last step.
        case cosine
        /// Linear warmup, then a straight line from the peak to 0 at the last step.
        case linear
    }
    /// The schedule after warmup.
    public var kind: Kind
    /// The peak learning rate (`learning_rate`).
    public var peak: Double
    /// Optimizer steps of linear warmup from 0 to `peak`.
    public var warmupSteps: Int
    /// Optimizer steps in the whole run (where linear and cosine reach their end).
    public var totalSteps: Int
    /// Floor of cosine decay as a fraction of the peak (cosine_with_min_lr).
    public var minRatio: Double

    /// A schedule; each argument sets the property of the same name.
    public init(kind: Kind, peak: Double, warmupSteps: Int, totalSteps: Int, minRatio: Double = 0) {
        self.kind = kind; self.peak = peak; self.warmupSteps = warmupSteps; self.totalSteps = totalSteps
        self.minRatio = minRatio
    }

    /// Learning rate for optimizer step `step` (0-based, as HF's LambdaLR sees it).
    public func lr(at step: Int) -> Double {
        if kind == .constant { return peak }
        if step < warmupSteps { return peak * Double(step) / Double(max(1, warmupSteps)) }
        switch kind {
        case .constant, .constantWithWarmup:
            return peak
        case .linear:
            let rem = Double(max(0, totalSteps - step)) / Double(max(1, totalSteps - warmupSteps))
            return peak * rem
        case .cosine:
            let progress = Double(step - warmupSteps) / Double(max(1, totalSteps - warmupSteps))
            let c = 0.5 * (1 + Foundation.cos(Double.pi * min(1, progress)))
            return peak * (minRatio + (1 - minRatio) * c)
        }
    }
}
