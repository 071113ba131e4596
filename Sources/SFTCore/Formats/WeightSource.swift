// The loader seam: a `WeightSource` lists tensors under their HF checkpoint names and loads
// them as f32, whatever the file stores (GGUF blocks, safetensors f16/bf16/f32), or hands out a
// bf16 tensor's stored bytes for a bf16 load (Loading.swift). Models load through this protocol
// only, so one model file serves GGUF files and HF folders alike.
import Foundation
import SFTKernels

/// Named weights in HF checkpoint naming (`model.layers.0.self_attn.q_proj.weight`), loaded
/// as f32 in row-major HF layout.
public protocol WeightSource: AnyObject {
    /// Every tensor name, HF naming.
    var names: [String] { get }
    /// Row-major shape of a tensor, or nil when there is none of that name.
    func shape(of name: String) -> [Int]?
    /// Writes the tensor's values as f32 (row-major for `shape(of:)`) into `into`, which must
    /// hold the product of the shape. Throws `SFTError.weights` naming the tensor.
    func loadF32(_ name: String, into: UnsafeMutablePointer<Float>) throws
    /// The tensor's stored bytes when the file holds it as plain bf16 (row-major for
    /// `shape(of:)`), valid while the source lives, so a bf16 load copies them as they are;
    /// nil for any other stored type (the default), which loads through `loadF32`.
    func storedBF16(_ name: String) -> UnsafeRawBufferPointer?
    /// Gives back the pages of the file that reading the tensors made resident (a mapped file's
    /// pages count in the process's RSS as long as they stay); later reads still work. The
    /// loader calls it once the model holds its weights. Default: nothing to give back.
    func releaseResidentPages()
    /// The model's configuration with HF `config.json` keys (`hidden_size`, `model_type` ...):
    /// the file itself for HF folders, mapped from metadata for GGUF.
    var config: [String: JSONValue] { get }
}

extension WeightSource {
    public func storedBF16(_ name: String) -> UnsafeRawBufferPointer? { nil }
    public func releaseResidentPages() {}

    /// Loads a tensor into a new array (row-major for `shape(of:)`).
    public func loadF32(_ name: String) throws -> [Float] {
        guard let shape = shape(of: name) else { throw SFTError.weights(key: name, message: "no such tensor") }
        let n = shape.reduce(1, *)
        return try [Float](unsafeUninitializedCapacity: n) { buf, count in
            if let p = buf.baseAddress { try loadF32(name, into: p) }
            count = n
        }
    }

    /// Total number of values in all tensors.
    public var parameterCount: Int { names.reduce(0) { $0 + (shape(of: $1)?.reduce(1, *) ?? 0) } }
}

/// Opens a model given a path: a `.gguf` file, or an HF folder (config.json + safetensors).
public func openWeights(at url: URL) throws -> WeightSource {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
        throw SFTError.io(path: url.path, message: "no such file or folder")
    }
    let source: WeightSource
    if isDir.boolValue {
        source = try HFModelFolder(url: url)
    } else if url.pathExtension.lowercased() == "safetensors" {
        source = try SafetensorsWeights(files: [url], config: [:])
    } else {
        source = try GGUFWeights(url: url)
    }
    // The config's sizes are untrusted: checked here, where the file can be named.
    try ModelConfigLimits.check(source.config, source: url.path)
    return source
}
