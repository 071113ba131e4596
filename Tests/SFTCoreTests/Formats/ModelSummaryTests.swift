// The summary behind `sftctl inspect`, for a GGUF file and an HF folder.
import XCTest
import SFTCore
import SFTKernels

final class ModelSummaryTests: XCTestCase {
    func testSmolLM2Summary() throws {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else { throw XCTSkip("SmolLM2 GGUF not fetched") }
        let s = try ModelSummary(url: Assets.smolLM2)
        XCTAssertEqual(s.format, "GGUF v3")
        XCTAssertEqual(s.architecture, "llama")
        XCTAssertEqual(s.parameterCount, 134_515_008)
        XCTAssertEqual(s.typeCounts, ["Q4_1": 210, "F32": 61, "Q8_0": 1])
        XCTAssertEqual(s.tokenizerKind, "gpt2")
        XCTAssertEqual(s.vocabularySize, 49152)
        XCTAssertEqual(s.specialTokens["bos"]?.id, 1)
        XCTAssertEqual(s.specialTokens["eos"]?.text, "<|im_end|>")
        XCTAssertTrue(s.hasChatTemplate)
        XCTAssertEqual(s.config["rms_norm_eps"]?.doubleValue, 1e-5)
        XCTAssertEqual(s.extra["tokenizer.ggml.pre"], "smollm")
        XCTAssertTrue(s.lines.contains("parameters:    134,515,008 (134.5M)"), "\(s.lines)")
        XCTAssertTrue(JSONSerialization.isValidJSONObject(s.json.foundationValue))
    }

    func testHFFolderSummary() throws {
        let s = try ModelSummary(url: FormatsFixtures.url("hf_sharded"))
        XCTAssertEqual(s.architecture, "llama")
        XCTAssertEqual(s.parameterCount, 52)
        XCTAssertEqual(s.typeCounts, ["BF16": 1, "F16": 1, "F32": 1])
        XCTAssertEqual(s.specialTokens["bos"]?.text, "<s>")
        XCTAssertTrue(s.hasChatTemplate)
        XCTAssertEqual(s.config["hidden_size"]?.intValue, 4)
        XCTAssertTrue(JSONSerialization.isValidJSONObject(s.json.foundationValue))
    }
}
