// Loss masks with the real pieces: SmolLM2-135M-Instruct's tokenizer and its own chat template
// (from the GGUF file). For every dataset format the trained tokens decode to exactly the
// assistant turns, each with its <|im_end|>; and the ShareGPT asset formats and packs.
import Foundation
import XCTest
import SFTCore
import SFTKernels

final class SmolLM2MaskTests: XCTestCase {
    func smolLM2() throws -> (Tokenizer, TemplateRenderer) {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else { throw XCTSkip("SmolLM2 GGUF not fetched") }
        let tok = try Tokenizer(url: Assets.smolLM2)
        let template = try ChatTemplate(source: try XCTUnwrap(tok.chatTemplate))
        return (tok, TemplateRenderer(template: template, tokenizer: tok))
    }

    /// Decoded runs of consecutive trained tokens.
    func runs(_ t: TokenizedExample, _ tok: Tokenizer) -> [String] {
        var out: [String] = [], run: [Int32] = []
        for (id, tr) in zip(t.ids, t.trained) {
            if tr { run.append(id) } else if !run.isEmpty { out.append(tok.decode(run)); run = [] }
        }
        if !run.isEmpty { out.append(tok.decode(run)) }
        return out
    }

    /// The text each trained run should cover: every answer found after an assistant header in
    /// the rendered text (in order, by plain search — independent of the template's spans), widened to the edges of
    /// the tokens its first and last bytes fall in (a token straddling the edge is trained).
    func expectedRuns(_ answers: [String], _ t: TokenizedExample) -> [String] {
        let f = t.formatted!
        let bytes = Array(f.text.utf8)
        var from = 0
        var out: [String] = []
        let header = Array("<|im_start|>assistant\n".utf8)  // SmolLM2's (ChatML) assistant header
        for a in answers {
            let needle = header + Array(a.utf8)
            guard let found = (from...(bytes.count - needle.count)).first(where: { Array(bytes[$0..<($0 + needle.count)]) == needle }) else {
                XCTFail("answer not in the rendered text: \(a)"); return []
            }
            let at = found + header.count
            let needleEnd = found + needle.count
            let lo = f.offsets.first { $0.contains(at) }!.lowerBound
            let hi = f.offsets.first { $0.contains(needleEnd - 1) }!.upperBound
            out.append(String(decoding: bytes[lo..<hi], as: UTF8.self))
            from = needleEnd
        }
        return out
    }

    func testSmolLM2TemplateMasksSelectExactlyTheAssistantTurns() throws {
        let (tok, renderer) = try smolLM2()
        XCTAssertEqual(tok.eosTokenId.flatMap { tok.tokenString($0) }, "<|im_end|>")
        let files: [(String, DataConfig)] = [
            ("alpaca.json", DataConfig()), ("sharegpt.json", DataConfig()), ("messages.jsonl", DataConfig()),
            ("dolly.jsonl", DataConfig()), ("completion.jsonl", DataConfig()), ("guanaco.jsonl", DataConfig()),
            ("dolphin.jsonl", DataConfig(format: .dolphin)), ("qa.csv", DataConfig(fields: ["instruction": "question", "output": "answer"])),
        ]
        var straddling = 0
        for (file, config) in files {
            let url = DataFixtures.url(file)
            let dataset = try Dataset.load(url, options: try config.datasetOptions())
            let prepared = try prepareDataset(url, config: config, tokenizer: tok, renderer: renderer, keepTextFor: .max)
            XCTAssertEqual(prepared.examples.count, dataset.examples.count, file)
            for (ex, t) in zip(dataset.examples, prepared.examples) {
                let contents = ex.messages.filter { $0.role == "assistant" }.map(\.content)
                let answers = contents.map { $0 + "<|im_end|>" }
                let expected = expectedRuns(answers, t)
                XCTAssertEqual(runs(t, tok), expected, "\(file) \(ex.source)")
                straddling += zip(expected, answers).filter { $0 != $1 }.count
                XCTAssertEqual(t.ids, tok.encode(t.formatted!.text, addSpecialTokens: false), file)
                // Last turn only, and without the end marker.
                var o = FormatOptions(maskPolicy: .lastTurn, keepText: true)
                let last = try ExampleFormatter(tokenizer: tok, renderer: renderer, options: o).format(ex)
                XCTAssertEqual(runs(last, tok), [expected.last!], file)
                o = FormatOptions(trainEndOfTurn: false, keepText: true)
                let noEnd = try ExampleFormatter(tokenizer: tok, renderer: renderer, options: o).format(ex)
                XCTAssertEqual(runs(noEnd, tok), expectedRuns(contents, noEnd), file)
            }
        }
        // completion.jsonl's " 5" follows the template's newline: SmolLM2 has a "\n " token.
        XCTAssertGreaterThan(straddling, 0)
    }

    func testSmolLM2ShowsTheMaskedSample() throws {
        let (tok, renderer) = try smolLM2()
        let ex = SFTExample(content: .conversation([ChatMessage(role: "user", content: "Capital of France?"),
                                                    ChatMessage(role: "assistant", content: "Paris.")]),
                            source: SourceLocation(line: 1, index: 0))
        let t = try ExampleFormatter(tokenizer: tok, renderer: renderer, options: FormatOptions(keepText: true)).format(ex)
        XCTAssertEqual(t.markedText(),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                       + "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n[[Paris.<|im_end|>]]\n")
    }

    func testShareGPTAssetFormatsAndPacksWithSmolLM2() throws {
        let (tok, renderer) = try smolLM2()
        guard FileManager.default.fileExists(atPath: Assets.shareGPT.path) else { throw XCTSkip("ShareGPT asset not fetched") }
        let t0 = Date()
        let prepared = try prepareDataset(Assets.shareGPT, config: DataConfig(limit: 200), tokenizer: tok, renderer: renderer)
        let t1 = Date()
        XCTAssertEqual(prepared.examples.count + prepared.formattingReport.skipped.count, prepared.datasetReport.examples)
        let plan = try BatchPlan(examples: prepared.examples,
                                 options: try DataConfig(maxSeqLength: 2048).batchingOptions(padId: tok.eosTokenId!))
        var loader = try DataLoader(plan: plan)
        var trained = 0
        while let step = loader.nextStep() {
            for b in step.batches {
                for i in 0..<(b.B * b.T) where b.targets[i] != -100 {
                    XCTAssertEqual(b.targets[i], b.ids[i + 1])
                    XCTAssertEqual(b.docIds[i], b.docIds[i + 1])
                }
                trained += b.trainedTokens
            }
        }
        XCTAssertEqual(trained, plan.report.trainedTokens)
        XCTAssertGreaterThan(plan.report.efficiency!, 0.9)
        print("SmolLM2 × ShareGPT[0..<200]: \(prepared.formattingReport) in \(Int(t1.timeIntervalSince(t0) * 1000)) ms; packing: \(plan.report)")
    }
}
