// Helpers for the formats tests: fixture paths, a tiny GGUF byte builder (to make malformed
// files on purpose), temporary files, and float comparisons that report the first mismatches.
import Foundation
import XCTest
import SFTCore
import SFTKernels

enum FormatsFixtures {
    static func url(_ name: String) -> URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("formats").appendingPathComponent(name)
    }

    /// Where the fixture files live in the source tree (for SFT_WRITE_FIXTURES=1 runs).
    static var sourceFolder: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/formats")
    }

    /// Writes bytes to a fresh temporary file.
    static func temp(_ bytes: [UInt8], name: String = "t.bin") throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-formats-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let u = dir.appendingPathComponent(name)
        try Data(bytes).write(to: u)
        return u
    }
}

/// Builds GGUF bytes field by field, valid or not.
struct GGUFBytes {
    var b: [UInt8] = []
    mutating func u8(_ v: UInt8) { b.append(v) }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { b += $0 } }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); b += Array(s.utf8) }
    mutating func rawStr(_ bytes: [UInt8]) { u64(UInt64(bytes.count)); b += bytes }
    mutating func header(version: UInt32 = 3, tensors: UInt64, kvs: UInt64) {
        b += Array("GGUF".utf8); u32(version); u64(tensors); u64(kvs)
    }
    mutating func tensorInfo(_ name: String, dims: [UInt64], type: UInt32, offset: UInt64) {
        str(name); u32(UInt32(dims.count)); for d in dims { u64(d) }; u32(type); u64(offset)
    }
    mutating func pad(to alignment: Int = 32) { while b.count % alignment != 0 { b.append(0) } }

    /// A valid file: one uint32 key and one f32 tensor of `values` (dims [count]).
    static func valid(values: [Float] = [1, 2, 3, 4]) -> GGUFBytes {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 1)
        g.str("general.architecture"); g.u32(8); g.str("llama")
        g.tensorInfo("t", dims: [UInt64(values.count)], type: 0, offset: 0)
        g.pad()
        for v in values { g.f32(v) }
        return g
    }
}

/// Asserts |a - b| <= atol + rtol * |b| elementwise; prints the first few mismatches.
func assertClose(_ a: [Float], _ b: [Float], rtol: Float = 1e-6, atol: Float = 1e-7, _ what: String,
                 file: StaticString = #filePath, line: UInt = #line) {
    guard a.count == b.count else {
        XCTFail("\(what): \(a.count) values vs \(b.count)", file: file, line: line); return
    }
    var bad: [String] = []
    var nbad = 0
    for i in 0 ..< a.count where !(abs(a[i] - b[i]) <= atol + rtol * abs(b[i])) {
        nbad += 1
        if bad.count < 5 { bad.append("[\(i)] \(a[i]) vs \(b[i])") }
    }
    if nbad > 0 { XCTFail("\(what): \(nbad) of \(a.count) differ: " + bad.joined(separator: ", "), file: file, line: line) }
}

/// Asserts that `body` throws an SFTError whose description contains every one of `parts`.
func assertFormatError<T>(_ parts: [String], file: StaticString = #filePath, line: UInt = #line, _ body: () throws -> T) {
    do {
        _ = try body()
        XCTFail("expected an error containing \(parts)", file: file, line: line)
    } catch let e as SFTError {
        let d = e.description
        for p in parts where !d.contains(p) {
            XCTFail("error '\(d)' does not mention '\(p)'", file: file, line: line)
        }
    } catch {
        XCTFail("expected SFTError, got \(error)", file: file, line: line)
    }
}
