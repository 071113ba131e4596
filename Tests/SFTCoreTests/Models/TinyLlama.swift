// A tiny randomly initialized Llama for model-level gradient and training tests.
import Foundation
import SFTCore
import SFTKernels

enum TinyLlama {
    static let config = LlamaConfig(hiddenSize: 16, intermediateSize: 24, numLayers: 2, numHeads: 4, numKVHeads: 2,
                                    vocabSize: 40, rmsNormEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false)

    static func make(seed: UInt64 = 1, config: LlamaConfig = config) throws -> LlamaModel {
        let m = try LlamaModel(config: config, on: CPUBackend.shared)
        var rng = SeededRandom(seed: seed)
        for (name, p) in m.namedParameters() {
            let n = p.value.count
            let isNorm = name.contains("norm")
            try p.value.assign((0..<n).map { _ in isNorm ? Float(1 + 0.1 * rng.nextNormal()) : Float(0.3 * rng.nextNormal()) })
        }
        return m
    }

    /// Gives every LoRA B a random value (PEFT starts it at zero, which hides A's gradient).
    static func randomizeLoRA(_ m: Module, seed: UInt64 = 7) throws {
        var rng = SeededRandom(seed: seed)
        for (name, p) in m.namedParameters() where name.hasSuffix("lora_B.weight") {
            try p.value.assign((0..<p.value.count).map { _ in Float(0.2 * rng.nextNormal()) })
        }
    }

    static func tokens(_ n: Int, seed: UInt64) -> [Int32] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Int32(rng.next() % UInt64(config.vocabSize)) }
    }
}
