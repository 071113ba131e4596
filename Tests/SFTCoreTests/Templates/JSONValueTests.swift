// JSONValue: parsing keeps key order and int/float apart, follows Python's json module where
// they differ (duplicate keys, NaN), reports errors with byte offsets, refuses hostile depth;
// serializing matches json.dumps byte for byte (expected strings are Python 3.11's output).
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class JSONValueTests: XCTestCase {
    func testParsingKeepsKeyOrderAndNumberKinds() throws {
        let v = try JSONValue(parsing: #"{"z": 1, "a": 1.0, "m": [true, false, null, -0, 1e2, 12345678901234567890], "s": "x"}"#)
        XCTAssertEqual(v.objectValue!.map(\.0), ["z", "a", "m", "s"])
        XCTAssertEqual(v["z"], .int(1))
        XCTAssertEqual(v["a"], .double(1.0))
        XCTAssertEqual(v["m"]?[3], .int(0))
        XCTAssertEqual(v["m"]?[4], .double(100))
        XCTAssertEqual(v["m"]?[5], .double(1.2345678901234567e19))
        XCTAssertNotEqual(JSONValue.int(1), JSONValue.double(1))
    }

    func testStringEscapesAndSurrogatePairs() throws {
        let v = try JSONValue(parsing: #"["a\"b\\c\/d\n\t\u00e9\ud83d\ude00", "\ud800 lone"]"#)
        XCTAssertEqual(v[0]?.stringValue, "a\"b\\c/d\n\té😀")
        XCTAssertEqual(v[1]?.stringValue, "\u{FFFD} lone")
    }

    func testDuplicateKeysKeepFirstPositionAndLastValue() throws {
        let v = try JSONValue(parsing: #"{"a": 1, "b": 2, "a": 3}"#)
        XCTAssertEqual(v.serialized(), #"{"a":3,"b":2}"#)
    }

    func testSerializationMatchesPythonJsonDumps() throws {
        let v = try JSONValue(parsing: #"{"name": "é \"q\" \u0001", "list": [1, 2.5, 1e16, 1e-7, 0.1, true, null, [], {}], "n": {"k": -1}}"#)
        // json.dumps(v, ensure_ascii=False)
        XCTAssertEqual(v.serialized(.python()), #"{"name": "é \"q\" \u0001", "list": [1, 2.5, 1e+16, 1e-07, 0.1, true, null, [], {}], "n": {"k": -1}}"#)
        // json.dumps(v, ensure_ascii=False, indent=2)
        XCTAssertEqual(v.serialized(.python(indent: 2)), """
        {
          "name": "é \\"q\\" \\u0001",
          "list": [
            1,
            2.5,
            1e+16,
            1e-07,
            0.1,
            true,
            null,
            [],
            {}
          ],
          "n": {
            "k": -1
          }
        }
        """)
        // json.dumps(v, ensure_ascii=True, sort_keys=True, separators=(',', ':'))
        var style = JSONValue.Style.compact
        style.sortKeys = true
        style.escapeNonASCII = true
        XCTAssertEqual(try JSONValue(parsing: #"{"b": "é😀", "a": 1}"#).serialized(style), #"{"a":1,"b":"\u00e9\ud83d\ude00"}"#)
    }

    func testPythonFloatRepr() {
        let cases: [(Double, String)] = [(1, "1.0"), (0.1, "0.1"), (1e16, "1e+16"), (1e15, "1000000000000000.0"),
                                         (1.5e-5, "1.5e-05"), (0.0001, "0.0001"), (-0.0, "-0.0"), (123.456, "123.456"),
                                         (Double.leastNonzeroMagnitude, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
                                         (0.30000000000000004, "0.30000000000000004"), (2.5e100, "2.5e+100")]
        for (d, want) in cases { XCTAssertEqual(JSONValue.pythonFloatRepr(d), want) }
        XCTAssertEqual(JSONValue.pythonFloatRepr(.nan), "nan")
        XCTAssertEqual(JSONValue.pythonFloatRepr(-.infinity, json: true), "-Infinity")
    }

    func testErrorsNameTheByteOffset() {
        let bad: [(String, Int)] = [("{\"a\": }", 6), ("[1, 2", 5), ("{\"a\" 1}", 5), ("\"abc", 0), ("[01]", 2), ("tru", 0), ("[1] x", 4)]
        for (text, offset) in bad {
            XCTAssertThrowsError(try JSONValue(parsing: text, path: "doc.json"), text) { e in
                guard case SFTError.format(let path, let off, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(path, "doc.json")
                XCTAssertEqual(off, offset, text)
            }
        }
    }

    func testHostileNestingIsRefused() {
        let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        XCTAssertThrowsError(try JSONValue(parsing: deep))
        XCTAssertNoThrow(try JSONValue(parsing: String(repeating: "[", count: 250) + String(repeating: "]", count: 250)))
    }

    func testCodableRoundTrip() throws {
        let m = ChatMessage(role: "assistant", content: "x", toolCalls: [["function": ["name": "f"]]], extra: ["name": "n"])
        let data = try JSONEncoder().encode(m)
        XCTAssertEqual(try JSONDecoder().decode(ChatMessage.self, from: data), m)
        XCTAssertEqual(try ChatMessage(json: try JSONValue(parsing: data)), m)
    }
}
