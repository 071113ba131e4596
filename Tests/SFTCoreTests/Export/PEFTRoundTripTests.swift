// PEFT compatibility both ways. Python → sft: adapters made and saved by PEFT on a tiny Llama
// that transformers saved (tools/make_peft_fixtures.py) load here and give PEFT's logits within
// 1e-4 — before and after merging. sft → Python: an adapter sft writes on SmolLM2 reloads here
// exactly, and tools/check_peft_roundtrip.py loads it with PeftModel.from_pretrained and compares
// with sft's logits (recorded result checked in testPythonCheckRecordedAPass).
import XCTest
import SFTCore
import SFTKernels

final class PEFTRoundTripTests: XCTestCase {
    func testAdaptersMadeByPythonPEFTGivePEFTsLogits() throws {
        let root = Fixtures.url("export/peft_tiny")
        let reference = try Fixtures.json("export/peft_tiny/reference.json")
        let ids = try XCTUnwrap(reference["ids"] as? [Int]).map(Int32.init)
        let floats = { (v: Any?) throws -> [Float] in try XCTUnwrap(v as? [NSNumber]).map(\.floatValue) }
        let adapters = try XCTUnwrap(reference["adapters"] as? [String: Any])
        XCTAssertEqual(adapters.count, 2)

        let base = try ModelLoader.load(at: root.appendingPathComponent("base"), on: CPUBackend.shared).model
        let baseLogits = try base.logits(ids)
        assertClose(baseLogits, try floats(reference["base"]), tolerance: 1e-4, "base")
        for name in adapters.keys.sorted() {
            let want = try floats(adapters[name])
            let model = try ModelLoader.load(at: root.appendingPathComponent("base"), on: CPUBackend.shared).model
            let config = try PEFTAdapter.load(root.appendingPathComponent(name), into: model)
            let got = try model.logits(ids)
            assertClose(got, want, tolerance: 1e-4, name)
            XCTAssertGreaterThan(maxAbsDiff(got, baseLogits).value, 1, "\(name) must change the logits")
            if name == "adapter_rslora" {
                XCTAssertTrue(config.useRSLoRA)
                XCTAssertEqual(config.modulesToSave, ["lm_head"])
            }
            for l in model.namedModules().compactMap({ $0.1 as? Linear }) { try l.mergeLoRA() }
            assertClose(try model.logits(ids), want, tolerance: 1e-4, "\(name) merged")
        }
    }

    /// sft writes an adapter on SmolLM2 with PEFT's key names; it reloads into a fresh model
    /// with the same logits. With $SFT_EXPORT_DIR the adapter and the logits are kept for
    /// tools/check_peft_roundtrip.py.
    func testAdapterWrittenBySftOnSmolLM2ReloadsExactly() throws {
        let url = try Assets.require(Assets.smolLM2)
        let lm = try LanguageModel.load(url)
        let config = LoRAConfig(r: 8, alpha: 16, dropout: 0.05, targetModules: ["all-linear"])
        try lm.model.applyLoRA(config, seed: 21)
        try MergeTests.randomizeLoRA(lm.model, seed: 22, scale: 0.02)
        let dir = try Scratch.folder("peft_smollm2")
        defer { Scratch.cleanUp(dir) }
        let adapterDir = dir.appendingPathComponent("adapter")
        try PEFTAdapter.save(lm.model, config: config, baseModel: "HuggingFaceTB/SmolLM2-135M-Instruct", to: adapterDir)

        let file = try SafetensorsFile(url: adapterDir.appendingPathComponent("adapter_model.safetensors"))
        XCTAssertEqual(file.tensors.count, 30 * 7 * 2)
        XCTAssertNotNil(file.tensor(named: "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"))
        XCTAssertEqual(file.tensor(named: "base_model.model.model.layers.29.mlp.down_proj.lora_B.weight")?.shape, [576, 8])

        let text = "<|im_start|>user\nName a prime number.<|im_end|>\n<|im_start|>assistant\nSeven is prime."
        let ids = lm.encodePrompt(text)
        let logits = try lm.model.logits(ids)
        let back = try LanguageModel.load(url, adapter: adapterDir)
        XCTAssertEqual(try back.model.logits(ids), logits)
        if Scratch.keeping {
            try dumpLogits(ids, logits, vocab: lm.model.vocabSize, text: text, to: dir.appendingPathComponent("sft_logits.safetensors"))
        }
    }

    /// tools/check_peft_roundtrip.py's recorded run: PeftModel.from_pretrained with sft's
    /// adapter gives sft's logits within 1e-4, and `sftctl merge`'s folder gives them in
    /// transformers too.
    func testPythonCheckRecordedAPass() throws {
        let r = try Fixtures.json("export/results/peft_roundtrip.json")
        XCTAssertEqual(r["pass"] as? Bool, true)
        let peft = try XCTUnwrap(r["peft_vs_sft"] as? [String: Any])
        XCTAssertLessThanOrEqual(try XCTUnwrap(peft["max_abs_diff"] as? Double), 1e-4)
    }
}
