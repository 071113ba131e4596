// An HF model folder as a WeightSource: config.json, the weights in one model.safetensors or
// sharded per model.safetensors.index.json, and the tokenizer files when present. Values are
// cast to f32 (f16/bf16 checkpoints included). Model config decoding belongs to the model
// files; this gives them the raw `config` dictionary.
import Foundation
import SFTKernels

/// Tensors spread over one or more safetensors files.
public final class SafetensorsWeights: WeightSource {
    /// The mapped safetensors files, in the order given.
    public let files: [SafetensorsFile]
    public let names: [String]
    public let config: [String: JSONValue]
    private let location: [String: (file: Int, info: SafetensorsTensorInfo)]

    /// Opens `files`; a name must appear in one file only. When `expected` (name -> file
    /// name, from an index) is given, every name must be in the file the index says.
    public init(files urls: [URL], config: [String: JSONValue], expected: [String: String]? = nil) throws {
        let files = try urls.map { try SafetensorsFile(url: $0) }
        var loc: [String: (Int, SafetensorsTensorInfo)] = [:], names: [String] = []
        for (i, f) in files.enumerated() {
            for t in f.tensors {
                if let prev = loc[t.name] {
                    throw SFTError.weights(key: t.name, message: "in both \(files[prev.0].url.path) and \(f.url.path)")
                }
                loc[t.name] = (i, t)
                names.append(t.name)
            }
        }
        if let expected {
            for (name, shard) in expected.sorted(by: { $0.key < $1.key }) {
                guard let l = loc[name] else { throw SFTError.weights(key: name, message: "listed in the index for \(shard) but not found in any shard") }
                guard files[l.0].url.lastPathComponent == shard else {
                    throw SFTError.weights(key: name, message: "index says \(shard) but it is in \(files[l.0].url.lastPathComponent)")
                }
            }
        }
        self.files = files
        self.names = names
        self.location = loc
        self.config = config
    }

    public func shape(of name: String) -> [Int]? { location[name]?.info.shape }

    /// The stored dtype of a tensor.
    public func dtype(of name: String) -> SafetensorsDType? { location[name]?.info.dtype }

    public func loadF32(_ name: String, into out: UnsafeMutablePointer<Float>) throws {
        guard let l = location[name] else { throw SFTError.weights(key: name, message: "no such tensor") }
        try files[l.file].loadF32(l.info, into: out)
    }

    public func storedBF16(_ name: String) -> UnsafeRawBufferPointer? {
        guard let l = location[name], l.info.dtype == .bf16 else { return nil }
        return files[l.file].rawBytes(of: l.info)
    }

    public func releaseResidentPages() { for f in files { f.releaseResidentPages() } }
}

/// A Hugging Face model folder.
public final class HFModelFolder: WeightSource {
    /// The folder.
    public let url: URL
    /// config.json, parsed.
    public let config: [String: JSONValue]
    /// tokenizer.json, when present.
    public let tokenizerURL: URL?
    /// tokenizer_config.json (chat template, special tokens), when present.
    public let tokenizerConfigURL: URL?
    /// generation_config.json, when present.
    public let generationConfigURL: URL?
    /// The tensors of model.safetensors, of the shards model.safetensors.index.json lists, or else
    /// of every other *.safetensors file in the folder (adapter_* files excluded).
    public let weights: SafetensorsWeights

    /// Opens the folder at `url`: reads config.json and maps the weights.
    /// - Throws: `SFTError.io` when config.json, a listed shard or every weights file is missing;
    ///   `SFTError.format` naming the file for invalid JSON, a config that is not an object, or an
    ///   index without a usable `weight_map`; `SFTError.weights` naming a tensor that is in two
    ///   shards or not where the index says.
    public init(url: URL) throws {
        self.url = url
        let fm = FileManager.default
        let file = { (name: String) -> URL? in
            let u = url.appendingPathComponent(name)
            return fm.fileExists(atPath: u.path) ? u : nil
        }
        guard let configURL = file("config.json") else {
            throw SFTError.io(path: url.appendingPathComponent("config.json").path, message: "missing: an HF model folder needs config.json")
        }
        let data: Data
        do { data = try Data(contentsOf: configURL) } catch { throw SFTError.io(path: configURL.path, message: "cannot read (\(error.localizedDescription))") }
        let parsed: JSONValue
        do { parsed = try JSONValue(parsing: data, path: configURL.path) } catch let SFTError.format(path, offset, message) {
            throw SFTError.format(path: path, offset: offset, message: "not valid JSON (\(message))")
        }
        guard let pairs = parsed.objectValue else {
            throw SFTError.format(path: configURL.path, offset: nil, message: "top level is not a JSON object")
        }
        config = Dictionary(pairs, uniquingKeysWith: { _, b in b })
        tokenizerURL = file("tokenizer.json")
        tokenizerConfigURL = file("tokenizer_config.json")
        generationConfigURL = file("generation_config.json")

        if let indexURL = file("model.safetensors.index.json") {
            let index = try HFModelFolder.readJSONObject(indexURL)
            guard let map = index["weight_map"] as? [String: String] else {
                throw SFTError.format(path: indexURL.path, offset: nil, message: "weight_map is missing or not a map of names to file names")
            }
            var shards: [String] = []
            for s in Set(map.values).sorted() {
                guard !s.contains("/"), !s.hasPrefix(".") else {
                    throw SFTError.format(path: indexURL.path, offset: nil, message: "shard name '\(s)' is not a plain file name")
                }
                guard file(s) != nil else { throw SFTError.io(path: url.appendingPathComponent(s).path, message: "shard listed in \(indexURL.lastPathComponent) is missing") }
                shards.append(s)
            }
            weights = try SafetensorsWeights(files: shards.map { url.appendingPathComponent($0) }, config: config, expected: map)
        } else if let single = file("model.safetensors") {
            weights = try SafetensorsWeights(files: [single], config: config)
        } else {
            let all = ((try? fm.contentsOfDirectory(atPath: url.path)) ?? [])
                .filter { $0.hasSuffix(".safetensors") && !$0.hasPrefix("adapter_") }.sorted()
            guard !all.isEmpty else { throw SFTError.io(path: url.path, message: "no model.safetensors, index or *.safetensors in the folder") }
            weights = try SafetensorsWeights(files: all.map { url.appendingPathComponent($0) }, config: config)
        }
    }

    public var names: [String] { weights.names }
    public func shape(of name: String) -> [Int]? { weights.shape(of: name) }
    public func loadF32(_ name: String, into out: UnsafeMutablePointer<Float>) throws { try weights.loadF32(name, into: out) }
    public func storedBF16(_ name: String) -> UnsafeRawBufferPointer? { weights.storedBF16(name) }
    public func releaseResidentPages() { weights.releaseResidentPages() }

    /// Reads a JSON file whose top level is an object.
    static func readJSONObject(_ url: URL) throws -> [String: Any] {
        let data: Data
        do { data = try Data(contentsOf: url) } catch { throw SFTError.io(path: url.path, message: "cannot read (\(error.localizedDescription))") }
        let obj: Any
        do { obj = try JSONSerialization.jsonObject(with: data) } catch {
            throw SFTError.format(path: url.path, offset: nil, message: "not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = obj as? [String: Any] else { throw SFTError.format(path: url.path, offset: nil, message: "top level is not a JSON object") }
        return dict
    }
}
