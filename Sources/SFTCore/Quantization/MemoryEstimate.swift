// A memory estimate for a finetuning run of a Llama-shaped model, printed before training next
// to the measured peak afterwards: frozen weights (4-bit or not), LoRA adapters, gradients,
// AdamW moments, and the activations the autograd tape keeps at the configured batch and
// sequence length, with and without gradient checkpointing.
//
// Activation count per token and decoder layer (what sft's ops save for backward), with C
// hidden, Q = H·D, KVd = KV·D, F intermediate: the two norm outputs and the two residual sums
// (4C), the attention and MLP outputs (2C), q before/after RoPE and the attention output (3Q),
// k before/after RoPE and v (3KVd) plus the attention's softmax statistics (H), gate, up and
// their SwiGLU product (3F); each adapted Linear adds its dropout output (in) and the two
// rank-r intermediates (2r). With checkpointing only each layer's input (C) stays, and one
// layer's tape exists at a time during its recomputation. Estimates, not measurements.

import Foundation

public struct MemoryEstimate: Sendable, CustomStringConvertible {
    /// Bytes of the frozen (or, for full finetuning, trained) base weights as stored.
    public var weights: Int
    /// Bytes the base weights would take in f32 (for comparison).
    public var weightsF32: Int
    public var adapters: Int
    /// Gradient buffers of the trainable parameters (f32).
    public var gradients: Int
    /// AdamW's two f32 moments per trainable parameter.
    public var optimizer: Int
    public var activations: Int
    public var activationsCheckpointed: Int
    public var checkpointing: Bool
    public var summary: String

    /// Total with the configured checkpointing.
    public var total: Int { weights + adapters + gradients + optimizer + (checkpointing ? activationsCheckpointed : activations) }

    /// - Parameters:
    ///   - c: the model's shape.
    ///   - quantization: 4-bit base (every Linear but the LM head), or nil for f32 weights.
    ///   - batch: rows per micro-batch.
    ///   - sequence: tokens per row.
    ///   - checkpointing: gradient checkpointing (one layer's activations at a time).
    ///   - weightBytes: bytes per unquantized weight value (4 on CPU, 2 for bf16 on GPU).
    ///   - lora: adapters on the Linears it targets, or nil for full finetuning.
    ///   - activationBytes: bytes per activation value (4 on CPU, 2 for bf16 on GPU).
    ///   - lossChunk: rows of logits the fused LM-head loss holds at once.
    ///   - optimizerShards: ranks the AdamW moments are split over (`zero_stage: 1`); the
    ///     estimate is then per rank.
    public init(config c: LlamaConfig, quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                checkpointing: Bool, weightBytes: Int = 4, activationBytes: Int = 4, lossChunk: Int = 256,
                optimizerShards: Int = 1) {
        let C = c.hiddenSize, F = c.intermediateSize, L = c.numLayers, V = c.vocabSize
        let Q = c.numHeads * c.headDim, KVd = c.numKVHeads * c.headDim
        // (name, in, out) of each Linear in one decoder layer.
        let linears: [(String, Int, Int)] = [("q_proj", C, Q), ("k_proj", C, KVd), ("v_proj", C, KVd), ("o_proj", Q, C),
                                             ("gate_proj", C, F), ("up_proj", C, F), ("down_proj", F, C)]
        let linearValues = L * linears.reduce(0) { $0 + $1.1 * $1.2 }
        let otherValues = V * C + (c.tieWordEmbeddings ? 0 : V * C) + (2 * L + 1) * C
        weightsF32 = (linearValues + otherValues) * 4
        if let q = quantization {
            // Packed codes (½ byte per value) plus the scales per block.
            let blocks = Double(linearValues) / Double(q.blockSize)
            let scaleBytes = q.doubleQuant ? blocks * (1 + 4.0 / 256) : blocks * 4
            weights = Int(Double(linearValues) / 2 + scaleBytes) + otherValues * weightBytes
        } else {
            weights = (linearValues + otherValues) * weightBytes
        }
        var adapterValues = 0, loraActivations = 0
        if let lora {
            for (name, inF, outF) in linears where lora.targetModules.contains("all-linear") || lora.targetModules.contains(name) {
                adapterValues += L * lora.r * (inF + outF)
                loraActivations += (lora.dropout > 0 ? inF : 0) + 2 * lora.r
            }
        }
        adapters = adapterValues * 4
        let trainable = lora == nil ? linearValues + otherValues : adapterValues
        gradients = trainable * 4
        optimizer = (trainable * 8 + optimizerShards - 1) / max(1, optimizerShards)
        let tokens = batch * sequence
        let perLayer = 6 * C + 3 * Q + 3 * KVd + c.numHeads + 3 * F + loraActivations
        let head = tokens * 2 * C + min(lossChunk, tokens) * V      // final norm in/out, one logits chunk
        activations = (L * perLayer * tokens + head) * activationBytes
        activationsCheckpointed = ((L * C + perLayer) * tokens + head) * activationBytes
        self.checkpointing = checkpointing
        let method = quantization.map { "QLoRA \($0.type.rawValue)\($0.doubleQuant ? " + double quant" : "")" }
            ?? (lora == nil ? "full finetuning" : "LoRA")
        summary = "\(method), \(L) layers × hidden \(C), batch \(batch) × \(sequence) tokens"
            + (optimizerShards > 1 ? ", per rank with AdamW states sharded over \(optimizerShards) ranks" : "")
    }

    public var description: String {
        func gib(_ b: Int) -> String {
            let g = Double(b) / Double(1 << 30)
            return g >= 0.1 ? "\((g * 100).rounded() / 100) GiB" : "\((Double(b) / Double(1 << 20) * 10).rounded() / 10) MiB"
        }
        let rows: [(String, Int)] = [
            ("weights", weights), ("adapters", adapters), ("gradients", gradients), ("optimizer", optimizer),
            ("activations" + (checkpointing ? " (checkpointed)" : ""), checkpointing ? activationsCheckpointed : activations),
        ]
        var s = "memory estimate: \(summary)\n"
        for (name, b) in rows { s += "  " + name.padding(toLength: 28, withPad: " ", startingAt: 0) + gib(b) + "\n" }
        s += "  " + "total".padding(toLength: 28, withPad: " ", startingAt: 0) + gib(total) + "\n"
        s += "  (weights in f32: \(gib(weightsF32)); activations \(checkpointing ? "without" : "with") checkpointing: "
            + "\(gib(checkpointing ? activations : activationsCheckpointed)))"
        return s
    }
}
