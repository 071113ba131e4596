// The recipes' prompts, exactly: the two Stanford Alpaca prompts byte for byte (without a chat
// template and through the built-in `alpaca` template), Dolly's context as the Alpaca input,
// a config's own `{field}` prompt (the reversed-Dolly prompt of the Llama-2 QLoRA recipe), and
// field mapping as one simultaneous rename.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class SeedFormatTests: XCTestCase {
    // tatsu-lab/stanford_alpaca train.py, PROMPT_DICT, written out here by hand.
    static let stanfordWithInput = "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:"
    static let stanfordNoInput = "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:"

    func stanford(_ instruction: String, _ input: String) -> String {
        (input.isEmpty ? Self.stanfordNoInput : Self.stanfordWithInput)
            .replacingOccurrences(of: "{instruction}", with: instruction).replacingOccurrences(of: "{input}", with: input)
    }

    let withInput = SFTExample(content: .instruction(instruction: "Summarize the text.", input: "Cats sleep a lot.", output: "Cats nap."),
                               source: SourceLocation(line: 2, index: 1))
    let noInput = SFTExample(content: .instruction(instruction: "Name a prime.", input: "", output: "7"),
                             source: SourceLocation(line: 1, index: 0))

    func testAlpacaPromptsMatchStanfordByteForByte() throws {
        for ex in [withInput, noInput] {
            guard case .instruction(let i, let inp, let out) = ex.content else { return XCTFail() }
            // Without a chat template.
            let plain = try ExampleFormatter(tokenizer: CharTokenizer(), renderer: nil, options: FormatOptions(keepText: true)).format(ex)
            XCTAssertEqual(plain.formatted?.text, stanford(i, inp) + out)
            XCTAssertEqual(Array(plain.formatted!.text.utf8), Array((stanford(i, inp) + out).utf8))
            XCTAssertEqual(trainedRuns(plain), [out + "</s>"])
            // Through the built-in alpaca template: the same text, then the template's EOS.
            let r = TemplateRenderer(template: try ChatTemplate.named("alpaca"), tokenizer: CharTokenizer(), eosToken: "</s>")
            let t = try ExampleFormatter(tokenizer: CharTokenizer(), renderer: r, options: FormatOptions(keepText: true)).format(ex)
            XCTAssertEqual(t.formatted?.text, stanford(i, inp) + out + "</s>")
            XCTAssertEqual(trainedRuns(t), [out + "</s>"])
            // Generation starts from exactly the Stanford prompt.
            XCTAssertEqual(try r.renderPrompt(Array(ex.messages.prefix(1)), tools: nil), stanford(i, inp))
        }
    }

    func testDollyContextIsTheAlpacaInput() throws {
        let d = try Dataset.load(DataFixtures.url("dolly.jsonl"))
        guard case .instruction(let i, let inp, _) = d.examples[0].content else { return XCTFail() }
        XCTAssertFalse(inp.isEmpty)
        let t = try ExampleFormatter(tokenizer: CharTokenizer(), renderer: nil, options: FormatOptions(keepText: true)).format(d.examples[0])
        XCTAssertTrue(t.formatted!.text.hasPrefix(stanford(i, inp)))
    }

    // The Llama-2-7B Dolly recipe's prompt: the response goes under ### Input:, the model writes the instruction.
    static let reversedDolly = "### Instruction:\nUse the Input below to create an instruction, which could have been used to generate the input using an LLM.\n\n### Input:\n{response}\n\n### Response:\n{instruction}\n"

    func testPromptTemplateRendersFieldsAndTrainsTheLastOne() throws {
        let template = try PromptTemplate(Self.reversedDolly)
        let opts = FormatOptions(keepText: true, promptTemplate: template)
        let t = try ExampleFormatter(tokenizer: CharTokenizer(), renderer: ChatMLRenderer(), options: opts).format(withInput)
        XCTAssertEqual(t.formatted?.text, "### Instruction:\nUse the Input below to create an instruction, which could have been used to generate the input using an LLM.\n\n### Input:\nCats nap.\n\n### Response:\nSummarize the text.\n")
        XCTAssertEqual(trainedRuns(t), ["Summarize the text.\n</s>"])
        var all = opts
        all.maskPolicy = .all
        let a = try ExampleFormatter(tokenizer: CharTokenizer(), renderer: nil, options: all).format(withInput)
        XCTAssertTrue(a.trained.allSatisfy { $0 })
        // Braces and errors.
        XCTAssertEqual(try PromptTemplate("{{x}} {prompt}").render(.completion(prompt: "p", completion: "c")).text, "{x} p")
        XCTAssertThrowsError(try PromptTemplate("{question}")) { XCTAssertTrue("\($0)".contains("{question}"), "\($0)") }
        XCTAssertThrowsError(try PromptTemplate("no fields")) { XCTAssertTrue("\($0)".contains("prompt_template"), "\($0)") }
        XCTAssertThrowsError(try PromptTemplate("{prompt}").render(withInput.content)) { XCTAssertTrue("\($0)".contains("{prompt}"), "\($0)") }
        // From a config.
        let cfg = DataConfig(promptTemplate: Self.reversedDolly)
        XCTAssertEqual(try cfg.formatOptions().promptTemplate, template)
        XCTAssertThrowsError(try DataConfig(promptTemplate: "{nope}").formatOptions())
    }

    func testFieldMappingIsOneSimultaneousRename() throws {
        // The reversed-Dolly recipe as a swap: instruction ↔ response.
        let swap = DatasetOptions(format: .dolly, fields: FieldMapping(["instruction": "response", "response": "instruction"]))
        let d = try Dataset.load(DataFixtures.url("dolly.jsonl"), options: swap)
        let plain = try Dataset.load(DataFixtures.url("dolly.jsonl"), options: DatasetOptions(format: .dolly))
        XCTAssertEqual(d.examples.count, plain.examples.count)
        for (a, b) in zip(d.examples, plain.examples) {
            guard case .instruction(let i1, let c1, let o1) = a.content, case .instruction(let i2, let c2, let o2) = b.content else { return XCTFail() }
            XCTAssertEqual(i1, o2)
            XCTAssertEqual(o1, i2)
            XCTAssertEqual(c1, c2)
        }
        // A missing source field: the record is skipped with a reason naming it, at its line; strict fails there.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-fields-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("qa.jsonl")
        try "{\"question\": \"q1\", \"answer\": \"a1\"}\n{\"question\": \"q2\", \"reply\": \"a2\"}\n".write(to: url, atomically: true, encoding: .utf8)
        let m = DatasetOptions(format: .alpaca, fields: FieldMapping(["instruction": "question", "output": "answer"]))
        let r = try Dataset.load(url, options: m)
        XCTAssertEqual(r.examples.count, 1)
        XCTAssertEqual(r.report.skipped.map(\.location.line), [2])
        XCTAssertEqual(r.report.skipped.first?.reason, "missing field: 'answer' (mapped to 'output') is not in the record")
        var strict = m
        strict.strict = true
        XCTAssertThrowsError(try Dataset.load(url, options: strict)) { e in
            XCTAssertTrue("\(e)".contains("answer") && "\(e)".contains("2"), "\(e)")
        }
    }
}
