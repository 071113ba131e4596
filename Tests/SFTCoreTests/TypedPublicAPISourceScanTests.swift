// "`Any` leaves the public API" (issue 17, docs/ARCHITECTURE.md "Public API"), enforced on the
// sources: no public or open declaration in SFTCore or SFTKernels takes, returns or stores
// `Any` (`[String: Any]`, `[Any]`, `Any?`, …). JSON crosses the API as `JSONValue`; internals may
// still read Foundation's objects. The scanner is tested on planted declarations, so a rule
// that stopped matching fails here too.
import Foundation
import XCTest

enum PublicAnyScanner {
    /// A declaration that starts with `public` / `open` (after attributes such as `@discardableResult`).
    static let publicDeclaration = #"^\s*(@[A-Za-z_][A-Za-z0-9_]*(\([^)]*\))?\s+)*(public|open)\b"#
    static let anyType = #"\bAny\b"#

    /// "file:line: text" for every public declaration whose signature names `Any`. The signature
    /// runs from `public` to the body's `{`, a stored value's `=`, or the end of the line where its
    /// brackets close, so a parameter list over several lines is read whole.
    static func violations(in text: String, file: String) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var out: [String] = []
        var n = 0
        while n < lines.count {
            let first = String(OneDoorScanner.code(lines[n]))
            guard first.range(of: publicDeclaration, options: .regularExpression) != nil else { n += 1; continue }
            var signature = "", depth = 0, end = n
            scan: while end < lines.count {
                for c in OneDoorScanner.code(lines[end]) {
                    if depth == 0 && c == "{" { break scan }
                    // A stored value's initializer is not its type (a typealias's is).
                    if depth == 0 && c == "=" && signature.range(of: #"\btypealias\b"#, options: .regularExpression) == nil { break scan }
                    if "([<".contains(c) { depth += 1 } else if ")]".contains(c) || (c == ">" && signature.last != "-") {
                        depth = max(0, depth - 1)
                    }
                    signature.append(c)
                }
                signature.append(" ")
                if depth == 0 { break }
                end += 1
            }
            if signature.range(of: anyType, options: .regularExpression) != nil {
                out.append("\(file):\(n + 1): \(lines[n].trimmingCharacters(in: .whitespaces))")
            }
            n = max(n + 1, end + 1)
        }
        return out
    }
}

final class TypedPublicAPISourceScanTests: XCTestCase {
    func testNoPublicDeclarationInTheLibraryNamesAny() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        var scanned = 0, violations: [String] = []
        for target in ["Sources/SFTCore", "Sources/SFTKernels"] {
            let dir = root.appendingPathComponent(target)
            guard let walker = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: nil) else {
                return XCTFail("cannot list \(dir.path)")
            }
            for case let url as URL in walker where url.pathExtension == "swift" {
                let relative = target + url.path.dropFirst(dir.path.count)
                violations += PublicAnyScanner.violations(in: try String(contentsOf: url, encoding: .utf8), file: relative)
                scanned += 1
            }
        }
        XCTAssertGreaterThan(scanned, 80, "too few library sources found under \(root.path)")
        XCTAssertTrue(violations.isEmpty, "public declarations that name Any (use JSONValue or a typed value):\n"
                      + violations.joined(separator: "\n"))
    }

    func testScannerFlagsPlantedDeclarationsAndNothingElse() {
        let planted = """
            public init(peft value: Any?) throws {
            public var jsonObject: [String: Any] {
            @discardableResult public func value(_ v: Any) throws -> Int {
            public init(tokenizerJSON json: JSONValue,
                        config: [String: Any] = [:]) throws {
            open func items() -> [Any] { [] }
            public func each(_ body: (Int) -> Void,
                             _ other: Any) {
            public static var shapes: [String: [String: Any]] { [:] }
            public typealias Object = [String: Any]
            """
        let found = PublicAnyScanner.violations(in: planted, file: "Planted.swift")
        XCTAssertEqual(found.map { $0.split(separator: ":")[1] }, ["1", "2", "3", "4", "6", "7", "9", "10"], found.joined(separator: "\n"))

        let clean = """
            /// Takes Any value — in a comment only.
            public init(peft value: JSONValue?) throws {
                let o: [String: Any] = [:]
            }
            func internalHelper(_ v: Any) {}
            public protocol Backend: AnyObject, Sendable {
            public var json: JSONValue { JSONValue(foundation: ["a": 1] as [String: Any]) }
            public func f(_ b: any Backend) {}
            let s = "public var x: Any"
            public static let caps: [String: Int] = [
                "a": 1, // not Any
            ]
            public static let limit = 1 << 22
            public var config: [String: JSONValue] = JSONValue.values(["a": 1] as [String: Any])
            """
        XCTAssertEqual(PublicAnyScanner.violations(in: clean, file: "Clean.swift"), [])
    }
}
