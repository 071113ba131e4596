// Generation on the real model: a factual chat answer, streaming equals the final text, stop
// strings and budgets, seeded sampling reproducible, top-k 1 equals greedy.
import XCTest
import SFTCore
import SFTKernels

final class GeneratorTests: XCTestCase {
    func lm() throws -> LanguageModel {
        let loaded = try RealModel.smolLM2()
        let tok = try LanguageModel.loadTokenizer(source: loaded.source, url: loaded.url)
        return LanguageModel(model: loaded.model, tokenizer: tok, chatTemplate: try ChatTemplate(source: tok.chatTemplate!),
                             source: loaded.source, url: loaded.url)
    }

    func testChatAnswersAFactualQuestion() throws {
        let lm = try lm()
        let prompt = try lm.chatPrompt([ChatMessage(role: "user", content: "What is the capital of France?")])
        XCTAssertTrue(lm.tokenizer.decode(prompt).hasSuffix("<|im_start|>assistant\n"))
        var streamed = ""
        let r = try lm.generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 40)) { streamed += $0; return true }
        XCTAssertTrue(r.text.contains("Paris"), r.text)
        XCTAssertEqual(r.stopReason, .endOfSequence)
        XCTAssertEqual(streamed, r.text)
    }

    func testStopStringsAndTokenBudget() throws {
        let lm = try lm()
        let prompt = lm.encodePrompt("1, 2, 3, 4,")
        let budget = try lm.generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 5))
        XCTAssertEqual(budget.ids.count, 5)
        XCTAssertEqual(budget.stopReason, .length)
        var cfg = GenerationConfig(maxNewTokens: 40)
        cfg.stopStrings = [" 7"]
        var streamed = ""
        let stopped = try lm.generator.generate(prompt: prompt, config: cfg) { streamed += $0; return true }
        XCTAssertEqual(stopped.stopReason, .stopString, stopped.text)
        XCTAssertFalse(stopped.text.contains(" 7"))
        XCTAssertEqual(streamed, stopped.text)
    }

    func testSeededSamplingIsReproducibleAndTopK1IsGreedy() throws {
        let lm = try lm()
        let prompt = lm.encodePrompt("Once upon a time")
        var s = GenerationConfig(maxNewTokens: 12)
        s.sampling = SamplingConfig(temperature: 0.9, topP: 0.9, seed: 11)
        let a = try lm.generator.generate(prompt: prompt, config: s), b = try lm.generator.generate(prompt: prompt, config: s)
        XCTAssertEqual(a.ids, b.ids)
        var k1 = GenerationConfig(maxNewTokens: 12)
        k1.sampling = SamplingConfig(temperature: 1.5, topK: 1, seed: 3)
        let greedy = try lm.generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 12))
        XCTAssertEqual(try lm.generator.generate(prompt: prompt, config: k1).ids, greedy.ids)
    }

    func testSamplerFiltersAsConfigured() {
        let logits: [Float] = [0, 5, 4.9, -3, 1]
        var greedy = Sampler(SamplingConfig())
        XCTAssertEqual(greedy.next(logits: logits, context: []), 1)
        var penalized = Sampler(SamplingConfig(repetitionPenalty: 2))
        XCTAssertEqual(penalized.next(logits: logits, context: [1]), 2, "5/2 < 4.9")
        var minP = Sampler(SamplingConfig(temperature: 1, minP: 0.5, seed: 1))
        for _ in 0..<50 { XCTAssertTrue([1, 2].contains(minP.next(logits: logits, context: []))) }
        var topP = Sampler(SamplingConfig(temperature: 1, topP: 0.4, seed: 1))
        for _ in 0..<50 { XCTAssertEqual(topP.next(logits: logits, context: []), 1) }
    }
}
