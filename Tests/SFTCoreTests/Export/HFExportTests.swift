// HF folders written by sft load back with the same model: identical logits in f32, and in
// bf16/f16 the logits of the same weights rounded the way the file stores them. SmolLM2 from
// the real GGUF is exported and reloaded too; tools/check_hf_export.py loads that folder in
// transformers and compares its logits with the ones this test dumps (recorded result checked
// in testPythonCheckRecordedAPass).
import XCTest
@testable import SFTCore
import SFTKernels

/// Rounds to bf16 (nearest even), written independently of the library's converter.
func roundedToBF16(_ x: Float) -> Float {
    let b = x.bitPattern
    let lsb = (b >> 16) & 1
    let r = (UInt64(b) + 0x7FFF + UInt64(lsb)) >> 16
    return Float(bitPattern: UInt32(truncatingIfNeeded: r) << 16)
}

/// Writes `ids` and `logits` (T, V) for the Python checks.
func dumpLogits(_ ids: [Int32], _ logits: [Float], vocab: Int, text: String, to url: URL) throws {
    try Safetensors.write([("ids", try SafetensorsTensor(ids, shape: [ids.count])),
                           ("logits", try SafetensorsTensor(logits, shape: [ids.count, vocab]))],
                          metadata: ["text": text], to: url)
}

final class HFExportTests: XCTestCase {
    func testTinyModelFolderReloadsWithIdenticalLogitsConfigAndTokenizer() throws {
        for tied in [false, true] {
            let lm = try ExportFixtures.tinyLanguageModel(tied: tied)
            let dir = try Scratch.folder("hf_tiny_\(tied ? "tied" : "untied")")
            defer { Scratch.cleanUp(dir) }
            try HFExport.saveModel(lm, to: dir)
            let back = try LanguageModel.load(dir)
            let ids = lm.encodePrompt(ExportFixtures.sampleText)
            XCTAssertEqual(back.encodePrompt(ExportFixtures.sampleText), ids)
            XCTAssertEqual(try back.model.logits(ids), try lm.model.logits(ids), "tied \(tied)")
            var expected = (lm.model as! LlamaModel).config
            // The folder's config also names the tokenizer's BOS/EOS, as transformers expects.
            expected.bosTokenId = lm.tokenizer.bosTokenId.map(Int.init)
            expected.eosTokenId = lm.tokenizer.eosTokenId.map(Int.init)
            XCTAssertEqual(try LlamaConfig(hf: back.source.config), expected)
            XCTAssertEqual(back.source.names.contains("lm_head.weight"), !tied)
            XCTAssertEqual(back.tokenizer.eosTokenIds, lm.tokenizer.eosTokenIds)
        }
    }

    func testHalfPrecisionFoldersHoldTheRoundedWeights() throws {
        let lm = try ExportFixtures.tinyLanguageModel()
        let ids = lm.encodePrompt(ExportFixtures.sampleText)
        let rounding: [(SafetensorsDType, (Float) -> Float)] = [(.bf16, roundedToBF16), (.f16, { Float(Float16($0)) })]
        for (dtype, round) in rounding {
            let dir = try Scratch.folder("hf_tiny_\(dtype.rawValue)")
            defer { Scratch.cleanUp(dir) }
            try HFExport.saveModel(lm, to: dir, dtype: dtype)
            let file = try SafetensorsFile(url: dir.appendingPathComponent("model.safetensors"))
            XCTAssertTrue(file.tensors.allSatisfy { $0.dtype == dtype }, "\(dtype)")
            let config = try HFModelFolder.readJSONObject(dir.appendingPathComponent("config.json"))
            XCTAssertEqual(config["torch_dtype"] as? String, dtype == .bf16 ? "bfloat16" : "float16")

            // The same model with its weights rounded in memory.
            let reference = try ExportFixtures.tinyLanguageModel()
            for (_, p) in reference.model.namedParameters() { try p.value.assign(try p.value.floats().map(round)) }
            let back = try LanguageModel.load(dir)
            XCTAssertEqual(try back.model.logits(ids), try reference.model.logits(ids), "\(dtype)")
            XCTAssertNotEqual(try back.model.logits(ids), try lm.model.logits(ids), "\(dtype) rounding should show")
        }
    }

    func testSavingAModelWithUnmergedAdaptersIsRefused() throws {
        let lm = try ExportFixtures.tinyLanguageModel()
        try lm.model.applyLoRA(LoRAConfig(r: 2), seed: 1)
        let dir = try Scratch.folder("hf_refused")
        defer { Scratch.cleanUp(dir) }
        XCTAssertThrowsError(try HFExport.saveModel(lm, to: dir)) { e in
            XCTAssertTrue("\(e)".contains("merge"), "\(e)")
        }
        XCTAssertThrowsError(try HFExport.saveModel(try ExportFixtures.tinyLanguageModel(), to: dir, dtype: .i32))
    }

    /// SmolLM2 (GGUF, Q4_1/Q8_0 dequantized to f32) → HF folder → sft: the same logits, the
    /// same tokenizer, the same chat template.
    func testSmolLM2ExportedFromGGUFReloadsWithIdenticalLogits() throws {
        let url = try Assets.require(Assets.smolLM2)
        let lm = try LanguageModel.load(url)
        let dir = try Scratch.folder("hf_smollm2")
        defer { Scratch.cleanUp(dir) }
        try HFExport.saveModel(lm, to: dir)
        let back = try LanguageModel.load(dir)
        let text = "<|im_start|>user\nWhat is 12 + 30?<|im_end|>\n<|im_start|>assistant\nThe answer is 42."
        let ids = lm.encodePrompt(text)
        XCTAssertEqual(back.encodePrompt(text), ids)
        let logits = try lm.model.logits(ids)
        XCTAssertEqual(try back.model.logits(ids), logits)
        XCTAssertEqual(back.chatTemplate?.source, lm.chatTemplate?.source)
        XCTAssertEqual(back.tokenizer.eosTokenIds, lm.tokenizer.eosTokenIds)
        if Scratch.keeping {
            try dumpLogits(ids, logits, vocab: lm.model.vocabSize, text: text, to: dir.deletingLastPathComponent().appendingPathComponent("sft_logits_smollm2.safetensors"))
            // bf16 copy for the Python check: sft's logits of the bf16 weights.
            let bf16 = dir.deletingLastPathComponent().appendingPathComponent("hf_smollm2_bf16")
            try HFExport.saveModel(lm, to: bf16, dtype: .bf16)
            let half = try LanguageModel.load(bf16)
            try dumpLogits(ids, try half.model.logits(ids), vocab: lm.model.vocabSize, text: text,
                           to: dir.deletingLastPathComponent().appendingPathComponent("sft_logits_smollm2_bf16.safetensors"))
        }
    }

    /// tools/check_hf_export.py's recorded run: transformers' logits on the exported folder
    /// agree with sft's within 1e-4.
    func testPythonCheckRecordedAPass() throws {
        let r = try Fixtures.json("export/results/hf_export.json")
        XCTAssertEqual(r["pass"] as? Bool, true)
        let f32 = try XCTUnwrap(r["f32"] as? [String: Any])
        XCTAssertLessThanOrEqual(try XCTUnwrap(f32["max_abs_diff"] as? Double), 1e-4)
        XCTAssertEqual(f32["ids_equal"] as? Bool, true)
    }
}
