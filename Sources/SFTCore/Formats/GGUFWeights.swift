// GGUF as a WeightSource: GGUF tensor names mapped once to HF checkpoint names, values
// dequantized to f32, and llama.cpp's q/k row permutation undone.
//
// Why the permutation: llama.cpp's HF->GGUF converter reorders the rows of q_proj and k_proj
// (weights and biases) of Llama-architecture models so that ggml's interleaved RoPE, which
// rotates pairs (2i, 2i+1), computes what HF's rotate-half RoPE computes on pairs (i, i+D/2).
// Per head of D rows it stores HF row s*D/2 + i at position 2i + s (s = 0, 1; i < D/2). Here
// we read it back: HF row h*D + s*D/2 + i = GGUF row h*D + 2i + s, with H = n_head for q and
// KV = n_head_kv for k. tools/make_gguf_fixtures.py checks the direction numerically.
import Foundation
import SFTKernels

/// A GGUF file as a ``WeightSource``: tensors under their HF checkpoint names, dequantized to f32,
/// with llama.cpp's q/k row permutation undone and Gemma's 1 + w norms restored. Files of an
/// architecture sft has no table for are read with Llama's names (enough for summaries).
public final class GGUFWeights: WeightSource {
    /// The mapped GGUF file.
    public let file: GGUFFile
    /// HF names of the tensors that map to one, in file order (GGUF tensors with no HF name, such
    /// as `rope_freqs`, are left out).
    public let names: [String]
    /// The family's GGUF layout (names, value transforms, config reader).
    public let architecture: GGUFArchitecture
    /// HF name -> GGUF tensor info.
    private let infos: [String: GGUFTensorInfo]
    /// HF name -> number of heads whose rows must be un-permuted.
    private let permuteHeads: [String: Int]

    /// Opens and maps the GGUF file at `url`; throws what ``GGUFFile/init(url:)`` and
    /// ``init(file:)`` throw.
    public convenience init(url: URL) throws { try self.init(file: GGUFFile(url: url)) }

    /// Maps `file`'s tensor names to HF names.
    /// - Throws: `SFTError.format` naming the file when two tensors map to one HF name, or when the
    ///   head counts needed to undo the q/k permutation are missing or do not divide a tensor's rows.
    public init(file: GGUFFile) throws {
        self.file = file
        let arch = file.metadata["general.architecture"]?.string ?? ""
        // An architecture sft has no table for is read with Llama's names (for summaries);
        // building a model from it fails naming its model_type.
        let a = GGUFArchitecture.all[arch] ?? GGUFArchitecture.unknown(arch)
        architecture = a
        var names: [String] = [], infos: [String: GGUFTensorInfo] = [:], perm: [String: Int] = [:]
        for t in file.tensors {
            guard let hf = a.hfName(t.name) else { continue }
            guard infos[hf] == nil else {
                throw SFTError.format(path: file.url.path, offset: t.offset, message: "tensors map to the same HF name '\(hf)'")
            }
            names.append(hf)
            infos[hf] = t
            guard a.permutesQK, let layer = GGUFWeights.layerIndex(t.name) else { continue }
            let isQ = t.name.hasSuffix(".attn_q.weight") || t.name.hasSuffix(".attn_q.bias")
            let isK = t.name.hasSuffix(".attn_k.weight") || t.name.hasSuffix(".attn_k.bias")
            guard isQ || isK else { continue }
            let key = "\(arch).attention.head_count" + (isK ? "_kv" : "")
            // head counts are usually one number, but may be one per layer
            let value = file.metadata[key] ?? (isK ? file.metadata["\(arch).attention.head_count"] : nil)
            guard let heads = value?.int ?? value?.ints.flatMap({ layer < $0.count ? $0[layer] : nil }), heads > 0 else {
                throw SFTError.format(path: file.url.path, offset: nil, message: "tensor '\(t.name)': metadata \(key) missing, needed to undo the q/k row permutation")
            }
            let rows = t.shape[0]
            guard heads <= rows / 2, rows % (2 * heads) == 0 else {
                throw SFTError.format(path: file.url.path, offset: t.offset, message: "tensor '\(t.name)': \(rows) rows do not split into \(heads) heads of even size")
            }
            perm[hf] = heads
        }
        self.names = names
        self.infos = infos
        self.permuteHeads = perm
    }

    /// GGUF name -> HF name for Llama-architecture files (see `GGUFArchitecture.hfName`).
    public static func hfName(_ gguf: String) -> String? { LlamaConfig.gguf("llama").hfName(gguf) }

    static func layerIndex(_ name: String) -> Int? {
        let p = name.split(separator: ".")
        return p.count >= 2 && p[0] == "blk" ? Int(p[1]) : nil
    }

    /// The GGUF tensor behind an HF name.
    public func ggufTensor(for name: String) -> GGUFTensorInfo? { infos[name] }

    public func shape(of name: String) -> [Int]? { infos[name]?.shape }

    public func releaseResidentPages() { file.releaseResidentPages() }

    public func loadF32(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
        guard let info = infos[name] else { throw SFTError.weights(key: name, message: "no such tensor in \(file.url.path)") }
        if architecture.storesPlusOne(hf: name) {
            // Stored as 1 + w (Gemma): back to the zero-centred w.
            try file.dequantize(info, into: out)
            for i in 0 ..< info.elementCount { out[i] -= 1 }
            return
        }
        guard let heads = permuteHeads[name] else { return try file.dequantize(info, into: out) }
        let values = try file.dequantize(info)
        let rowLen = info.elementCount / info.shape[0]
        values.withUnsafeBufferPointer { src in
            GGUFWeights.unpermuteRows(rows: info.shape[0], heads: heads) { hfRow, ggufRow in
                (out + hfRow * rowLen).update(from: src.baseAddress! + ggufRow * rowLen, count: rowLen)
            }
        }
    }

    /// A tensor's stored (quantized) bytes with rows in HF order, for kernels that compute on
    /// the quantized form (`quantizedMatVec`). Rows are whole blocks, so un-permuting moves
    /// bytes only.
    public func loadRaw(_ name: String) throws -> (type: GGMLType, shape: [Int], bytes: [UInt8]) {
        guard let info = infos[name] else { throw SFTError.weights(key: name, message: "no such tensor in \(file.url.path)") }
        let raw = file.rawBytes(of: info)
        guard let heads = permuteHeads[name] else { return (info.type, info.shape, Array(raw)) }
        let rowBytes = info.byteCount / info.shape[0]
        var out = [UInt8](repeating: 0, count: info.byteCount)
        out.withUnsafeMutableBytes { dst in
            GGUFWeights.unpermuteRows(rows: info.shape[0], heads: heads) { hfRow, ggufRow in
                dst.baseAddress!.advanced(by: hfRow * rowBytes).copyMemory(from: raw.baseAddress! + ggufRow * rowBytes, byteCount: rowBytes)
            }
        }
        return (info.type, info.shape, out)
    }

    /// Calls `body(hfRow, ggufRow)` for every row: within head h of D rows, HF row
    /// h*D + s*D/2 + i was stored at h*D + 2i + s.
    static func unpermuteRows(rows: Int, heads: Int, _ body: (Int, Int) -> Void) {
        let D = rows / heads
        for h in 0 ..< heads {
            for s in 0 ..< 2 {
                for i in 0 ..< D / 2 { body(h * D + s * D / 2 + i, h * D + 2 * i + s) }
            }
        }
    }

    /// An HF-style config from the metadata, read by the architecture's own reader (see
    /// `GGUFArchitecture.readConfig`); a setting it cannot express comes out under its GGUF key,
    /// so the model's strict config decoding fails naming it.
    public var config: [String: JSONValue] {
        architecture.readConfig(file).mapValues(JSONValue.init(foundation:))
    }
}
