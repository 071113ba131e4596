// Dataset loading: each format from a small fixture file, bad records skipped and counted at
// the right lines, strict mode errors naming file and line, detection and its ambiguity error,
// field mapping, CSV quoting, cut-off files, record selection, and the real ShareGPT asset.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class DatasetLoadingTests: XCTestCase {
    func load(_ name: String, _ options: DatasetOptions = DatasetOptions()) throws -> Dataset {
        try Dataset.load(DataFixtures.url(name), options: options)
    }

    func skippedLines(_ d: Dataset) -> [Int] { d.report.skipped.map(\.location.line) }

    func testAlpacaJSONArrayIsDetectedAndBadRecordsAreCountedAtTheirLines() throws {
        let d = try load("alpaca.json")
        XCTAssertEqual(d.report.format, .alpaca)
        XCTAssertEqual(d.report.fileFormat, "JSON array")
        XCTAssertEqual(d.report.records, 6)
        XCTAssertEqual(d.examples.count, 4)
        XCTAssertEqual(d.examples.map(\.source.index), [0, 1, 2, 5])
        XCTAssertEqual(d.examples.map(\.source.line), [2, 7, 12, 15])
        XCTAssertEqual(d.examples[1].content, .instruction(instruction: "Translate the sentence into French.",
                                                           input: "The cat sleeps.", output: "Le chat dort."))
        XCTAssertEqual(d.examples[2].content, .instruction(instruction: "Name a prime number.", input: "", output: "Seven."))
        XCTAssertEqual(d.examples[3].messages.first?.content, "Summarize: \"quotes\", commas, and ünïcödé ✓.")
        XCTAssertEqual(d.examples[1].messages, [ChatMessage(role: "user", content: "Translate the sentence into French.\n\nThe cat sleeps.",
                                                            extra: ["instruction": .string("Translate the sentence into French."),
                                                                    "input": .string("The cat sleeps.")]),
                                                ChatMessage(role: "assistant", content: "Le chat dort.")])
        XCTAssertEqual(d.report.skipped.map(\.location), [SourceLocation(line: 13, index: 3), SourceLocation(line: 14, index: 4)])
        XCTAssertEqual(d.report.skipped[0].reason, "missing field: 'output'")
        XCTAssertEqual(d.report.skipped[1].reason, "wrong type: 'output' is not a string")
    }

    func testShareGPTRolesMapAndNonAlternatingConversationsAreSkipped() throws {
        let d = try load("sharegpt.json")
        XCTAssertEqual(d.report.format, .sharegpt)
        XCTAssertEqual(d.report.records, 8)
        XCTAssertEqual(d.examples.map(\.source.line), [2, 8, 26, 36])
        XCTAssertEqual(d.examples[1].messages.map(\.role), ["system", "user", "assistant"])
        XCTAssertEqual(d.examples[2].messages.map(\.role), ["user", "assistant", "user", "assistant"])  // bing, bard
        XCTAssertEqual(d.examples[0].messages[3], ChatMessage(role: "assistant", content: "4."))
        let skipped = d.report.skipped.map { "\($0.location.line) \($0.location.index) \($0.reason)" }
        XCTAssertEqual(skipped, [
            "13 2 no assistant turn",  // its leading assistant turn is dropped, leaving one user turn
            "17 3 roles do not alternate: message 1 is 'user' after 'user'",
            "22 4 empty turn: message 1 (assistant) has no content",
            "32 6 unknown role: 'narrator' in conversations[1]",
        ])
        let kinds = Dictionary(uniqueKeysWithValues: d.report.skippedByReason.map { ($0.reason, $0.count) })
        XCTAssertEqual(kinds, ["roles do not alternate": 1, "no assistant turn": 1, "empty turn": 1, "unknown role": 1])
        XCTAssertEqual(d.report.leadingAssistantTurnsDropped, 1)
        XCTAssertEqual(d.examples[3].messages, [ChatMessage(role: "user", content: "Go on."), ChatMessage(role: "assistant", content: "Done.")])
    }

    func testMessagesJSONLinesCountLinesNotRecordsAndJoinContentParts() throws {
        let d = try load("messages.jsonl")
        XCTAssertEqual(d.report.format, .messages)
        XCTAssertEqual(d.report.fileFormat, "JSON Lines")
        XCTAssertEqual(d.report.records, 7)  // the blank line is not a record
        XCTAssertEqual(d.examples.map(\.source.line), [1, 2, 8])
        XCTAssertEqual(d.examples[0].messages.last?.content, "Hi! 😊")
        XCTAssertEqual(d.examples[1].messages.first?.content, "Part one, part two.")
        let skipped = d.report.skipped.map { "\($0.location.line) \($0.location.index) \($0.reason)" }
        XCTAssertEqual(skipped, [
            "4 2 a tool result must follow an assistant message with tool_calls: message 1 is 'tool' after 'user'",
            "5 3 invalid JSON: unexpected end of record inside an object (line 5)",
            "6 4 wrong type: 'messages' is not a list",
            "7 5 no assistant turn",
        ])
    }

    func testDollyCompletionTextAndGuanacoFormatsAreDetected() throws {
        let dolly = try load("dolly.jsonl")
        XCTAssertEqual(dolly.report.format, .dolly)
        XCTAssertEqual(dolly.examples.first?.content, .instruction(instruction: "When did Virgin Australia start operating?",
                                                                   input: "Virgin Australia commenced services on 31 August 2000.",
                                                                   output: "On 31 August 2000."))
        XCTAssertEqual(dolly.report.skipped.map(\.location.line), [3])

        let completion = try load("completion.jsonl")
        XCTAssertEqual(completion.report.format, .completion)
        XCTAssertEqual(completion.examples.first?.content, .completion(prompt: "The capital of Italy is", completion: " Rome."))
        XCTAssertEqual(completion.report.skipped.map(\.reason), ["empty turn: 'completion' is empty"])

        let text = try load("text.jsonl")
        XCTAssertEqual(text.report.format, .text)
        XCTAssertEqual(text.examples.map(\.text), ["Plain text to learn from, every token of it.", "Second document."])
        XCTAssertEqual(text.report.skipped.map(\.location.line), [3])

        let guanaco = try load("guanaco.jsonl")
        XCTAssertEqual(guanaco.report.format, .guanaco)
        XCTAssertEqual(guanaco.examples.count, 2)
        XCTAssertEqual(guanaco.examples[0].messages, [
            ChatMessage(role: "user", content: "Can you write a haiku about rain?"),
            ChatMessage(role: "assistant", content: "Soft rain on the roof,\nslow drums for a sleeping town,\npuddles hold the sky."),
        ])
        XCTAssertEqual(guanaco.examples[1].messages.map(\.content), ["What is 1+1?", "2.", "And 2+2?", "4."])
        XCTAssertEqual(guanaco.report.skipped.map { "\($0.location.line) \($0.reason)" },
                       ["3 no assistant turn"])
    }

    func testDolphinIsExplicitAndPutsTheInstructionInTheSystemMessage() throws {
        XCTAssertEqual(try load("dolphin.jsonl").report.format, .alpaca)  // same keys: Alpaca unless named
        let d = try load("dolphin.jsonl", DatasetOptions(format: .dolphin))
        XCTAssertEqual(d.examples[0].messages.map(\.role), ["system", "user", "assistant"])
        XCTAssertEqual(d.examples[0].messages[1].content, "What color is the sky?")
        XCTAssertEqual(d.examples[1].messages.map(\.role), ["user", "assistant"])  // empty system prompt left out
    }

    func testCSVQuotedFieldsWithNewlinesAndFieldMapping() throws {
        let d = try load("qa.csv", DatasetOptions(fields: try FieldMapping(parsing: "instruction=question, output=answer")))
        XCTAssertEqual(d.report.fileFormat, "CSV")
        XCTAssertEqual(d.report.format, .alpaca)
        XCTAssertEqual(d.report.records, 4)
        XCTAssertEqual(d.examples.map(\.source.line), [2, 4, 6])
        XCTAssertEqual(d.examples[0].content, .instruction(instruction: "What is RFC 4180?",
                                                           input: "", output: "A CSV spec: fields may be \"quoted\", contain commas, and\r\nspan lines."))
        XCTAssertEqual(d.examples[1].content, .instruction(instruction: "Who wrote it?", input: "", output: "Y. Shafranovich"))
        XCTAssertEqual(d.report.skipped.map { "\($0.location.line) \($0.location.index) \($0.reason)" },
                       ["5 2 CSV row has 1 fields, header has 3"])
    }

    func testFieldMappingMakesUnknownKeysLoadable() throws {
        XCTAssertThrowsError(try load("unknown.jsonl")) { e in
            XCTAssertTrue("\(e)".contains("cannot detect the dataset format from keys [answer, question]"), "\(e)")
            XCTAssertTrue("\(e)".contains("--field"), "\(e)")
        }
        let d = try load("unknown.jsonl", DatasetOptions(fields: FieldMapping(["prompt": "question", "completion": "answer"])))
        XCTAssertEqual(d.report.format, .completion)
        XCTAssertEqual(d.examples[0].content, .completion(prompt: "What is up?", completion: "The sky."))
        XCTAssertThrowsError(try FieldMapping(parsing: "instruction"))
    }

    func testAmbiguousDetectionIsAClearErrorAndAnExplicitFormatResolvesIt() throws {
        XCTAssertThrowsError(try load("ambiguous.jsonl")) { e in
            guard case SFTError.data(let path, let line, let message) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(path.hasSuffix("ambiguous.jsonl"))
            XCTAssertEqual(line, 1)
            XCTAssertTrue(message.contains("ambiguous dataset format"), message)
            XCTAssertTrue(message.contains("alpaca") && message.contains("dolly") && message.contains("--format"), message)
        }
        let d = try load("ambiguous.jsonl", DatasetOptions(format: .dolly))
        XCTAssertEqual(d.examples[0].messages.last?.content, "dolly says")
    }

    func testStrictModeErrorNamesFileAndLineOfTheFirstBadRecord() throws {
        for (file, line) in [("alpaca.json", 13), ("sharegpt.json", 13), ("messages.jsonl", 4), ("qa.csv", 5)] {
            var o = DatasetOptions(strict: true)
            if file == "qa.csv" { o.fields = FieldMapping(["instruction": "question", "output": "answer"]) }
            XCTAssertThrowsError(try load(file, o), file) { e in
                guard case SFTError.data(let path, let l, _) = e else { return XCTFail("\(e)") }
                XCTAssertTrue(path.hasSuffix(file))
                XCTAssertEqual(l, line, file)
                XCTAssertTrue("\(e)".hasPrefix(path + ":\(line): record "), "\(e)")
            }
        }
        XCTAssertNoThrow(try load("dolphin.jsonl", DatasetOptions(format: .dolphin, strict: true)))
    }

    func testCutOffJSONArrayKeepsCompleteRecordsAndReportsTheCut() throws {
        let d = try load("truncated.json")
        XCTAssertEqual(d.examples.count, 1)
        XCTAssertEqual(d.report.records, 1)
        XCTAssertEqual(d.report.truncated, "file ends inside record 1 (line 8): the file is cut off; that record is ignored")
        XCTAssertThrowsError(try load("truncated.json", DatasetOptions(strict: true)))
    }

    func testSelectionTakesTheFirstRecordsOrASeededSubset() throws {
        let first = try load("sharegpt.json", DatasetOptions(selection: .first(2)))
        XCTAssertEqual(first.report.records, 2)
        XCTAssertEqual(first.examples.map(\.source.index), [0, 1])
        XCTAssertNil(first.report.truncated)
        let a = try load("messages.jsonl", DatasetOptions(selection: .sample(3, seed: 7)))
        let b = try load("messages.jsonl", DatasetOptions(selection: .sample(3, seed: 7)))
        XCTAssertEqual(a.report.records, 3)
        let ia = a.examples.map(\.source.index) + a.report.skipped.map(\.location.index)
        XCTAssertEqual(ia, b.examples.map(\.source.index) + b.report.skipped.map(\.location.index))
        XCTAssertEqual(Set(ia).count, 3)
        // Different seeds pick different subsets somewhere among a few tries.
        let subsets = Set((0..<6).map { s in DataShuffle.sample(3, of: 7, seed: UInt64(s)) })
        XCTAssertGreaterThan(subsets.count, 1)
        XCTAssertEqual(try load("sharegpt.json", DatasetOptions(selection: .sample(100, seed: 1))).report.records, 8)
    }

    func testCSVStructuralErrorsNameTheLine() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-data-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("bad.csv")
        try "prompt,completion\na,b\n\"open,c\nd,e\n".write(to: f, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Dataset.load(f)) { e in
            guard case SFTError.data(_, let line, let m) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(line, 3)
            XCTAssertTrue(m.contains("not closed"), m)
        }
        let single = dir.appendingPathComponent("single.json")
        try "{\n  \"data\": [{\"text\": \"a\"}]\n}\n".write(to: single, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Dataset.load(single)) { e in
            guard case SFTError.data(_, let line, let m) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(line, 1)
            XCTAssertTrue(m.contains("no record in the first 3 is a JSON object"), m)
        }
        try "x".write(to: dir.appendingPathComponent("x.txt"), atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try Dataset.load(dir.appendingPathComponent("x.txt")))
        XCTAssertThrowsError(try Dataset.load(dir.appendingPathComponent("missing.json"))) { e in
            guard case SFTError.io = e else { return XCTFail("\(e)") }
        }
    }

    func testRecordParserAgreesWithJSONSerializationOnEscapes() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-json-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let prompts = [#"plain"#, #"tab\tnew\nline \"quoted\" back\\slash \/ solidus"#, #"\u00e9t\u00C9 \ud83d\ude00 emoji"#,
                       #"raw ünïcödé ✓ 😀"#, #"\b\f\r"#]
        var lines = prompts.map { #"{"prompt": ""# + $0 + #"", "completion": "ok", "n": -1.5e3, "b": [true, false, null, {}]}"# }
        lines.append(#"{"prompt": "bad \x escape", "completion": "ok"}"#)
        lines.append(#"{"prompt": "lone \udc00 low", "completion": "ok"}"#)  // JSONSerialization rejects it; we replace it
        lines.append(#"{"prompt": "a", "completion": "b"} trailing"#)
        let f = dir.appendingPathComponent("escapes.jsonl")
        try lines.joined(separator: "\n").write(to: f, atomically: true, encoding: .utf8)
        let d = try Dataset.load(f)
        XCTAssertEqual(d.examples.count, prompts.count + 1)
        XCTAssertEqual(d.examples.last?.content, .completion(prompt: "lone \u{FFFD} low", completion: "ok"))
        for (ex, line) in zip(d.examples.prefix(prompts.count), lines) {
            let ref = try JSONSerialization.jsonObject(with: Data(line.utf8)) as! [String: Any]
            XCTAssertEqual(ex.content, .completion(prompt: ref["prompt"] as! String, completion: "ok"), line)
        }
        XCTAssertEqual(d.report.skipped.map(\.reason), ["invalid JSON: invalid escape '\\x' (line 6)",
                                                       "invalid JSON: unexpected text after the value (line 8)"])
    }

    func testInvalidJSONInAnArrayElementNamesTheLineOfTheFault() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-jsonl-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let f = dir.appendingPathComponent("a.json")
        try "[\n{\"text\": \"a\"},\n{\n  \"text\": \"b\"\n  \"x\": 1\n},\n{\"text\": \"c\"}\n]\n".write(to: f, atomically: true, encoding: .utf8)
        let d = try Dataset.load(f)
        XCTAssertEqual(d.examples.map(\.text), ["a", "c"])
        XCTAssertEqual(d.report.skipped.map(\.description), ["line 3 (record 1): invalid JSON: expected ',' or '}' (line 5)"])
    }

    /// Examples/data: the sample files shipped for users load cleanly, in the format they claim.
    func testExampleSampleFilesLoadWithoutSkips() throws {
        let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Examples/data")
        let expected: [(String, DatasetOptions, DatasetFormat, Int)] = [
            ("alpaca.json", DatasetOptions(), .alpaca, 3), ("dolphin.jsonl", DatasetOptions(format: .dolphin), .dolphin, 3),
            ("sharegpt.json", DatasetOptions(), .sharegpt, 2), ("messages.jsonl", DatasetOptions(), .messages, 3),
            ("dolly.jsonl", DatasetOptions(), .dolly, 3), ("completion.jsonl", DatasetOptions(), .completion, 3),
            ("guanaco.jsonl", DatasetOptions(), .guanaco, 2), ("text.jsonl", DatasetOptions(), .text, 2),
            ("qa.csv", DatasetOptions(fields: FieldMapping(["instruction": "question", "output": "answer"]), strict: true), .alpaca, 2),
        ]
        for (file, options, format, count) in expected {
            var o = options
            o.strict = true
            let d = try Dataset.load(dir.appendingPathComponent(file), options: o)
            XCTAssertEqual(d.report.format, format, file)
            XCTAssertEqual(d.examples.count, count, file)
        }
    }

    /// The real asset (a cut-off 125 MB JSON array): the first 200 records, and a timed full read.
    func testShareGPTAssetFirst200Records() throws {
        guard FileManager.default.fileExists(atPath: Assets.shareGPT.path) else { throw XCTSkip("ShareGPT asset not fetched") }
        let t0 = Date()
        let d = try Dataset.load(Assets.shareGPT, options: DatasetOptions(selection: .first(200)))
        let seconds = Date().timeIntervalSince(t0)
        XCTAssertEqual(d.report.format, .sharegpt)
        XCTAssertEqual(d.report.records, 200)
        XCTAssertEqual(d.examples.count + d.report.skipped.count, 200)
        // Reference counts from tools/sharegpt_first200.py (Python's json + the same rules).
        let reference = try String(contentsOf: DataFixtures.url("sharegpt_first200.txt"), encoding: .utf8)
            .split(separator: "\n").map(String.init)
        XCTAssertEqual("examples \(d.examples.count)", reference[0])
        let skippedLines = d.report.skipped.map { "skip \($0.location.index) \($0.location.line) \(DatasetReport.kind($0.reason))" }
        XCTAssertEqual(skippedLines, reference.filter { $0.hasPrefix("skip ") })
        var roles: [String: Int] = [:]
        for e in d.examples { for m in e.messages { roles[m.role, default: 0] += 1 } }
        let roleLine = "roles " + roles.keys.sorted().map { "\($0)=\(roles[$0]!)" }.joined(separator: " ")
        XCTAssertEqual(roleLine, reference.first { $0.hasPrefix("roles ") })
        XCTAssertLessThan(seconds, 2.0)
        print("ShareGPT first 200 records: \(String(describing: d.report)) in \(Int(seconds * 1000)) ms")
    }

    func testShareGPTAssetFullReadIsFast() throws {
        guard FileManager.default.fileExists(atPath: Assets.shareGPT.path) else { throw XCTSkip("ShareGPT asset not fetched") }
        let t0 = Date()
        let d = try Dataset.load(Assets.shareGPT)
        let seconds = Date().timeIntervalSince(t0)
        let reference = try String(contentsOf: DataFixtures.url("sharegpt_first200.txt"), encoding: .utf8)
        XCTAssertTrue(reference.contains("all_records \(d.report.records)\n"), "records \(d.report.records)")
        XCTAssertTrue(reference.contains("all_examples \(d.examples.count)\n"), "examples \(d.examples.count)")
        XCTAssertNotNil(d.report.truncated)
        XCTAssertLessThan(seconds, 30.0)  // 125 MB: ~0.65 s measured on a quiet 2-core machine; the bound only catches a pathological (quadratic) reader, not speed (BENCHMARKS.md)
        print("ShareGPT full file: \(d.report.records) records, \(d.examples.count) examples in \(Int(seconds * 1000)) ms")
        let t1 = Date()
        let s = try Dataset.load(Assets.shareGPT, options: DatasetOptions(selection: .sample(1000, seed: 3)))
        print("ShareGPT seeded subset of 1000: \(s.examples.count) examples in \(Int(Date().timeIntervalSince(t1) * 1000)) ms")
        XCTAssertEqual(s.report.records, 1000)
    }
}

extension DatasetReport {
    /// The reason's kind (text before the colon), as the reference script writes it.
    static func kind(_ reason: String) -> String { reason.split(separator: ":").first.map(String.init) ?? reason }
}
