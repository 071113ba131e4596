// Refusing a finetuning run that cannot fit, before its big allocations: the memory estimate
// (MemoryEstimate, from the model's config, batch, sequence length and quantization) against
// the memory still available — MemAvailable from /proc/meminfo on the CPU, the driver's free
// memory on a GPU. It runs twice: before the model is loaded, from its config alone (the
// weights included: a model that cannot even load is refused before it allocates), and after
// the load, before LoRA, data and training allocate (the weights are then resident and only
// the rest — adapters, gradients, optimizer states, activations — must still fit). `skip_memory_check` runs anyway;
// an unknown estimate or available figure skips the check without a word of refusal.
import Foundation
import SFTKernels

enum FinetuneMemoryCheck {
    /// Tokens per micro-batch and LoRA rank past which no memory holds a run (and the estimate's
    /// arithmetic would overflow): 2^26 tokens, rank 2^20.
    static let maxTokensPerMicroBatch = 1 << 26
    static let maxLoRARank = 1 << 20

    /// The model's estimate for this run, or nil when the model has none. Throws naming the knob
    /// when batch × sequence or the LoRA rank is past any memory (with `skip_memory_check`, the
    /// estimate is then nil instead).
    static func estimate(model: CausalLM, quantization: QuantizationConfig?, config: FinetuneConfig, ranks: Int) throws -> MemoryEstimate? {
        try estimate(layout: model.layout, quantization: quantization, config: config, ranks: ranks)
    }

    /// The estimate from the model file's config alone, before loading (nil when the file's
    /// config cannot be read or sized here: loading then reports what is wrong).
    static func estimate(beforeLoading url: URL, quantization: QuantizationConfig?, config: FinetuneConfig, ranks: Int) throws -> MemoryEstimate? {
        guard let source = try? openWeights(at: url), let family = try? ModelRegistry.family(of: source.config),
              let layout = try? family.layout(source.config) else { return nil }
        return try estimate(layout: layout, quantization: quantization, config: config, ranks: ranks)
    }

    static func estimate(layout: ModelLayout, quantization: QuantizationConfig?, config: FinetuneConfig, ranks: Int) throws -> MemoryEstimate? {
        let batch = config.perDeviceTrainBatchSize, sequence = config.dataConfig.maxSeqLength
        let lora = config.method == .full ? nil : config.lora
        let ranksUsed = [lora?.r ?? 1] + (lora.map { Array($0.rankPattern.values) } ?? [])
        let (tokens, overflow) = batch.multipliedReportingOverflow(by: sequence)
        var problem: (String, String)?
        if overflow || tokens > maxTokensPerMicroBatch {
            problem = ("per_device_train_batch_size", "per_device_train_batch_size (\(batch)) × max_seq_length (\(sequence)) is more than "
                       + "\(maxTokensPerMicroBatch) tokens per micro-batch, past what any memory holds")
        } else if let r = ranksUsed.max(), r > maxLoRARank {
            problem = ("lora_r", "LoRA rank \(r) is past what any memory holds (at most \(maxLoRARank))")
        }
        if let (field, message) = problem {
            if config.skipMemoryCheck { return nil }
            throw SFTError.config(field: field, message: message + "; lower it, or set skip_memory_check to run anyway")
        }
        return MemoryEstimate(layout: layout, quantization: quantization, lora: lora, batch: batch, sequence: sequence,
                              checkpointing: config.gradientCheckpointing, optimizerShards: config.zeroStage == 1 ? ranks : 1,
                              precision: config.precision)
    }

    /// Replaces the available-memory figure (tests).
    @TaskLocal static var availableOverride: Int? = nil

    /// Bytes the run can still allocate on `backend`, or nil when unknown.
    static func available(on backend: Backend) -> Int? {
        if let availableOverride { return availableOverride }
        if backend.device == .cpu { return memAvailable() }
        return backend.freeDeviceMemory()
    }

    /// MemAvailable of /proc/meminfo in bytes (Linux), or nil.
    static func memAvailable(meminfo path: String = "/proc/meminfo") -> Int? {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard fields.count >= 2, let kib = Int(fields[1]) else { return nil }
            let unit = fields.count >= 3 ? fields[2].lowercased() : "kb"
            let scale = unit == "kb" ? 1024 : unit == "mb" ? 1 << 20 : unit == "gb" ? 1 << 30 : 1
            let (bytes, o) = kib.multipliedReportingOverflow(by: scale)
            return o ? Int.max : bytes
        }
        return nil
    }

    /// Throws `SFTError.config` when what the run still has to allocate (the estimate less its
    /// already loaded weights) exceeds `available` bytes on `device`; the message names the
    /// estimate, the available memory and the settings that lower the need.
    /// `loaded` false: before loading, the weights count too.
    static func check(_ estimate: MemoryEstimate, available: Int?, device: String, config: FinetuneConfig, loaded: Bool = true) throws {
        guard let available else { return }
        let need = loaded ? max(0, estimate.total - estimate.weights) : estimate.total
        guard need > available else { return }
        func gib(_ b: Int) -> String { String(format: "%.2f GiB", Double(b) / Double(1 << 30)) }
        var knobs = ["per_device_train_batch_size (\(config.perDeviceTrainBatchSize))",
                     "max_seq_length (\(config.dataConfig.maxSeqLength))"]
        if !config.gradientCheckpointing { knobs.append("gradient_checkpointing: true") }
        if config.method == .full { knobs.append("method lora or qlora") } else if config.quantize == nil { knobs.append("quantize nf4 (method qlora)") }
        throw SFTError.config(field: "skip_memory_check",
                              message: (loaded ? "the run needs about \(gib(need)) more memory than its loaded weights"
                                        : "before loading the model: the run needs about \(gib(need)), its weights included")
                                + ", but \(device) has \(gib(available)) available "
                                + "(memory estimate: total \(gib(estimate.total)) = weights \(gib(estimate.weights)) + adapters \(gib(estimate.adapters)) "
                                + "+ gradients \(gib(estimate.gradients)) + optimizer \(gib(estimate.optimizer)) + activations "
                                + "\(gib(estimate.checkpointing ? estimate.activationsCheckpointed : estimate.activations))); "
                                + "lower \(knobs.joined(separator: ", ")), or set skip_memory_check to run anyway")
    }
}
