// TrainingBenchmark with OpProfile on: the op table covers the timed steps only (the warm-up
// step is dropped), so per-step numbers printed by `sftctl bench train --profile` are right.

import SFTCore
import SFTKernels
import XCTest

final class TrainingBenchmarkTests: XCTestCase {
    func testProfileCoversTheTimedStepsOnly() throws {
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 1)
        defer { OpProfile.enabled = false; OpProfile.reset() }
        OpProfile.enabled = true
        let steps = 3
        let res = try TrainingBenchmark.run(model: m, seq: 12, steps: steps, checkpointing: false)
        OpProfile.enabled = false
        XCTAssertEqual(res.steps.count, steps)
        let rows = Dictionary(uniqueKeysWithValues: OpProfile.entries.map { ($0.name, $0.entry) })
        // One attention forward and backward per layer per step, one fused loss per step.
        XCTAssertEqual(rows["attentionForward"]?.calls, steps * TinyLlama.config.numLayers)
        XCTAssertEqual(rows["attentionBackward"]?.calls, steps * TinyLlama.config.numLayers)
        XCTAssertEqual(rows["crossEntropyLMHead"]?.calls, steps)
        let gemms = rows.filter { $0.key.hasPrefix("gemm ") }
        XCTAssertFalse(gemms.isEmpty, "GEMMs are recorded by shape")
        XCTAssertTrue(gemms.values.allSatisfy { $0.flops > 0 && $0.calls % steps == 0 },
                      "every GEMM shape runs the same number of times per step: \(gemms.mapValues(\.calls))")
    }
}
