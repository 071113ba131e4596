// The decoder stack Gemma 2 and Gemma 3 share (HF's modeling_gemma2.py / modeling_gemma3.py):
// embeddings scaled by √C; pre-norm layers with four (1 + w) RMSNorms — input → GQA attention
// (softmax scale query_pre_attn_scalar^-½; Gemma 3: per-head (1 + w) RMSNorm of q and k;
// Gemma 2: attention-logit softcapping) → post-attention norm → residual; pre-feedforward norm
// → GeGLU MLP (gelu_pytorch_tanh(gate) · up) → post-feedforward norm → residual; final (1 + w)
// RMSNorm. Layers are sliding-window or global; the families differ in which RoPE each uses.
//
// Shapes: N = B·T rows, C hidden, H heads, KV kv heads, D head dim, F intermediate, V vocab.

import Foundation
import SFTKernels

/// Gemma's RMSNorm: x / rms(x) · (1 + w), w stored as in the checkpoint (zero-centred).
final class GemmaRMSNorm: Module, RowwiseModule {
    let weight: Parameter
    let eps: Float
    private let one: Tensor

    init(dim: Int, eps: Float, on be: Backend) throws {
        weight = Parameter(try Tensor.zeros([dim], on: be))
        one = try Tensor([Float](repeating: 1, count: dim), shape: [dim], on: be)
        self.eps = eps
    }
    override var localParameters: [(String, Parameter)] { [("weight", weight)] }
    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try Ops.rmsNorm(x, weight: try Ops.add(weight.value, one), eps: eps)
    }
}

/// What one Gemma decoder layer is made of.
struct GemmaLayerSpec {
    var hiddenSize: Int, intermediateSize: Int, numHeads: Int, numKVHeads: Int, headDim: Int
    var rmsNormEps: Float
    var attentionBias: Bool
    var queryPreAttnScalar: Double
    /// Sliding window of the layer; nil: global attention.
    var window: Int?
    /// Per-head (1 + w) RMSNorm of q and k (Gemma 3).
    var qkNorm: Bool
    /// Attention-logit softcapping (Gemma 2); 0 = off.
    var attnSoftcap: Float
}

extension GemmaLayerSpec {
    /// A layer of a Gemma 2 / 3 config: its shared sizes, the window when `layerType` is
    /// "sliding_attention", the attention softcap (nil: off).
    init(_ shape: DecoderShape, attentionBias: Bool, queryPreAttnScalar: Double, layerType: String, slidingWindow: Int,
         qkNorm: Bool, attnSoftcap: Double?) {
        self.init(hiddenSize: shape.hiddenSize, intermediateSize: shape.intermediateSize, numHeads: shape.numHeads,
                  numKVHeads: shape.numKVHeads, headDim: shape.headDim, rmsNormEps: shape.rmsNormEps,
                  attentionBias: attentionBias, queryPreAttnScalar: queryPreAttnScalar,
                  window: layerType == "sliding_attention" ? slidingWindow : nil, qkNorm: qkNorm,
                  attnSoftcap: Float(attnSoftcap ?? 0))
    }

    /// Sizes of a Gemma 2 / 3 model for the memory estimate. Activations per token and layer: the
    /// layer input, four norm outputs, two residual sums and the attention and MLP outputs (8C,
    /// plus the four (1 + w) weights, negligible); q, k, v (Q + 2KVd), q/k after RoPE (Q + KVd)
    /// and, with `qkNorm` (Gemma 3), after their norms too (another Q + KVd); the attention
    /// output (Q) and softmax statistics (H); gate, up and their GeGLU product (3F).
    static func layout(_ shape: DecoderShape, attentionBias: Bool, qkNorm: Bool) -> ModelLayout {
        let C = shape.hiddenSize, F = shape.intermediateSize, D = shape.headDim
        let Q = shape.numHeads * D, KVd = shape.numKVHeads * D
        return ModelLayout(
            layers: shape.numLayers, hidden: C, vocab: shape.vocabSize, tiedEmbeddings: shape.tieWordEmbeddings,
            linears: [.init("q_proj", C, Q, bias: attentionBias), .init("k_proj", C, KVd, bias: attentionBias),
                      .init("v_proj", C, KVd, bias: attentionBias), .init("o_proj", Q, C, bias: attentionBias),
                      .init("gate_proj", C, F), .init("up_proj", C, F), .init("down_proj", F, C)],
            layerNormValues: 4 * C + (qkNorm ? 2 * D : 0), finalNormValues: C,
            activationsPerToken: 8 * C + (Q + 2 * KVd) + (qkNorm ? 2 : 1) * (Q + KVd) + Q + shape.numHeads + 3 * F,
            bf16ActivationsPerToken: 2 * C + (Q + 2 * KVd) + (qkNorm ? 0 : 2 * Q + KVd) + 3 * F)
    }

    /// The keys Gemma 2 and 3 write alike besides `DecoderShape.hf`.
    static func hf(attentionBias: Bool, queryPreAttnScalar: Double, slidingWindow: Int, layerTypes: [String]) -> [String: JSONValue] {
        ["attention_bias": .bool(attentionBias), "hidden_activation": "gelu_pytorch_tanh",
         "query_pre_attn_scalar": .double(queryPreAttnScalar), "sliding_window": .int(slidingWindow),
         "layer_types": .array(layerTypes.map(JSONValue.string))]
    }

    /// Throws unless the sliding window and the softmax scale's `query_pre_attn_scalar` are positive.
    static func checkWindow(_ slidingWindow: Int, queryPreAttnScalar: Double) throws {
        guard slidingWindow > 0 else { throw SFTError.config(field: "sliding_window", message: "\(slidingWindow) must be positive") }
        guard queryPreAttnScalar > 0 else {
            throw SFTError.config(field: "query_pre_attn_scalar", message: "\(queryPreAttnScalar) must be positive")
        }
    }
}

final class GemmaAttention: Module {
    let qProj, kProj, vProj, oProj: Linear
    let qNorm, kNorm: GemmaRMSNorm?
    let H: Int, KV: Int, D: Int
    let window: Int?
    let softmaxScale: Float
    let softcap: Float

    init(_ s: GemmaLayerSpec, on be: Backend) throws {
        H = s.numHeads; KV = s.numKVHeads; D = s.headDim
        window = s.window
        softmaxScale = Float(1 / s.queryPreAttnScalar.squareRoot())
        softcap = s.attnSoftcap
        qProj = try Linear(inFeatures: s.hiddenSize, outFeatures: H * D, bias: s.attentionBias, on: be)
        kProj = try Linear(inFeatures: s.hiddenSize, outFeatures: KV * D, bias: s.attentionBias, on: be)
        vProj = try Linear(inFeatures: s.hiddenSize, outFeatures: KV * D, bias: s.attentionBias, on: be)
        oProj = try Linear(inFeatures: H * D, outFeatures: s.hiddenSize, bias: s.attentionBias, on: be)
        qNorm = s.qkNorm ? try GemmaRMSNorm(dim: D, eps: s.rmsNormEps, on: be) : nil
        kNorm = s.qkNorm ? try GemmaRMSNorm(dim: D, eps: s.rmsNormEps, on: be) : nil
    }

    override var children: [(String, Module)] {
        var c: [(String, Module)] = [("q_proj", qProj), ("k_proj", kProj), ("v_proj", vProj), ("o_proj", oProj)]
        if let qNorm, let kNorm { c += [("q_norm", qNorm), ("k_norm", kNorm)] }
        return c
    }

    private func qkv(_ x: Tensor, positions: Tensor, rope: LayerRope) throws -> (Tensor, Tensor, Tensor) {
        let N = x.shape[0]
        var q = try qProj(x), k = try kProj(x)
        if let qNorm, let kNorm {   // (N·H, D) rows normed
            q = try qNorm(q.reshaped([N * H, D])).reshaped([N, H * D])
            k = try kNorm(k.reshaped([N * KV, D])).reshaped([N, KV * D])
        }
        let v = try vProj(x)                                                           // (N, KV·D)
        q = try Ops.rope(q, positions: positions, invFreq: rope.invFreq, heads: H)
        k = try Ops.rope(k, positions: positions, invFreq: rope.invFreq, heads: KV)
        return (q, k, v)
    }

    func callAsFunction(_ x: Tensor, _ input: ModelInput, rope: LayerRope) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: input.positions, rope: rope)
        let o = try Ops.attention(q: q, k: k, v: v, docIds: input.docIds, alibi: nil,
                                  shape: AttentionShape(B: input.B, T: input.T, H: H, KV: KV, D: D,
                                                        scale: rope.scale(softmaxScale), window: window, softcap: softcap))
        return try oProj(o)
    }

    func decode(_ x: Tensor, positions: Tensor, rope: LayerRope, cache: KVCache, layer: Int) throws -> Tensor {
        let (q, k, v) = try qkv(x, positions: positions, rope: rope)
        let o = try cache.attend(q: q, k: k, v: v, layer: layer, H: H, KV: KV, D: D, scale: rope.scale(softmaxScale),
                                 window: window, softcap: softcap)
        return try oProj(o)
    }
}

final class GemmaMLP: Module {
    let gateProj, upProj, downProj: Linear

    init(_ s: GemmaLayerSpec, on be: Backend) throws {
        gateProj = try Linear(inFeatures: s.hiddenSize, outFeatures: s.intermediateSize, bias: false, on: be)
        upProj = try Linear(inFeatures: s.hiddenSize, outFeatures: s.intermediateSize, bias: false, on: be)
        downProj = try Linear(inFeatures: s.intermediateSize, outFeatures: s.hiddenSize, bias: false, on: be)
    }
    override var children: [(String, Module)] { [("gate_proj", gateProj), ("up_proj", upProj), ("down_proj", downProj)] }

    func callAsFunction(_ x: Tensor) throws -> Tensor {
        try downProj(try Ops.gelu(try gateProj(x), up: try upProj(x), approximate: true))   // (N, F) → (N, C)
    }
}

final class GemmaDecoderLayer: Module {
    let selfAttn: GemmaAttention
    let mlp: GemmaMLP
    let inputLayernorm, postAttentionLayernorm, preFeedforwardLayernorm, postFeedforwardLayernorm: GemmaRMSNorm

    init(_ s: GemmaLayerSpec, on be: Backend) throws {
        selfAttn = try GemmaAttention(s, on: be)
        mlp = try GemmaMLP(s, on: be)
        inputLayernorm = try GemmaRMSNorm(dim: s.hiddenSize, eps: s.rmsNormEps, on: be)
        postAttentionLayernorm = try GemmaRMSNorm(dim: s.hiddenSize, eps: s.rmsNormEps, on: be)
        preFeedforwardLayernorm = try GemmaRMSNorm(dim: s.hiddenSize, eps: s.rmsNormEps, on: be)
        postFeedforwardLayernorm = try GemmaRMSNorm(dim: s.hiddenSize, eps: s.rmsNormEps, on: be)
    }

    override var children: [(String, Module)] {
        [("self_attn", selfAttn), ("mlp", mlp), ("input_layernorm", inputLayernorm),
         ("post_attention_layernorm", postAttentionLayernorm), ("pre_feedforward_layernorm", preFeedforwardLayernorm),
         ("post_feedforward_layernorm", postFeedforwardLayernorm)]
    }

    func callAsFunction(_ x: Tensor, attention: (Tensor) throws -> Tensor) throws -> Tensor {
        let h = try Ops.add(x, try postAttentionLayernorm(try attention(try inputLayernorm(x))))
        return try Ops.add(h, try postFeedforwardLayernorm(try mlp(try preFeedforwardLayernorm(h))))
    }
}

/// `model.*` of a Gemma checkpoint: embeddings, decoder layers, final norm (the shared
/// DecoderBody), embedded with the √C scale.
typealias GemmaBody = DecoderBody<GemmaDecoderLayer, GemmaRMSNorm>

extension DecoderBody where Layer == GemmaDecoderLayer, Norm == GemmaRMSNorm {
    static func gemma(vocabSize: Int, layers specs: [GemmaLayerSpec], on be: Backend) throws -> GemmaBody {
        let C = specs[0].hiddenSize
        return GemmaBody(embedTokens: try Embedding(vocab: vocabSize, dim: C, on: be),
                         layers: try specs.map { try GemmaDecoderLayer($0, on: be) },
                         norm: try GemmaRMSNorm(dim: C, eps: specs[0].rmsNormEps, on: be))
    }

    /// √C in f32, as transformers scales the embedding.
    var embedScale: Float { Float(Double(embedTokens.weight.value.shape[1]).squareRoot()) }

    /// Final hidden states (N, C); global layers use `ropes.full`, sliding ones `ropes.sliding`.
    func hiddenStates(_ input: ModelInput, ropes: (full: LayerRope, sliding: LayerRope), checkpointing: Bool) throws -> Tensor {
        let x = try Ops.scale(try embedTokens(input.ids, rowLength: input.T), embedScale)          // (N, C)
        return try self(x, checkpointing: checkpointing) { layer, x in
            try layer(x) { try layer.selfAttn($0, input, rope: layer.selfAttn.window == nil ? ropes.full : ropes.sliding) }
        }
    }

    /// Runs `ids` after the cached tokens and returns the last token's final hidden state (1, C).
    func decode(_ ids: [Int32], cache: KVCache, ropes: (full: LayerRope, sliding: LayerRope)) throws -> Tensor {
        let scale = embedScale
        return try decode(ids, cache: cache, embed: { try Ops.scale(try self.embedTokens($0), scale) }) { i, layer, x, positions in
            let rope = layer.selfAttn.window == nil ? ropes.full : ropes.sliding
            return try layer(x) { try layer.selfAttn.decode($0, positions: positions, rope: rope, cache: cache, layer: i) }
        }
    }
}
