// Loss spans given in the data (Fast-LLM's `loss_masking_spans`, or `trained_spans`) for text
// and prompt/completion records: character offsets (Unicode scalars, as Python indexes str),
// `[begin, end]` with `end` included by default (Fast-LLM's convention) or excluded with
// `span_end: exclusive`; masked text gets no loss, the EOS after the text is trained.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class LossSpanTests: XCTestCase {
    func write(_ lines: [String]) throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-spans-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("data.jsonl")
        try (lines.joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    func prepare(_ url: URL, _ config: DataConfig = DataConfig()) throws -> PreparedDataset {
        try prepareDataset(url, config: config, tokenizer: CharTokenizer(), renderer: nil, keepTextFor: 10)
    }

    func testLossMaskingSpansMaskTheirTextInclusiveEnds() throws {
        // "Q: hi A: yo" — mask "Q: hi " (0...5) and nothing else.
        let url = try write([
            #"{"text": "Q: hi A: yo", "loss_masking_spans": [[0, 5]]}"#,
            #"{"text": "été: ok", "loss_masking_spans": [[0, 4]]}"#,  // scalar offsets, not bytes
            #"{"text": "a b c", "loss_masking_spans": [[0, 0], [4, 4]]}"#,
        ])
        let p = try prepare(url, DataConfig(format: .text))
        XCTAssertEqual(p.examples.count, 3)
        XCTAssertEqual(trainedRuns(p.examples[0]), ["A: yo</s>"])
        XCTAssertEqual(trainedRuns(p.examples[1]), ["ok</s>"])
        XCTAssertEqual(trainedRuns(p.examples[2]), [" b ", "</s>"])
        // The mask shown as text.
        XCTAssertEqual(p.examples[0].markedText(), "Q: hi [[A: yo<eos>]]")
        // Exclusive ends: [0, 6) is the same span.
        let ex = try write([#"{"text": "Q: hi A: yo", "loss_masking_spans": [[0, 6]]}"#])
        XCTAssertEqual(trainedRuns(try prepare(ex, DataConfig(format: .text, spanEnd: .exclusive)).examples[0]), ["A: yo</s>"])
    }

    func testTrainedSpansAndCompletionRecords() throws {
        let url = try write([
            #"{"prompt": "2+2=", "completion": "4. Done.", "trained_spans": [[4, 5]]}"#,
            #"{"prompt": "Say hi: ", "completion": "hi", "loss_masking_spans": [[0, 7]]}"#,
            #"{"prompt": "x", "completion": "y", "trained_spans": [[0, 1]]}"#,
        ])
        let p = try prepare(url, DataConfig(format: .completion))
        XCTAssertEqual(trainedRuns(p.examples[0]), ["4."])          // the span, no EOS: it does not reach the end
        XCTAssertEqual(trainedRuns(p.examples[1]), ["hi</s>"])
        XCTAssertEqual(trainedRuns(p.examples[2]), ["xy</s>"])      // a span to the end trains the EOS
    }

    func testBadSpansAreSkippedWithTheirLine() throws {
        let url = try write([
            #"{"text": "ok", "loss_masking_spans": [[0, 0]]}"#,
            #"{"text": "short", "loss_masking_spans": [[2, 40]]}"#,
            #"{"text": "x", "loss_masking_spans": "all"}"#,
            #"{"text": "y", "loss_masking_spans": [[2, 0]]}"#,
            // Offsets no Int holds (found by tools/fuzz: Int(1e300) trapped).
            #"{"text": "z", "loss_masking_spans": [[0, 1e300]]}"#,
            #"{"text": "w", "loss_masking_spans": [[1e19, 1e19]]}"#,
        ])
        let p = try prepare(url, DataConfig(format: .text))
        XCTAssertEqual(p.examples.count, 1)
        XCTAssertEqual(p.datasetReport.skipped.map(\.location.line), [3, 4, 5, 6])
        XCTAssertTrue(p.datasetReport.skipped[2].reason.contains("outside 0..."), p.datasetReport.skipped[2].reason)
        XCTAssertEqual(p.formattingReport.skipped.map(\.location.line), [2])
        XCTAssertTrue(p.formattingReport.skipped[0].reason.contains("outside the text"), p.formattingReport.skipped[0].reason)
        // Spans only where the text is the data's own.
        let conv = try write([#"{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "loss_masking_spans": [[0, 0]]}"#])
        let c = try Dataset.load(conv)
        XCTAssertEqual(c.examples.count, 0)
        XCTAssertTrue(c.report.skipped[0].reason.contains("loss_masking_spans"), c.report.skipped[0].reason)
    }
}
