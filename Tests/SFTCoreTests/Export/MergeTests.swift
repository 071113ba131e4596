// Merging LoRA adapters into the base weights: the merged model computes what base + adapter
// computed (logits within 1e-5), in memory and through the files `sftctl merge` reads and
// writes (HF folder + PEFT adapter folder → merged HF folder).
import XCTest
import SFTCore
import SFTKernels

final class MergeTests: XCTestCase {
    static func randomizeLoRA(_ m: Module, seed: UInt64, scale: Double) throws {
        var rng = SeededRandom(seed: seed)
        for (name, p) in m.namedParameters() where name.hasSuffix("lora_B.weight") {
            try p.value.assign((0..<p.value.count).map { _ in Float(scale * rng.nextNormal()) })
        }
    }

    func testMergedLogitsEqualBasePlusAdapter() throws {
        let lm = try ExportFixtures.tinyLanguageModel()
        let adapted = try lm.model.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0.1), seed: 5)
        try Self.randomizeLoRA(lm.model, seed: 9, scale: 0.3)
        let ids = lm.encodePrompt(ExportFixtures.sampleText)
        let before = try lm.model.logits(ids)
        let report = try lm.mergeAdapters(sampleText: ExportFixtures.sampleText)
        XCTAssertEqual(report.mergedLayers, adapted.count)
        XCTAssertEqual(report.mergedLayers, 14)  // 2 layers × (q, k, v, o, gate, up, down)
        XCTAssertEqual(report.tokens, ids.count)
        XCTAssertLessThanOrEqual(report.maxAbsLogitDiff, 1e-5)
        XCTAssertGreaterThan(report.maxAbsAdapterEffect, 0.05, "the adapter must change the logits for the test to mean anything")
        XCTAssertFalse(lm.model.namedParameters().contains { $0.0.contains("lora_") })
        assertClose(try lm.model.logits(ids), before, tolerance: 1e-5, "merged vs base + adapter")
    }

    /// What `sftctl merge` does: HF folder + PEFT adapter folder in, merged HF folder out.
    func testMergeThroughFilesMatchesBasePlusAdapter() throws {
        let lm = try ExportFixtures.tinyLanguageModel(seed: 11)
        let base = try Scratch.folder("merge_base"), adapterDir = try Scratch.folder("merge_adapter"), out = try Scratch.folder("merge_out")
        defer { [base, adapterDir, out].forEach(Scratch.cleanUp) }
        try HFExport.saveModel(lm, to: base)
        let config = LoRAConfig(r: 4, alpha: 16, dropout: 0, targetModules: ["q_proj", "v_proj", "down_proj"])
        try lm.model.applyLoRA(config, seed: 2)
        try Self.randomizeLoRA(lm.model, seed: 3, scale: 0.2)
        try PEFTAdapter.save(lm.model, config: config, baseModel: base.path, to: adapterDir)

        let withAdapter = try LanguageModel.load(base, adapter: adapterDir)
        let ids = withAdapter.encodePrompt(ExportFixtures.sampleText)
        let expected = try withAdapter.model.logits(ids)
        assertClose(expected, try lm.model.logits(ids), tolerance: 0, "adapter folder reloads exactly")
        let report = try withAdapter.mergeAdapters()
        XCTAssertEqual(report.mergedLayers, 6)
        XCTAssertGreaterThan(report.maxAbsAdapterEffect, 0.05)
        XCTAssertLessThanOrEqual(report.maxAbsLogitDiff, 1e-5)
        try HFExport.saveModel(withAdapter, to: out)
        let merged = try LanguageModel.load(out)
        assertClose(try merged.model.logits(ids), expected, tolerance: 1e-5, "merged folder vs base + adapter")
        XCTAssertEqual(merged.encodePrompt(ExportFixtures.sampleText), ids)
    }

    /// The real model with a random rank-8 adapter on every linear layer.
    func testSmolLM2MergeMovesLogitsOnlyByFloatRounding() throws {
        let lm = try LanguageModel.load(try Assets.require(Assets.smolLM2))
        try lm.model.applyLoRA(LoRAConfig(r: 8, alpha: 16, dropout: 0), seed: 4)
        try Self.randomizeLoRA(lm.model, seed: 6, scale: 0.02)
        let report = try lm.mergeAdapters()
        XCTAssertEqual(report.mergedLayers, 30 * 7)
        XCTAssertGreaterThan(report.maxAbsAdapterEffect, 0.1)
        // Folding B·A into W changes float rounding in each of 30 layers: about 1e-4 on logits of
        // magnitude ~20, as PEFT's own merge_and_unload (tools/check_peft_roundtrip.py records both).
        XCTAssertLessThanOrEqual(report.maxAbsLogitDiff, 2e-4)
        XCTAssertLessThanOrEqual(report.meanAbsLogitDiff, 2e-5)
        print("SmolLM2 merge report:", report.json)
    }
}
