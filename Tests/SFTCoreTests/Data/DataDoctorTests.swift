// The data doctor: a dataset with one planted problem per line is reported problem by problem,
// each with the right line and its tokens with the mask; a clean dataset gets no finding.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class DataDoctorTests: XCTestCase {
    func write(_ lines: [String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-doctor-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("data.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func doctor(_ url: URL) throws -> DoctorReport {
        // CharTokenizer: BOS 3 "<s>", EOS 4 "</s>" (also the pad id), specials <|im_start|> <|im_end|>.
        let p = try prepareDataset(url, config: DataConfig(format: .completion, maxSeqLength: 40), tokenizer: CharTokenizer(bos: true),
                                   renderer: nil, doctor: true, padId: 4)
        XCTAssertTrue(p.examples.allSatisfy { $0.formatted == nil }, "the doctor keeps no text beyond keepTextFor")
        return p.doctorReport!
    }

    func testEachPlantedProblemIsReportedAtItsLine() throws {
        let url = try write([
            #"{"prompt": "Q1 ", "completion": "A1"}"#,                                              // 1 clean
            #"{"prompt": "<s><s>Q2 ", "completion": "A2"}"#,                                        // 2 BOS doubled
            #"{"prompt": "Q3 ", "completion": "A3</s>more", "trained_spans": [[3, 4]]}"#,          // 3 never stops; EOS (= pad) masked
            #"{"prompt": "Q4 ", "completion": "\#(String(repeating: "x", count: 60))"}"#,          // 4 answer cut by truncation
            #"{"prompt": "Q5 ", "completion": "A5", "trained_spans": []}"#,                         // 5 nothing trained
            #"{"prompt": "<|start_header_id|>user Q6 ", "completion": "A6"}"#,                      // 6 another family's tokens
            #"{"prompt": "Q1 ", "completion": "A1"}"#,                                              // 7 duplicate of 1
        ])
        let r = try doctor(url)
        let want: [DoctorCheck: Int] = [.bosDoubled: 2, .eosNotTrained: 3, .padIsEOSMasked: 3, .turnTruncated: 4,
                                        .nothingTrained: 5, .foreignSpecialTokens: 6, .duplicate: 7]
        for c in DoctorCheck.allCases {
            XCTAssertEqual(r.counts[c] ?? 0, want[c] == nil ? 0 : 1, c.rawValue)
            XCTAssertEqual(r.findings.filter { $0.check == c }.map(\.location.line), want[c].map { [$0] } ?? [], c.rawValue)
        }
        XCTAssertEqual(r.examples, 7)
        XCTAssertFalse(r.isClean)
        // Findings show tokens with the mask.
        let eos = r.findings.first { $0.check == .eosNotTrained }!
        XCTAssertEqual(eos.tokensShown, "⟨3⟩|Q|3| |[[A]]|[[3]]|</s>|m|o|r|e|⟨4⟩")
        XCTAssertTrue(r.findings.first { $0.check == .duplicate }!.message.contains("line 1"))
        XCTAssertTrue(r.findings.first { $0.check == .foreignSpecialTokens }!.message.contains("<|start_header_id|>"))
        XCTAssertTrue(r.description.contains("[pad_is_eos_masked]"), r.description)
        let json = r.json
        XCTAssertEqual(json["findings"]?.arrayValue?.count, 7)
        XCTAssertEqual(json["counts"]?["turn_truncated"]?.intValue, 1)
    }

    func testACleanDatasetHasNoFinding() throws {
        let r = try doctor(try write([
            #"{"prompt": "Q1 ", "completion": "A1"}"#,
            #"{"prompt": "Q2 ", "completion": "A2", "loss_masking_spans": [[0, 2]]}"#,
            #"{"prompt": "<s>Q3 ", "completion": "A3"}"#,
        ]))
        XCTAssertTrue(r.isClean, r.description)
        XCTAssertTrue(r.findings.isEmpty)
        XCTAssertEqual(r.examples, 3)
        XCTAssertGreaterThan(r.trainedShare, 0)
        XCTAssertTrue(r.description.hasSuffix("no problems found"), r.description)
    }

    /// A template that writes BOS into the generation prompt but not into the training text.
    struct BOSOnlyInPrompt: ChatRenderer {
        func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String {
            "<s>" + (try ChatMLRenderer().renderPrompt(messages, tools: tools))
        }
        func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation {
            try ChatMLRenderer().renderForTraining(messages, tools: tools)
        }
    }

    func testBOSMissingAgainstGeneration() throws {
        let tok = CharTokenizer(bos: false)
        let f = ExampleFormatter(tokenizer: tok, renderer: BOSOnlyInPrompt(), options: FormatOptions(keepText: true))
        let d = DataDoctor(formatter: f, maxSeqLength: 100, truncation: .truncate, padId: 0)
        let ex = SFTExample(content: .conversation([ChatMessage(role: "user", content: "a"), ChatMessage(role: "assistant", content: "b")]),
                            source: SourceLocation(line: 9, index: 3))
        d.inspect(ex, try f.format(ex))
        XCTAssertEqual(d.report.findings.map(\.check), [.bosMissing])
        XCTAssertEqual(d.report.findings.first?.location.line, 9)
        // The real path never does this: the same conversation through ChatMLRenderer is clean.
        let g = ExampleFormatter(tokenizer: tok, renderer: ChatMLRenderer(), options: FormatOptions(keepText: true))
        let clean = DataDoctor(formatter: g, maxSeqLength: 100, truncation: .truncate, padId: 0)
        clean.inspect(ex, try g.format(ex))
        XCTAssertTrue(clean.report.isClean, clean.report.description)
    }
}
