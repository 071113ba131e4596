// Shared helpers for the export tests: scratch folders (kept for the Python checks in tools/
// when SFT_EXPORT_DIR is set), tiny random models with a real tokenizer, logit comparisons.
import Foundation
import XCTest
import SFTCore
import SFTKernels

enum Scratch {
    /// A fresh folder for `name`. Under $SFT_EXPORT_DIR (kept, for tools/check_*.py) when set,
    /// else a temporary folder that `cleanUp` removes.
    static func folder(_ name: String) throws -> URL {
        let fm = FileManager.default
        let base: URL
        if let keep = ProcessInfo.processInfo.environment["SFT_EXPORT_DIR"], !keep.isEmpty {
            base = URL(fileURLWithPath: keep)
        } else {
            base = fm.temporaryDirectory.appendingPathComponent("sft-export-\(ProcessInfo.processInfo.processIdentifier)")
        }
        let url = base.appendingPathComponent(name)
        try? fm.removeItem(at: url)
        try fm.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    static var keeping: Bool { !(ProcessInfo.processInfo.environment["SFT_EXPORT_DIR"] ?? "").isEmpty }

    static func cleanUp(_ url: URL) {
        guard !keeping else { return }
        try? FileManager.default.removeItem(at: url)
        // The per-process parent goes too once empty (rmdir refuses a folder that is not).
        _ = rmdir(url.deletingLastPathComponent().path)
    }
}

/// Largest |a - b| and where it is.
func maxAbsDiff(_ a: [Float], _ b: [Float]) -> (value: Float, index: Int) {
    precondition(a.count == b.count, "lengths \(a.count) and \(b.count)")
    var m: Float = 0, at = 0
    for i in a.indices where abs(a[i] - b[i]) > m || a[i].isNaN != b[i].isNaN {
        m = a[i].isNaN || b[i].isNaN ? .infinity : abs(a[i] - b[i]); at = i
    }
    return (m, at)
}

func assertClose(_ a: [Float], _ b: [Float], tolerance: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else { return XCTFail("\(what): \(a.count) values vs \(b.count)", file: file, line: line) }
    let d = maxAbsDiff(a, b)
    XCTAssertLessThanOrEqual(d.value, tolerance, "\(what): max |Δ| \(d.value) at \(d.index) (\(a[d.index]) vs \(b[d.index]))",
                             file: file, line: line)
}

enum ExportFixtures {
    /// The byte-level tokenizer fixture (GPT-2 regex, 1004 tokens) and a tiny random Llama whose
    /// vocabulary covers it, bundled as a LanguageModel.
    static func tinyLanguageModel(seed: UInt64 = 3, tied: Bool = false) throws -> LanguageModel {
        let tokURL = Fixtures.url("tokenizers/gpt2")
        let tokenizer = try Tokenizer(url: tokURL)
        let config = LlamaConfig(hiddenSize: 32, intermediateSize: 48, numLayers: 2, numHeads: 4, numKVHeads: 2,
                                 vocabSize: tokenizer.vocabSize, rmsNormEps: 1e-5, ropeTheta: 10000,
                                 tieWordEmbeddings: tied, maxPositionEmbeddings: 256)
        let model = try LlamaModel(config: config, on: CPUBackend.shared)
        var rng = SeededRandom(seed: seed)
        for (name, p) in model.namedParameters() {
            let isNorm = name.contains("norm")
            try p.value.assign((0..<p.value.count).map { _ in isNorm ? Float(1 + 0.1 * rng.nextNormal()) : Float(0.2 * rng.nextNormal()) })
        }
        return LanguageModel(model: model, tokenizer: tokenizer, chatTemplate: nil,
                             source: InMemoryWeights(), url: tokURL)
    }

    static let sampleText = "The quick brown fox jumps over the lazy dog. 12 + 30 = 42, isn't it?"
}

/// A model built in memory: no file behind it.
final class InMemoryWeights: WeightSource {
    var names: [String] { [] }
    func shape(of name: String) -> [Int]? { nil }
    func loadF32(_ name: String, into: UnsafeMutablePointer<Float>) throws { throw SFTError.weights(key: name, message: "in memory") }
    var config: [String: JSONValue] { [:] }
}
