// Shared helpers for SFTCore tests: fixtures, the real model (loaded once), tolerances.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

enum Fixtures {
    static var root: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)! }
    static func url(_ path: String) -> URL { root.appendingPathComponent(path) }
    static func json(_ path: String) throws -> [String: Any] {
        let data = try Data(contentsOf: url(path))
        return try JSONSerialization.jsonObject(with: data) as! [String: Any]
    }
}

/// SmolLM2-135M-Instruct loaded once per test process (f32 on CPU, ~540 MB).
enum RealModel {
    private static let lock = NSLock()
    nonisolated(unsafe) private static var cached: LoadedModel?

    static func smolLM2() throws -> LoadedModel {
        lock.lock(); defer { lock.unlock() }
        if let m = cached { return m }
        let url = try Assets.require(Assets.smolLM2)
        let m = try ModelLoader.load(at: url, on: CPUBackend.shared)
        cached = m
        return m
    }
}

// Fixture configs are read with JSONSerialization and edited as [String: Any] in tests; the
// library takes [String: JSONValue]. These convert on the way in.
extension ModelRegistry {
    static func build(config: [String: Any], on backend: Backend) throws -> CausalLM {
        try build(config: HFConfig.values(config), on: backend)
    }
}

extension LlamaConfig {
    init(hf c: [String: Any]) throws { try self.init(hf: HFConfig.values(c)) }
}
extension Gemma3Config {
    init(hf c: [String: Any]) throws { try self.init(hf: HFConfig.values(c)) }
}
extension Gemma2Config {
    init(hf c: [String: Any]) throws { try self.init(hf: HFConfig.values(c)) }
}
extension Phi3Config {
    init(hf c: [String: Any]) throws { try self.init(hf: HFConfig.values(c)) }
}
extension MPTConfig {
    init(hf c: [String: Any]) throws { try self.init(hf: HFConfig.values(c)) }
}

extension SafetensorsWeights {
    convenience init(files urls: [URL], config: [String: Any]) throws {
        try self.init(files: urls, config: HFConfig.values(config))
    }
}
