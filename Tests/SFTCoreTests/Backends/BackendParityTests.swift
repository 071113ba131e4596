// One test body per model-level behaviour, run on every backend present: the CPU always, CUDA
// wherever it is usable — the emulated GPU on CI (tools/cuda-emulate, SFT_CUDA_LIBS), a real GPU
// on a GPU machine (tools/gpu-check). Each accelerator is checked against the CPU on the same
// weights and tokens, and against the transformers golden values where the CPU is.
// SFT_TEST_DEVICES=cuda turns an unusable CUDA into a failure instead of a skip, so CI cannot pass
// by not running the GPU half.
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

enum TestDevices {
    /// The accelerators to compare with the CPU.
    static func accelerators() throws -> [Device] {
        let wanted = (ProcessInfo.processInfo.environment["SFT_TEST_DEVICES"] ?? "").split(separator: ",").map(String.init)
        if let why = Device.cuda(0).unavailableReason {
            if wanted.contains("cuda") { throw SFTError.unsupported("SFT_TEST_DEVICES asks for cuda, but: \(why)") }
            return []
        }
        return [.cuda(0)]
    }

    /// Every device: the CPU first.
    static func all() throws -> [Device] { [.cpu] + (try accelerators()) }

    /// The accelerators, or a skip naming why there are none.
    static func requireAccelerators() throws -> [Device] {
        let a = try accelerators()
        if a.isEmpty { throw XCTSkip("no accelerator: \(Device.cuda(0).unavailableReason ?? "?")") }
        return a
    }
}

final class BackendParityTests: XCTestCase {
    var packageRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent() }

    // MARK: golden values on every device

    /// SmolLM2's loss and top-5 logits equal transformers' on every device (the fixture of
    /// LlamaGoldenTests, at its small T).
    func testSmolLM2GoldenLossAndLogitsOnEveryDevice() throws {
        _ = try Assets.require(Assets.smolLM2)
        let golden = try Fixtures.json("model/smollm2_golden.json")["texts"] as! [String: [String: Any]]
        for device in try TestDevices.all() {
            let m = try LanguageModel.load(Assets.smolLM2, on: device).model
            for (name, t) in golden.sorted(by: { $0.key < $1.key }) {
                let ids = (t["ids"] as! [Int]).map(Int32.init), T = ids.count, V = m.vocabSize
                let be = try backend(for: device)
                let input = try ModelInput(tokens: ids, on: be)
                let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [T], on: be)
                let loss = try Autograd.withNoGrad { try m.loss(input, targets: targets).loss.item() }
                let want = t["mean_loss"] as! Double
                XCTAssertEqual(Double(loss), want, accuracy: 1e-4 * want, "\(device) \(name): loss")
                let logits = try m.logits(ids)
                let last = Array(logits[((T - 1) * V)..<(T * V)])
                for (i, id) in (t["top5_ids"] as! [Int]).enumerated() {
                    XCTAssertEqual(Double(last[id]), (t["top5_logits"] as! [Double])[i], accuracy: 1e-3, "\(device) \(name): top-5 #\(i)")
                }
            }
        }
    }

    // MARK: training steps against the CPU

    /// Loss and every trainable gradient after one forward/backward.
    func step(_ m: CausalLM, _ input: (Backend) throws -> (ModelInput, Tensor)) throws -> (Double, [String: [Float]]) {
        let be = m.lmHeadWeight.value.backend
        m.zeroGrad()
        let (x, targets) = try input(be)
        let (l, _) = try m.loss(x, targets: targets)
        try Autograd.backward(l)
        var g: [String: [Float]] = [:]
        for (n, p) in m.trainableParameters { g[n] = try p.value.grad?.floats() ?? [] }
        return (Double(try l.item()), g)
    }

    func assertSameStep(_ a: (Double, [String: [Float]]), _ b: (Double, [String: [Float]]), rtol: Double, _ what: String) {
        XCTAssertEqual(a.0, b.0, accuracy: rtol * max(1, abs(b.0)), "\(what): loss")
        XCTAssertEqual(Set(a.1.keys), Set(b.1.keys), what)
        XCTAssertFalse(b.1.isEmpty, "\(what): no trainable parameters")
        for (name, want) in b.1 {
            let got = a.1[name] ?? []
            XCTAssertEqual(got.count, want.count, "\(what) \(name)")
            let scale = max(want.map { abs(Double($0)) }.max() ?? 0, 1e-6)
            let worst = zip(got, want).map { abs(Double($0) - Double($1)) }.max() ?? .infinity
            XCTAssertLessThanOrEqual(worst, rtol * scale, "\(what) \(name): worst |device - cpu| \(worst), max |grad| \(scale)")
        }
    }

    func tokens(_ ids: [Int32]) -> (Backend) throws -> (ModelInput, Tensor) {
        { be in (try ModelInput(tokens: ids, on: be), try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)) }
    }

    /// SmolLM2 at T = 48: LoRA, QLoRA (NF4, double quantization) and full finetuning steps give
    /// the CPU's loss and gradients.
    func testSmolLM2LoRAStepMatchesCPU() throws { try smolLM2StepMatchesCPU("lora") }
    func testSmolLM2QLoRAStepMatchesCPU() throws { try smolLM2StepMatchesCPU("qlora") }
    func testSmolLM2FullStepMatchesCPU() throws { try smolLM2StepMatchesCPU("full") }

    func smolLM2StepMatchesCPU(_ method: String) throws {
        _ = try Assets.require(Assets.smolLM2)
        var rng = SeededRandom(seed: 11)
        let ids = (0..<48).map { _ in Int32(rng.next() % 49152) }
        let nf4 = QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)
        for device in try TestDevices.requireAccelerators() {
            do {
                func make(_ d: Device) throws -> CausalLM {
                    let m = try LanguageModel.load(Assets.smolLM2, on: d, quantization: method == "qlora" ? nf4 : nil).model
                    if method == "full" { m.setTrainable(true) } else {
                        try m.applyLoRA(LoRAConfig(r: 8, alpha: 16, dropout: 0), seed: 4)
                        try TinyLlama.randomizeLoRA(m)
                    }
                    return m
                }
                let want = try step(try make(.cpu), tokens(ids))
                let got = try step(try make(device), tokens(ids))
                // Full finetuning compares every weight gradient, embedding included (2e-3 of the largest).
                assertSameStep(got, want, rtol: 2e-3, "\(device) SmolLM2 \(method)")
            }
        }
    }

    /// Packed rows (documents that must not see each other) give the unpacked losses and
    /// gradients on every device.
    func testPackedEqualsUnpackedOnEveryDevice() throws {
        let a = TinyLlama.tokens(9, seed: 1), b = TinyLlama.tokens(14, seed: 2)
        for device in try TestDevices.all() {
            let be = try backend(for: device)
            let m = try tinyModel(on: be)
            // Unpacked: each document alone, summed losses (the loss is a sum over tokens).
            m.zeroGrad()
            var total = 0.0
            for doc in [a, b] {
                let (x, t) = try tokens(doc)(be)
                let (l, _) = try m.loss(x, targets: t, normalizer: 1)
                try Autograd.backward(l)
                total += Double(try l.item())
            }
            let unpacked = try m.trainableParameters.map { try $0.1.value.grad!.floats() }
            m.zeroGrad()
            let ids = a + b
            let positions = (0..<Int32(a.count)).map { $0 } + (0..<Int32(b.count)).map { $0 }
            let docs = [Int32](repeating: 0, count: a.count) + [Int32](repeating: 1, count: b.count)
            let labels = Array(a.dropFirst()) + [-100] + Array(b.dropFirst()) + [-100]
            let x = ModelInput(ids: try Tensor(ints: ids, shape: [ids.count], on: be),
                               positions: try Tensor(ints: positions, shape: [ids.count], on: be),
                               docIds: try Tensor(ints: docs, shape: [ids.count], on: be), B: 1, T: ids.count)
            let (l, _) = try m.loss(x, targets: try Tensor(ints: labels, shape: [ids.count], on: be), normalizer: 1)
            try Autograd.backward(l)
            XCTAssertEqual(Double(try l.item()), total, accuracy: 1e-4 * abs(total), "\(device): packed loss")
            let packed = try m.trainableParameters.map { try $0.1.value.grad!.floats() }
            for (p, u) in zip(packed, unpacked) {
                let scale = max(u.map { abs($0) }.max() ?? 0, 1e-6)
                XCTAssertLessThanOrEqual(zip(p, u).map { abs($0 - $1) }.max() ?? 1, 1e-4 * scale, "\(device): packed gradient")
            }
        }
    }

    /// The tiny Llama of TinyLlama.make, with randomized LoRA adapters, on `be`.
    func tinyModel(on be: Backend) throws -> CausalLM {
        let m = try LlamaModel(config: TinyLlama.config, on: be)
        let cpu = try TinyLlama.make()
        let values = Dictionary(uniqueKeysWithValues: try cpu.namedParameters().map { ($0.0, try $0.1.value.floats()) })
        for (name, p) in m.namedParameters() { try p.value.assign(values[name]!) }
        try m.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 9)
        try TinyLlama.randomizeLoRA(m)
        return m
    }

    // MARK: the finetune job and generation

    /// The sample data packs into 2 rows of 64 tokens: 3 epochs give up to 6 steps (max_steps
    /// does not add epochs).
    /// `constantLR`: a schedule that does not depend on max_steps, so a 2-step run resumed to
    /// 4 steps is the 4-step run.
    func finetuneConfig(method: String, device: Device, out: URL, steps: Int = 3, constantLR: Bool = false) throws -> FinetuneConfig {
        try FinetuneConfig.from(json: [
            "lr_scheduler_type": constantLR ? "constant" : "linear",
            "model": Assets.smolLM2.path, "data": packageRoot.appendingPathComponent("Examples/data/sharegpt.json").path,
            "format": "sharegpt", "output_dir": out.path, "method": method, "double_quant": true,
            "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "max_seq_length": 64, "packing": true,
            "learning_rate": method == "full" ? 1e-4 : 1e-3, "max_steps": steps, "num_train_epochs": 3, "logging_steps": 1,
            "save_steps": 2, "save_total_limit": 3, "seed": 5, "device": device.description,
        ])
    }

    func losses(_ config: FinetuneConfig, resume: String? = nil) throws -> [Int: Double] {
        var c = config
        c.resumeFromCheckpoint = resume
        var out: [Int: Double] = [:]
        _ = try Finetune.run(c, onEvent: { e in
            if case .step(let m, _) = e, let l = m.loss { out[m.step] = l }
            return .continue
        })
        return out
    }

    func scratch(_ name: String) -> URL {
        let u = FileManager.default.temporaryDirectory.appendingPathComponent("sft-\(name)-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: u) }
        return u
    }

    /// `sftctl finetune --device D`: 3-step LoRA, QLoRA (NF4 + double quantization) and full runs
    /// at max_seq_length 64 give the CPU's per-step losses within 1e-3 relative.
    func testFinetuneLoRAMatchesCPUPerStep() throws { try finetuneRunMatchesCPUPerStep("lora") }
    func testFinetuneQLoRAMatchesCPUPerStep() throws { try finetuneRunMatchesCPUPerStep("qlora") }
    func testFinetuneFullMatchesCPUPerStep() throws { try finetuneRunMatchesCPUPerStep("full") }

    func finetuneRunMatchesCPUPerStep(_ method: String) throws {
        _ = try Assets.require(Assets.smolLM2)
        for device in try TestDevices.requireAccelerators() {
            do {
                let want = try losses(try finetuneConfig(method: method, device: .cpu, out: scratch("cpu-\(method)")))
                let got = try losses(try finetuneConfig(method: method, device: device, out: scratch("dev-\(method)")))
                XCTAssertEqual(Array(want.keys).sorted(), [1, 2, 3], method)
                XCTAssertEqual(Array(got.keys).sorted(), [1, 2, 3], "\(device) \(method)")
                for (s, w) in want {
                    XCTAssertEqual(got[s] ?? .nan, w, accuracy: 1e-3 * abs(w), "\(device) \(method) step \(s)")
                }
            }
        }
    }

    /// A run checkpointed on one device resumes on the other (both ways) with the losses of the
    /// uninterrupted run.
    func testResumeAcrossDevices() throws {
        _ = try Assets.require(Assets.smolLM2)
        for device in try TestDevices.requireAccelerators() {
            let whole = try losses(try finetuneConfig(method: "lora", device: .cpu, out: scratch("whole"), steps: 4, constantLR: true))
            for (first, second) in [(Device.cpu, device), (device, Device.cpu)] {
                let out = scratch("resume")
                _ = try losses(try finetuneConfig(method: "lora", device: first, out: out, steps: 2, constantLR: true))
                let rest = try losses(try finetuneConfig(method: "lora", device: second, out: out, steps: 4, constantLR: true),
                                      resume: "latest")
                XCTAssertEqual(Array(rest.keys).sorted(), [3, 4], "\(first) → \(second)")
                for s in [3, 4] {
                    XCTAssertEqual(rest[s] ?? .nan, whole[s]!, accuracy: 1e-3 * abs(whole[s]!), "\(first) → \(second) step \(s)")
                }
            }
        }
    }

    /// Greedy generation (the exact path) gives the CPU's tokens on every device: dense weights
    /// and the 4-bit base.
    func testGreedyGenerationMatchesCPU() throws { try greedyGenerationMatchesCPU(quantization: nil) }
    func testGreedyGenerationWith4BitBaseMatchesCPU() throws {
        try greedyGenerationMatchesCPU(quantization: QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true))
    }

    func greedyGenerationMatchesCPU(quantization: QuantizationConfig?) throws {
        _ = try Assets.require(Assets.smolLM2)
        // The 4-bit decode runs warp-shuffle reductions for every row, which the emulated GPU pays
        // a fiber switch per lane for: one prompt and a few tokens keep CI's run short.
        let prompts = quantization == nil ? ["What is the capital of France?", "Write a haiku about the sea."]
                                          : ["What is the capital of France?"]
        let newTokens = quantization == nil ? 12 : 5
        do {
            var reference: [[Int32]] = []
            for device in try TestDevices.all() {
                let lm = try LanguageModel.load(Assets.smolLM2, on: device, quantization: quantization)
                let got = try prompts.map { p in
                    try lm.generator.generate(prompt: try lm.chatPrompt([ChatMessage(role: "user", content: p)]),
                                              config: GenerationConfig(maxNewTokens: newTokens)).ids
                }
                XCTAssertTrue(got.allSatisfy { !$0.isEmpty }, "\(device): nothing generated")
                if device == .cpu { reference = got } else {
                    XCTAssertEqual(got, reference, "\(device) \(quantization.map { "\($0)" } ?? "dense"): greedy tokens")
                }
            }
        }
    }
}
