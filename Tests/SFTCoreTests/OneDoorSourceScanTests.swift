// "Backend is the only door to compute" (docs/ARCHITECTURE.md), enforced on the sources:
// nothing under Sources/SFTCore imports the C shim or OpenBLAS, names a concrete backend,
// calls a C kernel, or dereferences buffer memory (BufferView's host pointer accessors
// `.f32()`, `.i32()`, `.u8()`, `.u16()`, `.raw`, Buffer's `.address`). Host data crosses with
// `backend.upload` / `download` (Tensor.floats(), assign, …). The scanner itself is tested on
// planted lines, so a rule that stopped matching would fail here too.
import Foundation
import XCTest

/// The rules and a line scanner (comments are skipped; string literals are not, since naming a
/// backend in a message is a leak too).
enum OneDoorScanner {
    static let rules: [(name: String, pattern: String)] = [
        ("imports the C shim or OpenBLAS", #"^\s*(@_exported\s+|@_implementationOnly\s+)?import\s+(CSFTKernels|COpenBLAS)\b"#),
        ("names a concrete backend", #"\b(CPUBackend|CUDABackend)\b"#),
        ("dereferences buffer memory (host pointer accessor)", #"\.(f32|i32|u8|u16)\(\)"#),
        ("dereferences buffer memory (raw address)", #"\.(raw|address)\b"#),
        ("calls a C kernel", #"\bsft_[A-Za-z0-9_]+\s*\("#),
    ]

    /// The line without its `//` comment (a `//` inside a string literal does not start one).
    static func code(_ line: Substring) -> Substring {
        var inString = false, escaped = false, previous: Character = " "
        for i in line.indices {
            let c = line[i]
            if inString {
                if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
            } else if c == "\"" {
                inString = true
            } else if c == "/" && previous == "/" {
                return line[line.startIndex..<line.index(before: i)]
            }
            previous = inString ? " " : c
        }
        return line
    }

    /// "file:line: rule: text" for every violation in `text`.
    static func violations(in text: String, file: String) -> [String] {
        var out: [String] = []
        var inBlockComment = false
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw
            if inBlockComment {
                guard let end = line.range(of: "*/") else { continue }
                line = line[end.upperBound...]
                inBlockComment = false
            }
            if let start = line.range(of: "/*"), !line[..<start.lowerBound].contains("\"") {
                if let end = line[start.upperBound...].range(of: "*/") {
                    line = line[..<start.lowerBound] + line[end.upperBound...]
                } else {
                    line = line[..<start.lowerBound]
                    inBlockComment = true
                }
            }
            let c = String(code(line))
            for rule in rules where c.range(of: rule.pattern, options: .regularExpression) != nil {
                out.append("\(file):\(n + 1): \(rule.name): \(raw.trimmingCharacters(in: .whitespaces))")
            }
        }
        return out
    }
}

final class OneDoorSourceScanTests: XCTestCase {
    var sftCore: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/SFTCore")
    }

    func testSFTCoreGoesThroughTheBackendOnly() throws {
        let fm = FileManager.default
        guard let walker = fm.enumerator(at: sftCore, includingPropertiesForKeys: nil) else {
            return XCTFail("cannot list \(sftCore.path)")
        }
        var scanned = 0, violations: [String] = []
        for case let url as URL in walker where url.pathExtension == "swift" {
            let relative = "Sources/SFTCore" + url.path.dropFirst(sftCore.path.count)
            violations += OneDoorScanner.violations(in: try String(contentsOf: url, encoding: .utf8), file: relative)
            scanned += 1
        }
        XCTAssertGreaterThan(scanned, 50, "too few SFTCore sources found under \(sftCore.path)")
        XCTAssertTrue(violations.isEmpty, "SFTCore reaches around Backend:\n" + violations.joined(separator: "\n"))
    }

    func testScannerFlagsPlantedLinesAndNothingElse() {
        let planted = """
            import Foundation
            import CSFTKernels
            @_exported import COpenBLAS
            let threads = (be as? CPUBackend)?.threads
            let gpu = try CUDABackend.shared(ordinal: 0)
            let p = x.storage.f32() + 4
            s.id.storage.i32()[0] = id
            let bytes = w.packed.storage.u8()
            let base = t.storage.raw
            let a = t.storage.buffer.address
            let rc = sft_nf4_dequantize(type, packed, absmax, 64, 0, n, y)
            """
        let found = OneDoorScanner.violations(in: planted, file: "Planted.swift")
        XCTAssertEqual(found.map { $0.split(separator: ":")[1] }, ["2", "3", "4", "5", "6", "7", "8", "9", "10", "11"], found.joined(separator: "\n"))
        XCTAssertTrue(found[0].hasPrefix("Planted.swift:2: imports the C shim"), found[0])

        let clean = """
            // The CPU backend (CPUBackend) used to be cast to here: x.storage.f32()
            /* import CSFTKernels
               CUDABackend.shared */ let a = 1
            let url = "https://example.com" // CPUBackend in a comment after a string
            let v = try t.floats()
            let id = ggmlType.rawValue
            let bytes = raw.bindMemory(to: UInt8.self)
            try be.upload(&token, to: s.id.storage, bytes: 4)
            """
        XCTAssertEqual(OneDoorScanner.violations(in: clean, file: "Clean.swift"), [])
        XCTAssertEqual(OneDoorScanner.violations(in: "let s = \"as? CPUBackend\"", file: "S.swift").count, 1,
                       "naming a backend inside a string literal is still a leak")
    }
}
