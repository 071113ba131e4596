// Generation straight from quantized GGUF blocks: each Linear (and the LM head) can carry its
// weight in the file's block format, and batch-1 decode multiplies by it without a dequantized
// copy in the loop — the way llama.cpp reads each weight once per token, with x quantized to
// integer blocks per product (MatVecActivations). The f32 weights stay for training and for the
// exact path (`LanguageModel.load(..., packedDecode: false)`), which the golden tests compare
// against transformers.

import Foundation
import SFTKernels

/// A weight matrix (rows, cols) in a GGML block format, held by the backend as `PackedBlocks`
/// (made only where `backend.supports(.ggufBlocks)`; elsewhere the model keeps its exact
/// weights and never builds one).
final class PackedMatrix {
    var type: GGMLType { blocks.type }
    var rows: Int { blocks.rows }
    var cols: Int { blocks.cols }
    /// How products read x: `.quantized` (default) rounds it to integer blocks per product
    /// like llama.cpp; `.f32` keeps it exact (see `MatVecActivations`).
    var activations: MatVecActivations = .quantized
    /// The blocks in the backend's memory and layout.
    let blocks: PackedBlocks

    /// Copies `bytes` (GGML rows) into `backend`'s packed form. Throws where the backend does
    /// not support GGUF blocks.
    init(type: GGMLType, rows: Int, cols: Int, bytes: [UInt8], on backend: Backend) throws {
        blocks = try bytes.withUnsafeBytes { try backend.packBlocks(type, rows: rows, cols: cols, bytes: $0) }
    }

    /// y (rows) = W x for each of the `n` rows of x (n, cols), no gradient.
    func apply(_ x: Tensor) throws -> Tensor {
        let n = x.count / cols
        let y = try Tensor(empty: Array(x.shape.dropLast()) + [rows], on: x.backend)
        for r in 0..<n {
            try PackedMatrix.multiply([(self, y.storage.advanced(byBytes: r * rows * 4))],
                                      x: x.storage.advanced(byBytes: r * cols * 4), on: x.backend)
        }
        return y
    }

    /// One product of matrices that share x: y_k (=, +=) W_k x, or SwiGLU of (gate, up) into
    /// the first y; see `Backend.packedMatVec`. x is quantized once for all.
    static func multiply(_ ms: [(PackedMatrix, BufferView?)], x: BufferView, epilogue: MatVecEpilogue = .store,
                         on backend: Backend) throws {
        try backend.packedMatVec(ms.map { PackedProduct($0.0.blocks, y: $0.1) }, x: x, epilogue: epilogue,
                                 activations: ms[0].0.activations)
    }
}

extension Linear {
    /// Whether this call can use the packed weight: inference, few rows, x on the device
    /// that holds the blocks.
    func packedOutput(_ x: Tensor) throws -> Tensor? {
        guard let packed, !Autograd.isEnabled, x.device == packed.blocks.device, x.count / inFeatures <= 4 else { return nil }
        var y = try packed.apply(x)
        if let bias { y = try Ops.add(y, try broadcastRows(bias.value, like: y)) }
        return y
    }
}

func broadcastRows(_ v: Tensor, like y: Tensor) throws -> Tensor {
    let n = y.count / v.count
    let out = try Tensor(empty: y.shape, on: y.backend)
    for r in 0..<n { try y.backend.copy(v.storage, to: out.storage.advanced(byBytes: r * v.count * 4), bytes: v.count * 4) }
    return out
}

extension Module {
    /// Attaches the GGUF blocks of every Linear (and `lmHead`, keyed by its weight name) whose
    /// type has a quantized matrix-vector kernel. Returns how many were attached: none where
    /// the backend does not support GGUF blocks (CUDA): the model then decodes on its exact
    /// (dequantized) weights, an explicit fallback.
    @discardableResult
    public func attachPackedWeights(from source: GGUFWeights) throws -> Int {
        var n = 0
        for (name, module) in namedModules() {
            guard let linear = module as? Linear, source.ggufTensor(for: name + ".weight") != nil else { continue }
            let be = linear.weight.value.backend
            guard be.supports(.ggufBlocks) else { continue }
            let raw = try source.loadRaw(name + ".weight")
            guard raw.shape == [linear.outFeatures, linear.inFeatures], PackedWeights.supported.contains(raw.type.name) else { continue }
            linear.packed = try PackedMatrix(type: raw.type, rows: raw.shape[0], cols: raw.shape[1], bytes: raw.bytes, on: be)
            n += 1
        }
        return n
    }
}

/// A model whose decode can take its LM head in GGUF block form (every family in the zoo).
protocol PackedHeadModel: AnyObject {
    /// The LM head in GGUF block form for packed decode (the embedding's blocks when tied);
    /// `decode` uses it for the last token's logits when set.
    var packedHead: PackedMatrix? { get set }
}

extension CausalLM {
    /// The packed LM head of a model that takes one (`PackedHeadModel`); nil for others.
    var packedLMHead: PackedMatrix? {
        get { (self as? PackedHeadModel)?.packedHead }
        set { (self as? PackedHeadModel)?.packedHead = newValue }
    }

    /// Sets how every packed product of this model reads x (`PackedMatrix.activations`),
    /// the LM head's included.
    public func setPackedActivations(_ activations: MatVecActivations) {
        for (_, module) in namedModules() { (module as? Linear)?.packed?.activations = activations }
        packedLMHead?.activations = activations
    }
}

enum PackedWeights {
    /// GGML types whose quantized matvec is worth using (others fall back to f32 weights).
    static let supported: Set<String> = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16"]
}
