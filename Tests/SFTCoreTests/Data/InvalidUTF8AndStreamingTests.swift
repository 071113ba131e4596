// Issue #18 item 7: invalid UTF-8 in a dataset is counted and reported per line (an error with
// strict), and the `sftctl data --json` report is streamed, linear in the size of its samples.
import Foundation
import XCTest
@testable import SFTCore

final class InvalidUTF8AndStreamingTests: XCTestCase {
    func temp(_ bytes: [UInt8], _ name: String) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-utf8-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// Four prompt/completion records; lines 2 and 4 hold invalid bytes (a lone continuation
    /// byte, a truncated 3-byte sequence); line 3 holds a real U+FFFD, which is valid.
    func jsonl() -> [UInt8] {
        var b: [UInt8] = []
        b += Array(#"{"prompt": "a", "completion": "ok"}"#.utf8) + [0x0A]
        b += Array(#"{"prompt": "b"#.utf8) + [0x80] + Array(#"", "completion": "x"}"#.utf8) + [0x0A]
        b += Array(#"{"prompt": "c\#u{FFFD}", "completion": "y"}"#.utf8) + [0x0A]
        b += Array(#"{"prompt": "d", "completion": "z"#.utf8) + [0xE2, 0x82] + Array(#""}"#.utf8) + [0x0A]
        return b
    }

    func testInvalidUTF8IsCountedAndReportedPerLine() throws {
        let url = try temp(jsonl(), "bad.jsonl")
        let ds = try Dataset.load(url)
        XCTAssertEqual(ds.examples.count, 4, "records with bad bytes are kept (bytes read as U+FFFD)")
        XCTAssertEqual(ds.report.invalidUTF8Records, 2)
        XCTAssertEqual(ds.report.invalidUTF8Lines, [2, 4])
        let text = ds.report.description
        XCTAssertTrue(text.contains("warning: 2 records with invalid UTF-8"), text)
        XCTAssertTrue(text.contains("first at lines 2, 4"), text)
        XCTAssertEqual(ds.examples[1].content, .completion(prompt: "b\u{FFFD}", completion: "x"))
    }

    func testStrictRefusesInvalidUTF8NamingTheLine() throws {
        let url = try temp(jsonl(), "bad.jsonl")
        XCTAssertThrowsError(try Dataset.load(url, options: DatasetOptions(strict: true))) { e in
            guard case SFTError.data(let path, let line, let message) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, url.path)
            XCTAssertEqual(line, 2)
            XCTAssertTrue(message.contains("invalid UTF-8"), message)
        }
    }

    func testJSONArrayAndCSVAreCheckedToo() throws {
        let array = Array(#"[{"prompt": "a", "completion": "b"},"#.utf8) + [0x0A]
            + Array(#" {"prompt": "\#u{00E9}", "completion": "b"#.utf8) + [0xC3] + Array(#""}]"#.utf8)
        let a = try Dataset.load(try temp(array, "bad.json"))
        XCTAssertEqual(a.report.invalidUTF8Records, 1)
        XCTAssertEqual(a.report.invalidUTF8Lines, [2])
        let csv = Array("prompt,completion\nok,fine\n".utf8) + Array("\"multi\nline\",".utf8) + [0xFF] + Array("x\n".utf8)
        let c = try Dataset.load(try temp(csv, "bad.csv"))
        XCTAssertEqual(c.report.invalidUTF8Records, 1)
        XCTAssertEqual(c.report.invalidUTF8Lines, [3])
        XCTAssertThrowsError(try Dataset.load(try temp(csv, "bad.csv"), options: DatasetOptions(strict: true)))
        // A clean file reports nothing.
        let clean = try Dataset.load(try temp(Array(#"{"prompt": "\#u{00E9}\#u{FFFD}", "completion": "b"}"#.utf8), "ok.jsonl"))
        XCTAssertEqual(clean.report.invalidUTF8Records, 0)
        XCTAssertFalse(clean.report.description.contains("UTF-8"))
    }

    func testStreamedJSONMatchesFoundationsParse() throws {
        var out: [UInt8] = []
        let w = JSONStreamWriter { out += $0 }
        let value: [String: Any] = ["b": [1, 2.5, true, NSNull(), "q\"\\\n\u{1}/é"] as [Any], "a": ["x": -3], "c": Double.nan]
        try w.value(foundation: value)
        try w.flush()
        XCTAssertEqual(String(decoding: out, as: UTF8.self), #"{"a":{"x":-3},"b":[1,2.5,true,null,"q\"\\\n\u0001/é"],"c":null}"#)
        // The public form: a JSONValue, written in its own key order.
        var typed: [UInt8] = []
        let tw = JSONStreamWriter { typed += $0 }
        try tw.value(["a": ["x": -3], "b": [1, 2.5, true, nil, "q\"\\\n\u{1}/é"], "c": .double(.nan)])
        try tw.flush()
        XCTAssertEqual(typed, out)
        let parsed = try JSONSerialization.jsonObject(with: Data(out)) as? [String: Any]
        XCTAssertEqual((parsed?["b"] as? [Any])?.last as? String, "q\"\\\n\u{1}/é")
    }

    /// What `sftctl data --json` does for one record of `megabytes` MB: seconds taken and bytes written.
    func dataJSON(megabytes: Int) throws -> (seconds: Double, bytes: Int) {
        let words = ["lorem ", "ipsum ", "dolor ", "sit ", "amet, ", "consectetur\n"]
        var text = ""
        text.reserveCapacity(megabytes << 20)
        var k = 0
        while text.utf8.count < megabytes << 20 { text += words[k % words.count]; k += 1 }
        let record = try JSONSerialization.data(withJSONObject: ["prompt": "Summarize:", "completion": text])
        let url = try temp([UInt8](record) + [0x0A], "big.jsonl")
        let t0 = Date()
        let tokenizer = try Tokenizer(url: Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
            .appendingPathComponent("tokenizers/gpt2/tokenizer.json"))
        let config = DataConfig()
        let prepared = try prepareDataset(url, config: config, tokenizer: tokenizer, renderer: nil, keepTextFor: 3)
        let plan = try BatchPlan(examples: prepared.examples, options: try config.batchingOptions())
        var written = 0
        let w = JSONStreamWriter { written += $0.count }
        try prepared.writeJSON(plan: plan, samples: Array(prepared.examples.prefix(3)), template: "none", seconds: 0, to: w)
        XCTAssertGreaterThan(written, megabytes << 20)
        return (Date().timeIntervalSince(t0), written)
    }

    func testDataJSONOfA20MBRecordIsLinear() throws {
        let small = try dataJSON(megabytes: 2)
        let big = try dataJSON(megabytes: 20)
        print("data --json: 2 MB record \(small.seconds) s (\(small.bytes) bytes), 20 MB record \(big.seconds) s (\(big.bytes) bytes)")
        // Ten times the input: about ten times the output and (loosely) the time, never minutes.
        XCTAssertGreaterThan(big.bytes, 8 * small.bytes)
        XCTAssertLessThan(big.seconds, max(1, small.seconds) * 30)
        XCTAssertLessThan(big.seconds, 60)
        // And bounded memory: the process's peak stays far from the 4 GB it once took.
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        XCTAssertLessThan(usage.ru_maxrss / 1024, 3 << 10, "peak RSS \(usage.ru_maxrss / 1024) MiB")
    }
}
