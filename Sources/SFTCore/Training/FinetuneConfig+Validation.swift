// One validation pass over a finetune config before any work (issue: run safety): every numeric
// key is finite and inside its range (the message names the key, the value and the range), and
// combinations that cannot do what was asked are refused (no epochs and no max_steps, evaluation
// or early stopping without eval data, …). `Finetune.run` calls it first; `sftctl finetune`
// therefore fails in milliseconds instead of after loading the model.

import Foundation

extension FinetuneConfig {
    /// Throws `SFTError.config` naming the first key out of range or the first bad combination.
    public func validate() throws {
        func finite(_ key: String, _ v: Double) throws {
            guard v.isFinite else {
                throw SFTError.config(field: key, message: "\(v.isNaN ? "NaN" : "an infinite value") is not allowed")
            }
        }
        func range(_ key: String, _ v: Double, _ lo: Double, _ hi: Double, open lower: Bool = false, openUpper: Bool = false) throws {
            try finite(key, v)
            let okLo = lower ? v > lo : v >= lo, okHi = openUpper ? v < hi : v <= hi
            guard okLo, okHi else {
                let l = lower ? "(" : "[", u = openUpper ? ")" : "]"
                throw SFTError.config(field: key, message: "\(v) is outside \(l)\(lo), \(hi == .infinity ? "∞" : "\(hi)")\(u)")
            }
        }
        func atLeast(_ key: String, _ v: Int?, _ lo: Int) throws {
            if let v, v < lo { throw SFTError.config(field: key, message: "must be at least \(lo), got \(v)") }
        }

        try range("learning_rate", learningRate, 0, .infinity, open: true, openUpper: true)
        try range("eval_split", evalSplit, 0, 1, openUpper: true)
        try range("lora_alpha", loraAlpha, 0, .infinity, open: true, openUpper: true)
        try range("lora_dropout", loraDropout, 0, 1, openUpper: true)
        try range("warmup_ratio", warmupRatio, 0, 1)
        try range("min_lr_ratio", minLRRatio, 0, 1)
        try range("weight_decay", weightDecay, 0, .infinity, openUpper: true)
        try range("adam_beta1", adamBeta1, 0, 1, openUpper: true)
        try range("adam_beta2", adamBeta2, 0, 1, openUpper: true)
        try range("adam_epsilon", adamEpsilon, 0, 1, open: true)
        try range("max_grad_norm", maxGradNorm, 0, .infinity, openUpper: true)
        try range("ddp_bucket_cap_mb", ddpBucketCapMB, 0, 1_000_000, open: true)
        if let r = loraPlusLRRatio { try range("loraplus_lr_ratio", r, 0, .infinity, open: true, openUpper: true) }
        if let e = loraPlusLREmbedding { try range("loraplus_lr_embedding", e, 0, .infinity, open: true, openUpper: true) }
        if let a = neftuneNoiseAlpha { try range("neftune_noise_alpha", a, 0, .infinity, openUpper: true) }
        for (k, a) in alphaPattern { try range("alpha_pattern['\(k)']", a, 0, .infinity, open: true, openUpper: true) }

        try atLeast("lora_r", loraR, 1)
        for (k, r) in rankPattern { try atLeast("rank_pattern['\(k)']", r, 1) }
        try atLeast("threads", threads, 1)
        try atLeast("num_train_epochs", numTrainEpochs, 0)
        try atLeast("per_device_train_batch_size", perDeviceTrainBatchSize, 1)
        try atLeast("gradient_accumulation_steps", gradientAccumulationSteps, 1)
        try atLeast("warmup_steps", warmupSteps, 0)
        try atLeast("logging_steps", loggingSteps, 1)
        try atLeast("eval_steps", evalSteps, 1)
        try atLeast("early_stopping_patience", earlyStoppingPatience, 1)
        try atLeast("save_steps", saveSteps, 1)
        try atLeast("save_total_limit", saveTotalLimit, 1)
        try atLeast("sample_max_new_tokens", sampleMaxNewTokens, 1)
        guard maxSteps == -1 || maxSteps >= 1 else {
            throw SFTError.config(field: "max_steps", message: "must be -1 (run the epochs) or at least 1, got \(maxSteps)")
        }
        guard quantBlockSize >= 16, quantBlockSize <= 4096, quantBlockSize & (quantBlockSize - 1) == 0 else {
            throw SFTError.config(field: "quant_block_size", message: "must be a power of two in [16, 4096], got \(quantBlockSize)")
        }

        // Combinations.
        if numTrainEpochs == 0 && maxSteps == -1 {
            throw SFTError.config(field: "num_train_epochs", message: "0 epochs and no max_steps: nothing would train")
        }
        let hasEval = evalData != nil || evalSplit > 0
        if evalSteps != nil && !hasEval {
            throw SFTError.config(field: "eval_steps", message: "evaluation needs eval data: give eval_data or eval_split")
        }
        if earlyStoppingPatience != nil && !hasEval {
            throw SFTError.config(field: "early_stopping_patience", message: "early stopping needs eval data: give eval_data or eval_split")
        }
        if evalData != nil && evalSplit > 0 {
            throw SFTError.config(field: "eval_split", message: "give eval_data or eval_split, not both")
        }
        if resumeFromCheckpoint != nil && overwriteOutputDir {
            throw SFTError.config(field: "overwrite_output_dir", message: "cannot be combined with resume_from_checkpoint (it would delete the checkpoints to resume from)")
        }
        try validateLoRAOnlyKeys()
    }
}
