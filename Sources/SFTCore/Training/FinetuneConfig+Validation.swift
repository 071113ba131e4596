// One validation pass over a finetune config before any work (issue: run safety): every numeric
// key is inside its range (declared in the key table, FinetuneConfigKeys.swift; the message names
// the key, the value and the range; numbers are finite when read), and combinations that cannot do what was asked are refused (no epochs and no max_steps, evaluation
// or early stopping without eval data, …). `Finetune.run` calls it first; `sftctl finetune`
// therefore fails in milliseconds instead of after loading the model.

import Foundation
import SFTKernels

extension FinetuneConfig {
    /// Throws `SFTError.config` naming the first key out of range or the first bad combination.
    public func validate() throws {
        try checkRanges()   // each key's range, from the key table
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
