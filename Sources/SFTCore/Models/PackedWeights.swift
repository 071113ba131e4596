// Generation straight from quantized GGUF blocks: each Linear (and the LM head) can carry its
// weight in the file's block format, and batch-1 decode multiplies by it without a dequantized
// copy in the loop — the way llama.cpp reads each weight once per token, with x quantized to
// integer blocks per product (MatVecActivations). The f32 weights stay for training and for the
// exact path (`LanguageModel.load(..., packedDecode: false)`), which the golden tests compare
// against transformers.

import Foundation

/// A weight matrix (rows, cols) in a GGML block format.
public final class PackedMatrix {
    public let type: GGMLType
    public let rows: Int
    public let cols: Int
    /// How products read x: `.quantized` (default) rounds it to integer blocks per product
    /// like llama.cpp; `.f32` keeps it exact (see `MatVecActivations`).
    public var activations: MatVecActivations = .quantized
    /// The blocks in memory aligned for the vector loads: GGML rows, or for Q4_0 / Q4_1 / Q8_0
    /// the interleaved layout the integer kernels read fastest (`interleaveForMatVec`).
    let data: UnsafeMutableRawPointer
    let interleaved: Bool

    public init(type: GGMLType, rows: Int, cols: Int, bytes: [UInt8]) {
        self.type = type; self.rows = rows; self.cols = cols
        let laidOut = bytes.withUnsafeBytes { try? interleaveForMatVec(type, $0, rows: rows, cols: cols) } ?? nil
        interleaved = laidOut != nil
        let source = laidOut ?? bytes
        data = UnsafeMutableRawPointer.allocate(byteCount: max(1, source.count), alignment: 64)
        source.withUnsafeBytes { if let b = $0.baseAddress { data.copyMemory(from: b, byteCount: source.count) } }
    }

    deinit { data.deallocate() }

    /// y (rows) = W x for each of the `n` rows of x (n, cols), no gradient.
    func apply(_ x: Tensor) throws -> Tensor {
        let n = x.count / cols
        let y = try Tensor(empty: Array(x.shape.dropLast()) + [rows], on: x.backend)
        for r in 0..<n {
            try PackedMatrix.multiply([(self, y.storage.f32() + r * rows)], x: x.storage.f32() + r * cols,
                                      threads: (x.backend as? CPUBackend)?.threads)
        }
        return y
    }

    /// One product of matrices that share x (host memory): y_k (=, +=) W_k x, or SwiGLU of
    /// (gate, up) into the first y; see `quantizedMatVecs`. x is quantized once for all.
    static func multiply(_ ms: [(PackedMatrix, UnsafeMutablePointer<Float>?)], x: UnsafePointer<Float>,
                         epilogue: MatVecEpilogue = .store, threads: Int?) throws {
        let cols = ms[0].0.cols
        guard ms.allSatisfy({ $0.0.cols == cols }) else {
            throw SFTError.shape(op: "PackedMatrix.multiply", message: "matrices of \(ms.map { $0.0.cols }) columns share one x")
        }
        try quantizedMatVecs(ms.map { QuantizedMatVecOutput($0.0.type, weights: $0.0.data, rows: $0.0.rows, y: $0.1, interleaved: $0.0.interleaved) },
                             x: x, cols: cols, epilogue: epilogue, activations: ms[0].0.activations, threads: threads)
    }
}

extension Linear {
    /// Whether this call can use the packed weight: inference, few rows, CPU.
    func packedOutput(_ x: Tensor) throws -> Tensor? {
        guard let packed, !Autograd.isEnabled, x.device == .cpu, x.count / inFeatures <= 4 else { return nil }
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
    /// type has a quantized matrix-vector kernel. Returns how many were attached.
    @discardableResult
    public func attachPackedWeights(from source: GGUFWeights) throws -> Int {
        var n = 0
        for (name, module) in namedModules() {
            guard let linear = module as? Linear, source.ggufTensor(for: name + ".weight") != nil else { continue }
            let raw = try source.loadRaw(name + ".weight")
            guard raw.shape == [linear.outFeatures, linear.inFeatures], PackedWeights.supported.contains(raw.type.name) else { continue }
            linear.packed = PackedMatrix(type: raw.type, rows: raw.shape[0], cols: raw.shape[1], bytes: raw.bytes)
            n += 1
        }
        return n
    }
}

extension Module {
    /// Sets how every packed product of this model reads x (`PackedMatrix.activations`),
    /// the LM head's included.
    public func setPackedActivations(_ activations: MatVecActivations) {
        for (_, module) in namedModules() { (module as? Linear)?.packed?.activations = activations }
        (self as? LlamaModel)?.packedLMHead?.activations = activations
    }
}

public enum PackedWeights {
    /// GGML types whose quantized matvec is worth using (others fall back to f32 weights).
    public static let supported: Set<String> = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K", "F16"]
}
