// QLoRA on the real SmolLM2-135M-Instruct (GGUF Q4_1, dequantized and requantized to 4 bits
// while loading): the 4-bit model's losses on the golden texts equal those of transformers on
// bitsandbytes' NF4 / FP4 weights (Fixtures/quantization/smollm2_nf4.json, made by
// tools/make_nf4_fixtures.py --smollm2), and a short QLoRA finetune's loss falls like the LoRA
// run's on the f32 model.
import Foundation
import XCTest
import SFTCore
import SFTKernels

final class QLoRASmolLM2Tests: XCTestCase {
    let be = CPUBackend.shared

    func goldenIds() throws -> [String: [Int32]] {
        let texts = try Fixtures.json("model/smollm2_golden.json")["texts"] as! [String: [String: Any]]
        return texts.mapValues { ($0["ids"] as! [Int]).map(Int32.init) }
    }

    func meanLoss(_ m: CausalLM, _ ids: [Int32]) throws -> Float {
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        return try Autograd.withNoGrad { try m.loss(input, targets: targets).loss.item() }
    }

    func load(_ type: QuantType = .nf4) throws -> CausalLM {
        let source = try GGUFWeights(url: try Assets.require(Assets.smolLM2))
        return try ModelLoader.load(source, on: be, quantization: QuantizationConfig(type: type, blockSize: 64, doubleQuant: true))
    }

    func test4BitSmolLM2LossesEqualBitsandbytes() throws {
        let f32 = try RealModel.smolLM2().model
        let expected = try Fixtures.json("quantization/smollm2_nf4.json")["losses"] as! [String: [String: Double]]
        for type in QuantType.allCases {
            be.emptyCache()
            be.resetPeakMemory()
            let before = be.memoryStats.currentBytes
            let q = try load(type)
            // Streaming: the f32 Linears never exist at once; embeddings (113 MB) stay f32.
            let peak = be.memoryStats.peakBytes - before, f32Bytes = f32.parameterCount() * 4
            print("\(type) load: peak \(peak >> 20) MiB, holds \(q.quantizedBytes >> 20) MiB in 4 bits; f32 model \(f32Bytes >> 20) MiB")
            XCTAssertLessThan(peak, f32Bytes * 2 / 5, "\(type): allocator peak while loading")
            XCTAssertEqual(q.quantizedWeightNames().count, 30 * 7, "every Linear of the 30 layers (the LM head is tied)")
            XCTAssertLessThan(q.parameterCount(), f32.parameterCount() / 3, "only embeddings and norms stay f32")
            for (name, ids) in try goldenIds() {
                let loss = Double(try meanLoss(q, ids)), bnb = try XCTUnwrap(expected[type.rawValue]?[name])
                XCTAssertEqual(loss, bnb, accuracy: 2e-3 * bnb, "\(type) \(name): sft \(loss), bitsandbytes \(bnb)")
            }
        }
    }

    func finetune(_ m: CausalLM, ids: [Int32], steps: Int) throws -> [Float] {
        try m.applyLoRA(LoRAConfig(r: 8, alpha: 16, dropout: 0), seed: 1)
        let opt = try AdamW(parameters: m.trainableParameters, config: AdamWConfig())
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        var losses: [Float] = []
        for _ in 0..<steps {
            m.zeroGrad()
            let (loss, _) = try m.loss(input, targets: targets, checkpointing: true)
            losses.append(try loss.item())
            try Autograd.backward(loss)
            try opt.update(lr: 2e-3)
        }
        return losses
    }

    func testQLoRAFinetuneLossFallsLikeLoRA() throws {
        let ids = try XCTUnwrap(goldenIds()["numbers"])
        let lora = try finetune(try ModelLoader.load(at: try Assets.require(Assets.smolLM2), on: be).model, ids: ids, steps: 6)
        let qlora = try finetune(try load(.nf4), ids: ids, steps: 6)
        print("SmolLM2 LoRA  losses:", lora)
        print("SmolLM2 QLoRA losses:", qlora)
        XCTAssertLessThan(lora.last!, 0.6 * lora[0])
        XCTAssertLessThan(qlora.last!, 0.6 * qlora[0])
        let dropLoRA = lora[0] - lora.last!, dropQLoRA = qlora[0] - qlora.last!
        XCTAssertEqual(dropQLoRA, dropLoRA, accuracy: 0.25 * dropLoRA, "loss drop QLoRA \(dropQLoRA) vs LoRA \(dropLoRA)")
    }
}
