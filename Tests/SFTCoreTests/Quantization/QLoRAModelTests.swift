// QLoRA on a whole (small, random) Llama: quantize-on-load from a checkpoint equals quantizing
// in memory and keeps the allocator's peak near the 4-bit size, the strict loader still
// rejects unknown keys, a QLoRA run's loss falls like the LoRA run's, merging reports the
// logit change, and the memory estimate agrees with what the model holds.
import Foundation
import XCTest
import SFTCore
import SFTKernels

final class QLoRAModelTests: XCTestCase {
    let be = CPUBackend.shared
    // Linears dominate, dimensions multiples of 64 as in real models (C 128, F 256).
    static let config = LlamaConfig(hiddenSize: 128, intermediateSize: 256, numLayers: 2, numHeads: 4, numKVHeads: 2,
                                    vocabSize: 64, rmsNormEps: 1e-5, ropeTheta: 10000, tieWordEmbeddings: false)

    func randomModel(seed: UInt64) throws -> LlamaModel {
        let m = try LlamaModel(config: Self.config, on: be)
        var rng = SeededRandom(seed: seed)
        for (name, p) in m.namedParameters() {
            let norm = name.contains("norm")
            try p.value.assign((0..<p.value.count).map { _ in norm ? Float(1 + 0.1 * rng.nextNormal()) : Float(0.08 * rng.nextNormal()) })
        }
        return m
    }

    func tempDir() throws -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("sft-qlora-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: u, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }

    /// The model's parameters as a safetensors checkpoint (plus `extra` tensors).
    func checkpoint(_ m: LlamaModel, extra: [String: [Float]] = [:]) throws -> SafetensorsWeights {
        var tensors: [(name: String, tensor: SafetensorsTensor)] = []
        for (name, p) in m.namedParameters() { tensors.append((name, try SafetensorsTensor(try p.value.floats(), shape: p.value.shape))) }
        for (name, v) in extra { tensors.append((name, try SafetensorsTensor(v, shape: [v.count]))) }
        let url = try tempDir().appendingPathComponent("model.safetensors")
        try Safetensors.write(tensors, to: url)
        return try SafetensorsWeights(files: [url], config: Self.config.hf)
    }

    func tokens(_ n: Int, seed: UInt64) -> [Int32] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Int32(rng.next() % 64) }
    }

    func testQuantizeOnLoadEqualsQuantizingInMemoryWithLowPeakMemory() throws {
        let f32 = try randomModel(seed: 1)
        let source = try checkpoint(f32)
        let config = QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)
        let f32Bytes = f32.parameterCount() * 4
        be.emptyCache()
        be.resetPeakMemory()
        let before = be.memoryStats.currentBytes
        let loaded = try ModelLoader.load(source, on: be, quantization: config)
        let peak = be.memoryStats.peakBytes - before
        print("quantize-on-load peak: \(peak) bytes; f32 model: \(f32Bytes) bytes")
        // 14 Linears quantized, the LM head kept in f32.
        XCTAssertEqual(loaded.quantizedWeightNames().count, 14)
        XCTAssertFalse(loaded.quantizedWeightNames().contains("lm_head.weight"))
        // Held: ~1/7 of the Linears' f32 bytes, plus embeddings, head and norms in f32.
        let headAndEmbeddings = 2 * 64 * 128 * 4
        XCTAssertLessThan(peak, headAndEmbeddings + f32Bytes / 4, "peak \(peak) bytes while loading (f32 model \(f32Bytes))")

        try f32.quantizeLinears(config: config)
        let ids = tokens(12, seed: 3)
        XCTAssertEqual(try loaded.logits(ids), try f32.logits(ids), "quantize-on-load and in-memory quantization agree exactly")
    }

    func testStrictLoaderStillRejectsUnknownKeysAndTheLMHeadMustStayF32() throws {
        let source = try checkpoint(try randomModel(seed: 2), extra: ["model.layers.0.mlp.extra.weight": [1, 2]])
        XCTAssertThrowsError(try ModelLoader.load(source, on: be, quantization: QuantizationConfig())) { e in
            XCTAssertTrue("\(e)".contains("model.layers.0.mlp.extra.weight"), "\(e)")
        }
        let clean = try checkpoint(try randomModel(seed: 2))
        XCTAssertThrowsError(try ModelLoader.load(clean, on: be, quantization: QuantizationConfig(), skip: [])) { e in
            XCTAssertTrue("\(e)".contains("lm_head"), "\(e)")
        }
        XCTAssertThrowsError(try ModelLoader.load(clean, on: be, quantization: QuantizationConfig(blockSize: 100))) { e in
            XCTAssertTrue("\(e)".contains("block_size"), "\(e)")
        }
    }

    /// One fixed batch, AdamW on the adapters: LoRA on the f32 model and QLoRA on its NF4 copy
    /// start from nearly the same loss and fall alike.
    func trainingCurve(quantize: QuantizationConfig?, steps: Int) throws -> [Float] {
        let m = try randomModel(seed: 4)
        if let quantize { try m.quantizeLinears(config: quantize) }
        try m.applyLoRA(LoRAConfig(r: 8, alpha: 16, dropout: 0), seed: 11)
        let opt = try AdamW(parameters: m.trainableParameters, config: AdamWConfig())
        let ids = tokens(48, seed: 5)
        let input = ModelInput(ids: try Tensor(ints: ids, shape: [48], on: be),
                                   positions: try Tensor(ints: (0..<24).map { Int32($0) } + (0..<24).map { Int32($0) }, shape: [48], on: be),
                                   docIds: nil, B: 2, T: 24)
        let targets = try Tensor(ints: (0..<48).map { i in i % 24 == 23 ? -100 : ids[i + 1] }, shape: [48], on: be)
        var losses: [Float] = []
        for _ in 0..<steps {
            m.zeroGrad()
            let (loss, _) = try m.loss(input, targets: targets, checkpointing: true)
            losses.append(try loss.item())
            try Autograd.backward(loss)
            try opt.update(lr: 1e-2)
        }
        return losses
    }

    func testQLoRALossFallsLikeLoRA() throws {
        let steps = 25
        let lora = try trainingCurve(quantize: nil, steps: steps)
        let qlora = try trainingCurve(quantize: QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true), steps: steps)
        print("LoRA  losses:", lora.map { ($0 * 1000).rounded() / 1000 })
        print("QLoRA losses:", qlora.map { ($0 * 1000).rounded() / 1000 })
        XCTAssertEqual(qlora[0], lora[0], accuracy: 0.05 * lora[0], "NF4 changes the starting loss only a little")
        XCTAssertLessThan(lora[steps - 1], 0.5 * lora[0], "LoRA learns the batch: \(lora)")
        XCTAssertLessThan(qlora[steps - 1], 0.5 * qlora[0], "QLoRA learns the batch: \(qlora)")
        for i in stride(from: 0, to: steps, by: 5) {
            XCTAssertEqual(qlora[i], lora[i], accuracy: 0.15 * lora[0], "step \(i): QLoRA \(qlora[i]) vs LoRA \(lora[i])")
        }
    }

    func testMergeReportsLogitChangeAndLeavesAnF32Model() throws {
        let m = try randomModel(seed: 6)
        try m.quantizeLinears(config: QuantizationConfig(type: .nf4, blockSize: 64))
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 3)
        var rng = SeededRandom(seed: 8)
        for (name, p) in m.namedParameters() where name.hasSuffix("lora_B.weight") {
            try p.value.assign((0..<p.value.count).map { _ in Float(0.05 * rng.nextNormal()) })
        }
        let ids = tokens(10, seed: 9)
        let before = try m.logits(ids)
        let copy = try randomModel(seed: 6)   // same weights, to merge into bf16 below
        try copy.quantizeLinears(config: QuantizationConfig(type: .nf4, blockSize: 64))
        try copy.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 3)
        for ((_, a), (_, b)) in zip(m.trainableParameters, copy.trainableParameters) { try b.value.assign(try a.value.floats()) }

        let exact = try QLoRAMerge.merge(m, sampleTokens: ids, dtype: .f32)
        XCTAssertEqual(m.quantizedWeightNames().count, 0)
        XCTAssertFalse(m.namedModules().contains { ($0.1 as? Linear)?.lora != nil })
        XCTAssertEqual(m.parameterCount(), try randomModel(seed: 6).parameterCount())
        XCTAssertLessThan(exact.maxAbs, 1e-4, "f32 merge is exact up to rounding: \(exact)")
        XCTAssertEqual(exact.count, before.count)
        let rounded = try QLoRAMerge.merge(copy, sampleTokens: ids, dtype: .bf16)
        XCTAssertGreaterThan(rounded.maxAbs, exact.maxAbs, "bf16 rounding shows in the report: \(rounded)")
        XCTAssertLessThan(rounded.maxAbs, 0.1)
        XCTAssertTrue(rounded.description.contains("max |Δ logits|"))
        print("merge f32: \(exact); merge bf16: \(rounded)")
    }

    func testMemoryEstimateMatchesWhatTheModelHolds() throws {
        let q = QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)
        let lora = LoRAConfig(r: 8, alpha: 16, dropout: 0)
        let est = MemoryEstimate(layout: Self.config.layout, quantization: q, lora: lora, batch: 2, sequence: 64, checkpointing: true)
        let m = try randomModel(seed: 1)
        try m.quantizeLinears(config: q)
        try m.applyLoRA(lora, seed: 1)
        let held = m.quantizedBytes + m.namedParameters().filter { !$0.1.trainable }.reduce(0) { $0 + $1.1.value.count * 4 }
        XCTAssertEqual(Double(est.weights), Double(held), accuracy: 0.02 * Double(held), "weights")
        XCTAssertEqual(est.adapters, m.parameterCount(trainableOnly: true) * 4)
        XCTAssertEqual(est.optimizer, 2 * est.adapters)
        XCTAssertLessThan(est.activationsCheckpointed, est.activations)
        XCTAssertTrue(est.description.contains("total"))

        // A Llama-2-7B shape: 4-bit linears (~3.3 GB) plus bf16 embeddings and head (~0.5 GB).
        let l7 = LlamaConfig(hiddenSize: 4096, intermediateSize: 11008, numLayers: 32, numHeads: 32, numKVHeads: 32, vocabSize: 32000)
        let e7 = MemoryEstimate(layout: l7.layout, quantization: q, lora: LoRAConfig(r: 64, alpha: 16, dropout: 0.05),
                                batch: 1, sequence: 2048, checkpointing: true, weightBytes: 2, activationBytes: 2)
        print(e7)
        XCTAssertEqual(Double(e7.weights) / 1e9, 3.87, accuracy: 0.05, e7.description)
        XCTAssertEqual(Double(e7.adapters) / 1e6, 640, accuracy: 2, "r=64 on all linears: 160M parameters in f32")
    }
}
