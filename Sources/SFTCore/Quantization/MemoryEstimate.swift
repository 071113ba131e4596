// A memory estimate for a finetuning run of any model in the zoo, printed before training next
// to the measured peak afterwards: frozen weights (4-bit or not), LoRA adapters, gradients,
// AdamW moments, and the activations the autograd tape keeps at the configured batch and
// sequence length, with and without gradient checkpointing.
//
// It reads the model's `ModelLayout` (each family writes its own from its config, so a 7B run
// can be estimated without building the model): the Linears of one decoder layer, the other
// parameters, and the activation values one layer keeps per token for backward. Each adapted
// Linear adds its dropout output (in) and the two rank-r intermediates (2r). With checkpointing
// only each layer's input (C) stays, and one layer's tape exists at a time during its
// recomputation. Estimates, not measurements.

import Foundation
import SFTKernels

/// The parameter and activation sizes of a decoder-only model, as the memory estimate counts them.
public struct ModelLayout: Equatable, Sendable {
    /// A Linear of one decoder layer: its HF leaf name (what LoRA's target_modules match), shape and bias.
    public struct LinearShape: Equatable, Sendable {
        /// The HF leaf name, e.g. "q_proj" (what LoRA's `target_modules` match).
        public var name: String
        /// Input width.
        public var inFeatures: Int
        /// Output width.
        public var outFeatures: Int
        /// Whether the Linear has a bias (out values).
        public var bias: Bool
        /// - Parameters:
        ///   - name: The HF leaf name.
        ///   - inFeatures: Input width.
        ///   - outFeatures: Output width.
        ///   - bias: Whether it has a bias.
        public init(_ name: String, _ inFeatures: Int, _ outFeatures: Int, bias: Bool = false) {
            self.name = name; self.inFeatures = inFeatures; self.outFeatures = outFeatures; self.bias = bias
        }
    }
    /// Number of decoder layers.
    public var layers: Int
    /// C, the residual width (and embedding width).
    public var hidden: Int
    /// V, the vocabulary size (rows of the embedding and of the LM head).
    public var vocab: Int
    /// Whether the LM head is the embedding (counted once).
    public var tiedEmbeddings: Bool
    /// The Linears of one decoder layer.
    public var linears: [LinearShape]
    /// Other parameter values of one decoder layer (norms, q/k norms).
    public var layerNormValues: Int
    /// Parameter values outside the layers besides the embedding and LM head (final norm).
    public var finalNormValues: Int
    /// Values one decoder layer keeps per token for backward, adapters excluded.
    public var activationsPerToken: Int
    /// The part of `activationsPerToken` that `precision: bf16` stores bf16: the Linear outputs
    /// and what the ops reading them keep in their type (RoPE, attention, SwiGLU/GeGLU, column
    /// copies); the rest (residual stream, norm outputs, statistics) stays f32.
    public var bf16ActivationsPerToken: Int

    /// - Parameters:
    ///   - layers: Number of decoder layers.
    ///   - hidden: Residual width C.
    ///   - vocab: Vocabulary size V.
    ///   - tiedEmbeddings: Whether the LM head is the embedding.
    ///   - linears: The Linears of one decoder layer.
    ///   - layerNormValues: Other parameter values per layer.
    ///   - finalNormValues: Parameter values outside the layers besides embedding and LM head.
    ///   - activationsPerToken: Values one layer keeps per token for backward.
    ///   - bf16ActivationsPerToken: The part of them stored bf16 in `precision: bf16`.
    public init(layers: Int, hidden: Int, vocab: Int, tiedEmbeddings: Bool, linears: [LinearShape],
                layerNormValues: Int, finalNormValues: Int, activationsPerToken: Int, bf16ActivationsPerToken: Int) {
        self.layers = layers; self.hidden = hidden; self.vocab = vocab; self.tiedEmbeddings = tiedEmbeddings
        self.linears = linears; self.layerNormValues = layerNormValues; self.finalNormValues = finalNormValues
        self.activationsPerToken = activationsPerToken; self.bf16ActivationsPerToken = bf16ActivationsPerToken
    }

    /// Weight values of the decoder layers' Linears (what 4-bit quantization packs).
    public var linearWeightValues: Int { layers * linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures } }
    /// Everything else: embedding, LM head, norms, biases.
    public var otherValues: Int {
        vocab * hidden * (tiedEmbeddings ? 1 : 2) + finalNormValues
            + layers * (layerNormValues + linears.reduce(0) { $0 + ($1.bias ? $1.outFeatures : 0) })
    }
    /// Every parameter value of the model.
    public var parameterCount: Int { linearWeightValues + otherValues }
}

/// An estimate, in bytes, of the device memory a finetuning run takes, by part (printed before
/// training next to the measured peak). Estimates, not measurements.
public struct MemoryEstimate: Sendable, CustomStringConvertible {
    /// Bytes of the frozen (or, for full finetuning, trained) base weights as stored.
    public var weights: Int
    /// Bytes the base weights would take in f32 (for comparison).
    public var weightsF32: Int
    /// Bytes of the LoRA adapters' A and B (f32); 0 for full finetuning.
    public var adapters: Int
    /// Gradient buffers of the trainable parameters (f32).
    public var gradients: Int
    /// AdamW's two f32 moments per trainable parameter.
    public var optimizer: Int
    /// Bytes of the activations the autograd tape keeps for one micro-batch without checkpointing.
    public var activations: Int
    /// Bytes of the activations with gradient checkpointing: each layer's input plus one layer's
    /// tape during its recomputation.
    public var activationsCheckpointed: Int
    /// Whether the run checkpoints (which activation figure `total` counts).
    public var checkpointing: Bool
    /// One line naming the method (full finetuning, LoRA, QLoRA …) and the run's shape.
    public var summary: String

    /// Total with the configured checkpointing.
    public var total: Int { weights + adapters + gradients + optimizer + (checkpointing ? activationsCheckpointed : activations) }

    /// - Parameters:
    ///   - layout: the model's sizes (`CausalLM.layout`, or a config's `layout`).
    ///   - quantization: 4-bit base (every decoder Linear; not the LM head), or nil for f32
    ///     weights (`weightBytes` bytes per value: 4 on CPU, 2 for bf16 on GPU).
    ///   - batch: rows per micro-batch.
    ///   - sequence: tokens per row.
    ///   - checkpointing: gradient checkpointing (one layer's activations at a time).
    ///   - weightBytes: bytes per unquantized weight value (4 on CPU, 2 for bf16 on GPU).
    ///   - lora: adapters on the Linears it targets, or nil for full finetuning.
    ///   - activationBytes: bytes per activation value (4 on CPU, 2 for bf16 on GPU).
    ///   - lossChunk: rows of logits the fused LM-head loss holds at once.
    ///   - optimizerShards: ranks the AdamW moments are split over (`zero_stage: 1`); the
    ///     estimate is then per rank.
    ///   - precision: bf16 stores the frozen Linear weights (LoRA's base, an untied LM head)
    ///     and the layout's `bf16ActivationsPerToken` in 2 bytes (see NN/Precision.swift).
    public init(layout: ModelLayout, quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                checkpointing: Bool, weightBytes: Int = 4, activationBytes: Int = 4, lossChunk: Int = 256,
                optimizerShards: Int = 1, precision: Precision = .f32) {
        let m = layout
        let C = m.hidden, L = m.layers, V = m.vocab
        let linearValues = m.linearWeightValues, otherValues = m.otherValues
        weightsF32 = (linearValues + otherValues) * 4
        if let q = quantization {
            // Packed codes (½ byte per value) plus the scales per block.
            let blocks = Double(linearValues) / Double(q.blockSize)
            let scaleBytes = q.doubleQuant ? blocks * (1 + 4.0 / 256) : blocks * 4
            weights = Int(Double(linearValues) / 2 + scaleBytes) + otherValues * weightBytes
        } else if precision == .bf16, lora != nil {
            // The frozen base: every Linear bf16 (an untied LM head too); embedding, norms, biases as they are.
            let head = m.tiedEmbeddings ? 0 : V * C
            weights = (linearValues + head) * 2 + (otherValues - head) * weightBytes
        } else {
            weights = (linearValues + otherValues) * weightBytes
        }
        var adapterValues = 0, loraActivations = 0
        if let lora {
            for l in m.linears where lora.targetModules.contains("all-linear") || lora.targetModules.contains(l.name) {
                adapterValues += L * lora.r * (l.inFeatures + l.outFeatures)
                loraActivations += (lora.dropout > 0 ? l.inFeatures : 0) + 2 * lora.r
            }
        }
        adapters = adapterValues * 4
        let trainable = lora == nil ? linearValues + otherValues : adapterValues
        gradients = trainable * 4
        optimizer = (trainable * 8 + optimizerShards - 1) / max(1, optimizerShards)
        let tokens = batch * sequence
        // Bytes one layer keeps per token: in bf16 its Linear outputs and their readers' in 2.
        let half = precision == .bf16 ? m.bf16ActivationsPerToken : 0
        let perLayer = (m.activationsPerToken - half + loraActivations) * activationBytes + half * 2
        let head = (tokens * 2 * C + min(lossChunk, tokens) * V) * activationBytes  // final norm in/out, one logits chunk
        activations = L * perLayer * tokens + head
        activationsCheckpointed = (L * C * activationBytes + perLayer) * tokens + head
        self.checkpointing = checkpointing
        let method = quantization.map { "QLoRA \($0.type.rawValue)\($0.doubleQuant ? " + double quant" : "")" }
            ?? (lora == nil ? "full finetuning" : "LoRA")
        summary = "\(method)\(precision == .bf16 ? " in bf16" : ""), \(L) layers × hidden \(C), batch \(batch) × \(sequence) tokens"
            + (optimizerShards > 1 ? ", per rank with AdamW states sharded over \(optimizerShards) ranks" : "")
    }

    /// The estimate for `model` (its `layout`); see `init(layout:...)`.
    public init(model: any CausalLM, quantization: QuantizationConfig?, lora: LoRAConfig?, batch: Int, sequence: Int,
                checkpointing: Bool, weightBytes: Int = 4, activationBytes: Int = 4, lossChunk: Int = 256,
                optimizerShards: Int = 1, precision: Precision = .f32) {
        self.init(layout: model.layout, quantization: quantization, lora: lora, batch: batch, sequence: sequence,
                  checkpointing: checkpointing, weightBytes: weightBytes, activationBytes: activationBytes,
                  lossChunk: lossChunk, optimizerShards: optimizerShards, precision: precision)
    }

    /// A table for the log: the summary line, then weights, adapters, gradients, optimizer,
    /// activations and total in MiB or GiB, one per line.
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
