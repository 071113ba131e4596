// Whole models on the CUDA backend against the CPU backend: a tiny Llama's loss and gradients
// (LoRA and full finetuning), and SmolLM2-135M's loss, LoRA adapter gradients and cached decode
// logits, with the same weights and tokens on both. Runs where a GPU is usable; elsewhere
// skipped with the loader's one-sentence reason.
import Foundation
import SFTCore
import XCTest

final class CUDATrainingParityTests: XCTestCase {
    var gpu: CUDABackend!

    override func setUpWithError() throws {
        if let why = Device.cuda(0).unavailableReason { throw XCTSkip("no usable CUDA device: \(why)") }
        gpu = try CUDABackend.shared(ordinal: 0)
    }

    /// The tiny Llama of TinyLlama.make, built on `be`.
    func tinyModel(on be: Backend, lora: Bool) throws -> LlamaModel {
        let m = try LlamaModel(config: TinyLlama.config, on: be)
        let cpu = try TinyLlama.make()
        let values = Dictionary(uniqueKeysWithValues: try cpu.namedParameters().map { ($0.0, try $0.1.value.floats()) })
        for (name, p) in m.namedParameters() { try p.value.assign(values[name]!) }
        if lora {
            try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 9)
            try TinyLlama.randomizeLoRA(m)
        } else {
            m.setTrainable(true)
        }
        return m
    }

    /// Loss and every trainable gradient after one forward/backward.
    func step(_ m: CausalLM, _ ids: [Int32], on be: Backend) throws -> (Double, [String: [Float]]) {
        m.zeroGrad()
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        let (l, _) = try m.loss(input, targets: targets)
        try Autograd.backward(l)
        var g: [String: [Float]] = [:]
        for (n, p) in m.trainableParameters { g[n] = try p.value.grad?.floats() ?? [] }
        return (Double(try l.item()), g)
    }

    func assertSameStep(_ a: (Double, [String: [Float]]), _ b: (Double, [String: [Float]]), rtol: Double, _ what: String) {
        XCTAssertEqual(a.0, b.0, accuracy: rtol * max(1, abs(b.0)), "\(what) loss")
        XCTAssertEqual(Set(a.1.keys), Set(b.1.keys), what)
        for (name, want) in b.1 {
            let got = a.1[name] ?? []
            XCTAssertEqual(got.count, want.count, "\(what) \(name)")
            let scale = max(want.map { abs(Double($0)) }.max() ?? 0, 1e-6)
            let worst = zip(got, want).map { abs(Double($0) - Double($1)) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, rtol * scale, "\(what) \(name): worst |gpu - cpu| \(worst), max |grad| \(scale)")
        }
    }

    func testTinyLlamaLoRAAndFullStepsMatchCPU() throws {
        let ids = TinyLlama.tokens(23, seed: 5)
        for lora in [true, false] {
            let want = try step(try tinyModel(on: CPUBackend.shared, lora: lora), ids, on: CPUBackend.shared)
            let got = try step(try tinyModel(on: gpu, lora: lora), ids, on: gpu)
            assertSameStep(got, want, rtol: 1e-4, lora ? "tiny LoRA" : "tiny full")
        }
    }

    func testSmolLM2LoRAStepAndDecodeMatchCPU() throws {
        // The GPU machine may not have the assets (it reaches no network): skip rather than fail.
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else {
            throw XCTSkip("\(Assets.smolLM2.path) is missing (scripts/fetch-assets, or set SFT_ASSETS)")
        }
        let url = Assets.smolLM2
        var rng = SeededRandom(seed: 11)
        let cpuModel = try ModelLoader.load(at: url, on: CPUBackend.shared).model
        let gpuModel = try ModelLoader.load(at: url, on: gpu).model
        let ids = (0..<96).map { _ in Int32(rng.next() % UInt64(cpuModel.vocabSize)) }
        for m in [cpuModel, gpuModel] { try m.applyLoRA(LoRAConfig(r: 8, alpha: 16, dropout: 0), seed: 4) }
        for m in [cpuModel, gpuModel] { try TinyLlama.randomizeLoRA(m) }
        let want = try step(cpuModel, ids, on: CPUBackend.shared)
        let got = try step(gpuModel, ids, on: gpu)
        assertSameStep(got, want, rtol: 2e-3, "SmolLM2 LoRA")
        // Generation path: prefill then one token at a time through the KV cache.
        let cpuCache = try cpuModel.makeCache(capacity: 32), gpuCache = try gpuModel.makeCache(capacity: 32)
        for chunk in [Array(ids[0..<10]), [ids[10]], [ids[11]]] {
            let a = try gpuModel.decode(chunk, cache: gpuCache), b = try cpuModel.decode(chunk, cache: cpuCache)
            let worst = zip(a, b).map { abs($0 - $1) }.max() ?? 0
            XCTAssertLessThanOrEqual(worst, 2e-3 * max(1, b.map(abs).max() ?? 0), "decode logits after \(chunk.count) tokens")
        }
    }
}
