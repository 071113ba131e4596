// Loss masks: for each format, the trained tokens are exactly the assistant turns (with their
// end-of-turn marker), the completion, or everything — checked with a one-token-per-character
// tokenizer so trained tokens decode back to the exact trained text; tokens straddling a span
// boundary; EOS trained even when it is also the pad id; template failures counted or strict.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class FormattingTests: XCTestCase {
    let convo = SFTExample(content: .conversation([
        ChatMessage(role: "system", content: "Be brief."),
        ChatMessage(role: "user", content: "Hi there!"),
        ChatMessage(role: "assistant", content: "Hello! How can I help?"),
        ChatMessage(role: "user", content: "What is 2+2?"),
        ChatMessage(role: "assistant", content: "4."),
    ]), source: SourceLocation(line: 1, index: 0))

    func format(_ ex: SFTExample, renderer: ChatRenderer? = ChatMLRenderer(), tokenizer: TextTokenizer = CharTokenizer(),
                _ options: FormatOptions = FormatOptions(keepText: true)) throws -> TokenizedExample {
        try ExampleFormatter(tokenizer: tokenizer, renderer: renderer, options: options).format(ex)
    }

    func testAssistantOnlyMaskTrainsEveryAssistantTurnThroughItsEndMarker() throws {
        let t = try format(convo)
        XCTAssertEqual(trainedRuns(t), ["Hello! How can I help?<|im_end|>", "4.<|im_end|>"])
        XCTAssertEqual(CharTokenizer.decode(t.ids), t.formatted?.text)
        XCTAssertEqual(t.labels.filter { $0 != -100 }.count, t.trained.filter { $0 }.count)
        XCTAssertEqual(t.ids.last, 1000 + 10)  // the template's final "\n": no EOS appended with a template
    }

    func testLastTurnEndOfTurnOffAndAllTokensPolicies() throws {
        XCTAssertEqual(trainedRuns(try format(convo, FormatOptions(maskPolicy: .lastTurn))), ["4.<|im_end|>"])
        XCTAssertEqual(trainedRuns(try format(convo, FormatOptions(trainEndOfTurn: false))), ["Hello! How can I help?", "4."])
        let all = try format(convo, FormatOptions(maskPolicy: .all))
        XCTAssertTrue(all.trained.allSatisfy { $0 })
        XCTAssertEqual(MaskPolicy(name: "last"), .lastTurn)
        XCTAssertEqual(MaskPolicy(name: "completion_only"), .completion)
        XCTAssertNil(MaskPolicy(name: "everything"))
    }

    func testAlpacaPromptWithoutTemplateTrainsTheResponseAndEOS() throws {
        let withInput = SFTExample(content: .instruction(instruction: "Translate.", input: "The cat sleeps.", output: "Le chat dort."),
                                   source: SourceLocation(line: 3, index: 1))
        let t = try format(withInput, renderer: nil, tokenizer: CharTokenizer(bos: true))
        let expectedPrompt = "Below is an instruction that describes a task, paired with an input that provides further context. "
            + "Write a response that appropriately completes the request.\n\n### Instruction:\nTranslate.\n\n"
            + "### Input:\nThe cat sleeps.\n\n### Response:"  // Stanford Alpaca: the response follows directly
        XCTAssertEqual(t.formatted?.text, expectedPrompt + "Le chat dort.")
        XCTAssertEqual(t.ids.first, 3)  // BOS from the tokenizer, not trained
        XCTAssertFalse(t.trained[0])
        XCTAssertEqual(t.ids.last, 4)   // EOS appended
        XCTAssertEqual(trainedRuns(t), ["Le chat dort.</s>"])
        XCTAssertEqual(t.source, SourceLocation(line: 3, index: 1))

        let noInput = SFTExample(content: .instruction(instruction: "Name a prime.", input: "", output: "7"), source: convo.source)
        let u = try format(noInput, renderer: nil)
        XCTAssertEqual(u.formatted?.text, "Below is an instruction that describes a task. Write a response that appropriately "
                       + "completes the request.\n\n### Instruction:\nName a prime.\n\n### Response:7")
        XCTAssertEqual(trainedRuns(u), ["7</s>"])
        XCTAssertEqual(trainedRuns(try format(noInput, renderer: nil, FormatOptions(trainEndOfTurn: false))), ["7"])
        // With a chat template the same record is a user/assistant exchange.
        XCTAssertEqual(trainedRuns(try format(withInput)), ["Le chat dort.<|im_end|>"])
        XCTAssertTrue(try format(withInput).formatted!.text.contains("<|im_start|>user\nTranslate.\n\nThe cat sleeps.<|im_end|>"))
    }

    func testCompletionTextAndGuanacoWithoutTemplate() throws {
        let c = SFTExample(content: .completion(prompt: "The capital of Italy is", completion: " Rome."), source: convo.source)
        XCTAssertEqual(trainedRuns(try format(c, renderer: nil)), [" Rome.</s>"])
        let text = SFTExample(content: .text("All of it."), source: convo.source)
        let t = try format(text, renderer: nil, tokenizer: CharTokenizer(bos: true))
        XCTAssertEqual(t.trained, [Bool](repeating: true, count: t.ids.count))  // BOS too, under .all
        XCTAssertEqual(t.ids.last, 4)
        // Conversations without a template: Guanaco-style turns, EOS after the last answer.
        let g = try format(convo, renderer: nil)
        XCTAssertEqual(g.formatted?.text, "Be brief.\n### Human: Hi there!\n### Assistant: Hello! How can I help?\n"
                       + "### Human: What is 2+2?\n### Assistant: 4.\n")
        XCTAssertEqual(trainedRuns(g), ["Hello! How can I help?\n", "4.\n</s>"])
    }

    func testEOSIsTrainedEvenWhenItIsThePadId() throws {
        // SmolLM2: eos = <|im_end|> (id 2 here) and pad = eos. The mask ignores ids.
        var tok = CharTokenizer()
        tok.eosTokenId = 2
        let t = try format(convo, tokenizer: tok)
        let imEnds = t.ids.indices.filter { t.ids[$0] == 2 }
        XCTAssertEqual(imEnds.map { t.trained[$0] }, [false, false, true, false, true])  // system, user, assistant, user, assistant
        let short = try format(SFTExample(content: .completion(prompt: "x", completion: "y"), source: convo.source), tokenizer: tok)
        let plan = try BatchPlan(examples: [t, short], options: BatchingOptions(maxSeqLength: 4096, layout: .padded, microBatchSize: 2,
                                                                           shuffle: false, padId: 2))
        let b = plan.microBatch(epoch: 0, index: 0)
        XCTAssertEqual(b.T, t.ids.count)
        XCTAssertEqual(b.ids[(b.T + short.ids.count)...].allSatisfy { $0 == 2 }, true)  // padding written with the eos id
        XCTAssertEqual(b.targets[(b.T + short.ids.count - 1)...].allSatisfy { $0 == -100 }, true)
        let trainedEOS = (0..<(b.B * b.T)).filter { b.targets[$0] == 2 }.count
        XCTAssertEqual(trainedEOS, 3)  // two in the conversation, one in the short example; none from padding
    }

    func testTokensStraddlingASpanBoundaryAreTrainedAndTouchingOnesAreNot() throws {
        let ex = SFTExample(content: .conversation([ChatMessage(role: "user", content: "Capital of France?"),
                                                    ChatMessage(role: "assistant", content: "Paris, of course.")]), source: convo.source)
        let tok = WordTokenizer()
        let t = try format(ex, tokenizer: tok)
        let text = Array(t.formatted!.text.utf8)
        let pieces = t.formatted!.offsets.map { String(decoding: text[$0], as: UTF8.self) }
        let trained = zip(pieces, t.trained).filter { $1 }.map { $0.0 }
        // "\nParis," starts with the newline that belongs to the template, then the answer.
        XCTAssertEqual(trained, ["\nParis,", " of", " course.", "<|im_end|>"])
        XCTAssertEqual(t.markedText(), "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant[[\nParis, of course.<|im_end|>]]\n")
    }

    func testMarkedTextShowsAppendedEOS() throws {
        let c = SFTExample(content: .completion(prompt: "2 + 3 =", completion: " 5"), source: convo.source)
        XCTAssertEqual(try format(c, renderer: nil).markedText(), "2 + 3 =[[ 5<eos>]]")
        XCTAssertNil(try format(c, renderer: nil, FormatOptions()).markedText())  // text not kept
    }

    /// Every format's fixture through `prepareDataset`: trained text is exactly the assistant
    /// turns (with the template) or the responses (without).
    func testMasksSelectExactlyTheAssistantSpansForEveryFormat() throws {
        let files: [(String, DataConfig)] = [
            ("alpaca.json", DataConfig()), ("sharegpt.json", DataConfig()), ("messages.jsonl", DataConfig()),
            ("dolly.jsonl", DataConfig()), ("completion.jsonl", DataConfig()), ("guanaco.jsonl", DataConfig()),
            ("dolphin.jsonl", DataConfig(format: .dolphin)), ("qa.csv", DataConfig(fields: ["instruction": "question", "output": "answer"])),
        ]
        for (file, config) in files {
            let dataset = try Dataset.load(DataFixtures.url(file), options: try config.datasetOptions())
            let withTemplate = try prepareDataset(DataFixtures.url(file), config: config, tokenizer: CharTokenizer(), renderer: ChatMLRenderer())
            XCTAssertEqual(withTemplate.examples.count, dataset.examples.count, file)
            for (ex, t) in zip(dataset.examples, withTemplate.examples) {
                let answers = ex.messages.filter { $0.role == "assistant" }.map { $0.content + "<|im_end|>" }
                XCTAssertEqual(trainedRuns(t), answers, "\(file) \(ex.source)")
                XCTAssertEqual(t.source, ex.source)
            }
            let plain = try prepareDataset(DataFixtures.url(file), config: config, tokenizer: CharTokenizer(), renderer: nil)
            for (ex, t) in zip(dataset.examples, plain.examples) {
                switch ex.content {
                case .instruction(_, _, let output): XCTAssertEqual(trainedRuns(t), [output + "</s>"], file)
                case .completion(_, let completion): XCTAssertEqual(trainedRuns(t), [completion + "</s>"], file)
                case .conversation(let m):
                    var answers = m.filter { $0.role == "assistant" }.map { $0.content + "\n" }
                    answers[answers.count - 1] += "</s>"
                    XCTAssertEqual(trainedRuns(t), answers, "\(file) \(ex.source)")
                case .text: XCTFail(file)
                }
            }
        }
    }

    struct RejectsSystem: ChatRenderer {
        func renderPrompt(_ messages: [ChatMessage], tools: JSONValue?) throws -> String { "" }
        func renderForTraining(_ messages: [ChatMessage], tools: JSONValue?) throws -> RenderedConversation {
            if messages.first?.role == "system" { throw SFTError.template(line: 1, column: 1, message: "System role not supported") }
            return try ChatMLRenderer().renderForTraining(messages)
        }
    }

    func testTemplateFailuresAreCountedOrStrict() throws {
        let url = DataFixtures.url("sharegpt.json")
        let p = try prepareDataset(url, tokenizer: CharTokenizer(), renderer: RejectsSystem())
        XCTAssertEqual(p.examples.count, 3)
        XCTAssertEqual(p.formattingReport.skipped.map(\.location.line), [8])
        XCTAssertTrue(p.formattingReport.skipped[0].reason.contains("System role not supported"))
        XCTAssertThrowsError(try prepareDataset(url, config: DataConfig(strict: true), tokenizer: CharTokenizer(),
                                                renderer: RejectsSystem())) { e in
            guard case SFTError.data(let path, let line, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(path, url.path)
            XCTAssertEqual(line, 13)  // strict loading stops first at the bad record on line 13
        }
        let lenientLoad = DataConfig(strict: false)
        XCTAssertEqual(try prepareDataset(url, config: lenientLoad, tokenizer: CharTokenizer(), renderer: RejectsSystem()).datasetReport.skipped.count, 4)
    }

    func testConfigNamesAreValidated() throws {
        // Unknown names are refused when read, naming the key and the allowed values.
        for (key, value, allowed) in [("format", "yaml", "sharegpt"), ("mask_policy", "some", "last_turn"),
                                      ("truncation", "wrap", "split"), ("span_end", "half", "exclusive")] {
            XCTAssertThrowsError(try FinetuneConfig.from(json: .object([(key, .string(value))]))) { e in
                guard case SFTError.config(let field, let message) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(field, key)
                XCTAssertTrue(message.contains("'\(value)'") && message.contains(allowed), message)
            }
        }
        XCTAssertThrowsError(try DataConfig(packing: false, crossDocumentAttention: true).batchingOptions())
        let c = try FinetuneConfig.from(jsonData: Data(#"{"format": "vicuna", "limit": 5, "subset_seed": 9, "mask_policy": "last_turn", "max_seq_length": 512, "packing": false, "padding_free": true}"#.utf8)).dataConfig
        XCTAssertEqual(try c.datasetOptions(), DatasetOptions(format: .sharegpt, selection: .sample(5, seed: 9)))
        XCTAssertEqual(try c.formatOptions().maskPolicy, .lastTurn)
        XCTAssertEqual(try c.batchingOptions().layout, .paddingFree)
        XCTAssertEqual(try c.batchingOptions().maxSeqLength, 512)
        XCTAssertTrue(try FinetuneConfig.from(jsonData: Data("{}".utf8)).dataConfig == DataConfig())
        XCTAssertNil(try FinetuneConfig.from(json: ["format": "auto"]).dataConfig.format)
    }
}
