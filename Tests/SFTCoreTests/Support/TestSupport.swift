// Shared helpers for SFTCore tests: fixtures, the real model (loaded once), tolerances.
import Foundation
import XCTest
import SFTCore

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
