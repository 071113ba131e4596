// The LoRA variants against references: DoRA's forward and gradients against a float64 host
// implementation (finite differences with the norm held constant, as PEFT detaches it), DoRA and
// rank/alpha-pattern adapters made by Python PEFT give PEFT's logits (tools/make_lora_variant_fixtures.py),
// PiSSA/OLoRA initial updates equal PEFT's, the mutated model is unchanged at step 0, and a trained
// PiSSA adapter saved for the original base reproduces the trained model; QLoRA-DoRA equals DoRA on
// the dequantized base; LoRA+ scales B's step; NEFTune's noise is bounded, training-only, and
// leaves the embedding gradient alone.
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

/// One Linear named "proj", so applyLoRA can target it by name.
final class OneLinear: Module {
    let proj: Linear
    init(inFeatures: Int, outFeatures: Int, bias: Bool, seed: UInt64, on backend: Backend = CPUBackend.shared) throws {
        proj = try Linear(inFeatures: inFeatures, outFeatures: outFeatures, bias: bias, on: backend)
        var rng = SeededRandom(seed: seed)
        for (_, p) in proj.namedParameters() { try p.value.assign((0..<p.value.count).map { _ in Float(rng.nextNormal() * 0.5) }) }
    }
    override var children: [(String, Module)] { [("proj", proj)] }
}

final class LoRAVariantsTests: XCTestCase {
    let be = CPUBackend.shared

    func random(_ n: Int, seed: UInt64, scale: Double = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Float(rng.nextNormal() * scale) }
    }

    // MARK: DoRA

    /// y = b + (m/n) ⊙ (x (W + s·B·A)ᵀ) in float64, with n given (held constant).
    func doraReference(x: [Double], W: [Double], bias: [Double], A: [Double], B: [Double], m: [Double], s: Double,
                       n: [Double]?, N: Int, K: Int, M: Int, r: Int) -> (y: [Double], n: [Double]) {
        var Wp = W
        for j in 0..<M { for i in 0..<K { for k in 0..<r { Wp[j * K + i] += s * B[j * r + k] * A[k * K + i] } } }
        let norms = n ?? (0..<M).map { j in (0..<K).reduce(0.0) { $0 + Wp[j * K + $1] * Wp[j * K + $1] }.squareRoot() }
        var y = [Double](repeating: 0, count: N * M)
        for t in 0..<N { for j in 0..<M {
            var z = 0.0
            for i in 0..<K { z += x[t * K + i] * Wp[j * K + i] }
            y[t * M + j] = bias[j] + m[j] / norms[j] * z
        } }
        return (y, norms)
    }

    func testDoRAForwardAndGradientsMatchTheFloat64ReferenceWithTheNormDetached() throws {
        let N = 5, K = 7, M = 6, r = 3
        let net = try OneLinear(inFeatures: K, outFeatures: M, bias: true, seed: 1)
        try net.applyLoRA(LoRAConfig(r: r, alpha: 6, dropout: 0, targetModules: ["proj"], useDoRA: true), seed: 2)
        let lora = try XCTUnwrap(net.proj.lora)
        let mag = try XCTUnwrap(lora.magnitude)
        XCTAssertTrue(net.trainableParameters.map(\.0).contains("proj.lora_magnitude_vector.weight"))
        // Move away from the initial point: B ≠ 0 and m ≠ n.
        try lora.b.weight.value.assign(random(M * r, seed: 3, scale: 0.4))
        try mag.weight.value.assign(try mag.weight.value.floats().enumerated().map { $0.element * Float(1 + 0.1 * Double($0.offset % 3)) })
        let xv = random(N * K, seed: 4), R = random(N * M, seed: 5)
        let x = try Tensor(xv, shape: [N, K], on: be, requiresGrad: true)
        let y = try net.proj(x)
        try Autograd.backward(y, gradient: try Tensor(R, shape: [N, M], on: be))

        let d = { (v: [Float]) in v.map(Double.init) }
        let W = d(try net.proj.weight.value.floats()), bias = d(try net.proj.bias!.value.floats())
        var A = d(try lora.a.weight.value.floats()), B = d(try lora.b.weight.value.floats())
        var m = d(try mag.weight.value.floats()), X = d(xv)
        let s = Double(lora.scaling)
        let ref = doraReference(x: X, W: W, bias: bias, A: A, B: B, m: m, s: s, n: nil, N: N, K: K, M: M, r: r)
        let got = try y.floats()
        for i in got.indices { XCTAssertEqual(Double(got[i]), ref.y[i], accuracy: 1e-4 * max(1, abs(ref.y[i])), "y[\(i)]") }
        for (g, w) in zip(try net.proj.doraNorms(), ref.n) { XCTAssertEqual(Double(g), w, accuracy: 1e-4 * w, "norm") }

        // Finite differences of L = Σ y ⊙ R with n fixed at ref.n.
        func loss() -> Double {
            let y = doraReference(x: X, W: W, bias: bias, A: A, B: B, m: m, s: s, n: ref.n, N: N, K: K, M: M, r: r).y
            return zip(y, R).reduce(0) { $0 + $1.0 * Double($1.1) }
        }
        func fd(_ v: inout [Double], _ i: Int) -> Double {
            let h = 1e-6, keep = v[i]
            v[i] = keep + h; let up = loss()
            v[i] = keep - h; let down = loss()
            v[i] = keep
            return (up - down) / (2 * h)
        }
        let checks: [(String, [Float])] = [
            ("m", try mag.weight.value.grad!.floats()), ("A", try lora.a.weight.value.grad!.floats()),
            ("B", try lora.b.weight.value.grad!.floats()), ("x", try x.grad!.floats())]
        for (name, g) in checks {
            let numeric: [Double] = g.indices.map { i in
                switch name {
                case "m": return fd(&m, i)
                case "A": return fd(&A, i)
                case "B": return fd(&B, i)
                default: return fd(&X, i)
                }
            }
            let scale = numeric.map(abs).max()!
            XCTAssertGreaterThan(scale, 1e-3, name)
            for i in g.indices { XCTAssertEqual(Double(g[i]), numeric[i], accuracy: 2e-4 * scale, "d\(name)[\(i)]") }
        }
    }

    /// DoRA (dense and on a 4-bit base) gives the CPU's output and gradients on every device
    /// (the emulated GPU on CI).
    func testDoRAOnEveryDeviceMatchesTheCPU() throws {
        let xv = random(4 * 64, seed: 21), g = random(4 * 6, seed: 22)
        for quantized in [false, true] {
            var reference: [Float] = []
            for device in try TestDevices.all() {
                let be = try backend(for: device)
                let net = try OneLinear(inFeatures: 64, outFeatures: 6, bias: true, seed: 23, on: be)
                if quantized { try net.proj.quantize(QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)) }
                try net.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["proj"], useDoRA: true), seed: 3)
                try net.proj.lora!.b.weight.value.assign(random(6 * 4, seed: 24, scale: 0.3))
                let y = try net.proj(try Tensor(xv, shape: [4, 64], on: be))
                try Autograd.backward(y, gradient: try Tensor(g, shape: [4, 6], on: be))
                let lora = net.proj.lora!
                let got = try y.floats() + lora.magnitude!.weight.value.grad!.floats() + lora.a.weight.value.grad!.floats()
                    + lora.b.weight.value.grad!.floats()
                if device == .cpu { reference = got } else {
                    assertClose(got, reference, tolerance: 1e-4, "\(device) DoRA\(quantized ? " on NF4" : ""): output and gradients")
                }
            }
        }
    }

    func testDoRAStartsAtTheBaseAndMergesExactly() throws {
        let net = try OneLinear(inFeatures: 8, outFeatures: 5, bias: false, seed: 7)
        let x = try Tensor(random(3 * 8, seed: 8), shape: [3, 8], on: be)
        let before = try net.proj(x).floats()
        try net.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0, targetModules: ["proj"], useDoRA: true), seed: 1)
        assertClose(try net.proj(x).floats(), before, tolerance: 1e-5, "DoRA at init")
        try net.proj.lora!.b.weight.value.assign(random(5 * 2, seed: 9, scale: 0.5))
        try net.proj.lora!.magnitude!.weight.value.assign(random(5, seed: 10, scale: 1).map { 1 + abs($0) })
        let adapted = try net.proj(x).floats()
        XCTAssertGreaterThan(maxAbsDiff(adapted, before).value, 0.1)
        try net.proj.mergeLoRA()
        XCTAssertNil(net.proj.lora)
        assertClose(try net.proj(x).floats(), adapted, tolerance: 1e-5, "merged DoRA")
    }

    func testQLoRADoRAEqualsDoRAOnTheDequantizedBase() throws {
        let dense = try OneLinear(inFeatures: 64, outFeatures: 6, bias: false, seed: 11)
        let quant = try OneLinear(inFeatures: 64, outFeatures: 6, bias: false, seed: 11)
        try quant.proj.quantize(QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true))
        try dense.proj.weight.value.assign(try quant.proj.quantized!.dequantize())
        let cfg = LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["proj"], useDoRA: true)
        try dense.applyLoRA(cfg, seed: 3)
        try quant.applyLoRA(cfg, seed: 3)
        for net in [dense, quant] { try net.proj.lora!.b.weight.value.assign(random(6 * 4, seed: 12, scale: 0.3)) }
        assertClose(try quant.proj.doraNorms(), try dense.proj.doraNorms(), tolerance: 1e-4, "norms")
        let xv = random(4 * 64, seed: 13)
        var outs: [[Float]] = [], grads: [[Float]] = []
        for net in [dense, quant] {
            let x = try Tensor(xv, shape: [4, 64], on: be)
            let y = try net.proj(x)
            outs.append(try y.floats())
            try Autograd.backward(y, gradient: try Tensor(random(4 * 6, seed: 14), shape: [4, 6], on: be))
            grads.append(try net.proj.lora!.magnitude!.weight.value.grad!.floats() + net.proj.lora!.a.weight.value.grad!.floats())
        }
        assertClose(outs[1], outs[0], tolerance: 1e-4, "QLoRA-DoRA forward")
        assertClose(grads[1], grads[0], tolerance: 1e-4, "QLoRA-DoRA gradients")
    }

    // MARK: PEFT's adapters

    func testDoRAAndPatternAdaptersMadeByPEFTGivePEFTsLogits() throws {
        let reference = try Fixtures.json("export/peft_variants/reference.json")
        let ids = try XCTUnwrap(reference["ids"] as? [Int]).map(Int32.init)
        let adapters = try XCTUnwrap(reference["adapters"] as? [String: [NSNumber]])
        XCTAssertEqual(adapters.count, 2)
        let base = Fixtures.url("export/peft_tiny/base")
        for (name, want) in adapters.sorted(by: { $0.key < $1.key }) {
            let model = try ModelLoader.load(at: base, on: be).model
            let config = try PEFTAdapter.load(Fixtures.url("export/peft_variants/\(name)"), into: model)
            let got = try model.logits(ids)
            assertClose(got, want.map(\.floatValue), tolerance: 1e-4, name)
            if name == "adapter_patterns" {
                XCTAssertEqual(config.rankPattern, ["q_proj": 2, "layers.1.mlp.down_proj": 6])
                XCTAssertEqual(config.alphaPattern, ["v_proj": 3])
                let ranks = Dictionary(uniqueKeysWithValues: model.namedModules().compactMap { n, m in (m as? Linear)?.lora.map { (n, $0.rank) } })
                XCTAssertEqual(ranks["model.layers.0.self_attn.q_proj"], 2)
                XCTAssertEqual(ranks["model.layers.0.mlp.down_proj"], 4)
                XCTAssertEqual(ranks["model.layers.1.mlp.down_proj"], 6)
                let v = model.namedModules().first { $0.0 == "model.layers.0.self_attn.v_proj" }!.1 as! Linear
                XCTAssertEqual(v.lora!.scaling, 3.0 / 4.0)
            } else {
                XCTAssertTrue(config.useDoRA)
            }
            // Merged, and written back by sft then reloaded: the same logits.
            let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-variant-\(UUID().uuidString)")
            addTeardownBlock { try? FileManager.default.removeItem(at: out) }
            try PEFTAdapter.save(model, config: config, baseModel: base.path, to: out)
            let again = try ModelLoader.load(at: base, on: be).model
            try PEFTAdapter.load(out, into: again)
            assertClose(try again.logits(ids), got, tolerance: 1e-6, "\(name) rewritten")
            for l in model.namedModules().compactMap({ $0.1 as? Linear }) { try l.mergeLoRA() }
            assertClose(try model.logits(ids), want.map(\.floatValue), tolerance: 1e-4, "\(name) merged")
        }
    }

    // MARK: initializations

    func testPiSSAAndOLoRAStartWherePEFTStartsAndLeaveTheModelUnchanged() throws {
        let reference = try Fixtures.json("export/peft_variants/reference.json")
        let ids = try XCTUnwrap(reference["ids"] as? [Int]).map(Int32.init)
        let inits = try XCTUnwrap(reference["inits"] as? [String: [String: Any]])
        let base = Fixtures.url("export/peft_tiny/base")
        let baseLogits = try ModelLoader.load(at: base, on: be).model.logits(ids)
        for (name, kind) in [("pissa", LoRAInit.pissa(niter: nil)), ("olora", .olora)] {
            let model = try ModelLoader.load(at: base, on: be).model
            try model.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "down_proj"], initWeights: kind), seed: 5)
            assertClose(try model.logits(ids), baseLogits, tolerance: 1e-4, "\(name): model unchanged at init")
            let deltas = try XCTUnwrap(inits[name]?["delta"] as? [String: [NSNumber]])
            XCTAssertEqual(deltas.count, 4)
            for (layer, want) in deltas {
                let linear = try XCTUnwrap(model.namedModules().first { $0.0 == layer }?.1 as? Linear, layer)
                let got = try linear.lora!.delta()
                assertClose(got, want.map(\.floatValue), tolerance: 1e-4, "\(name) \(layer): s·B·A")
                XCTAssertGreaterThan(got.map(abs).max()!, 0.1, "\(name) \(layer): the adapter holds part of W")
            }
        }
        // pissa_niter_K: also exact at step 0 (the residual absorbs whatever the sketch misses).
        let model = try ModelLoader.load(at: base, on: be).model
        try model.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj"], initWeights: .pissa(niter: 2)), seed: 5)
        assertClose(try model.logits(ids), baseLogits, tolerance: 1e-4, "pissa_niter_2 at init")
        XCTAssertThrowsError(try LoRAInit(peft: "pissa_niter_x")) { XCTAssertTrue("\($0)".contains("init_lora_weights"), "\($0)") }
        XCTAssertThrowsError(try LoRAInit(peft: "loftq")) { XCTAssertTrue("\($0)".contains("loftq"), "\($0)") }
    }

    func testATrainedPiSSAAdapterIsSavedForTheOriginalBase() throws {
        let base = Fixtures.url("export/peft_tiny/base")
        let ids: [Int32] = [3, 17, 5, 44, 9, 71, 2, 30]
        let model = try ModelLoader.load(at: base, on: be).model
        let cfg = LoRAConfig(r: 3, alpha: 6, dropout: 0, targetModules: ["q_proj", "v_proj"], initWeights: .pissa(niter: nil))
        try model.applyLoRA(cfg, seed: 1)
        // "Train": move every adapter weight.
        var rng = SeededRandom(seed: 2)
        for (_, p) in model.trainableParameters {
            let v = try p.value.floats()
            try p.value.assign(v.map { $0 + Float(0.05 * rng.nextNormal()) })
        }
        let trained = try model.logits(ids)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-pissa-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        try PEFTAdapter.save(model, config: cfg, baseModel: base.path, to: out)
        let json = try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as! [String: Any]
        XCTAssertEqual(json["r"] as? Int, 6)
        XCTAssertEqual(json["lora_alpha"] as? Double, 12)
        XCTAssertEqual(json["init_lora_weights"] as? Bool, true)
        XCTAssertTrue(try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8).contains("original base"))
        let fresh = try ModelLoader.load(at: base, on: be).model
        try PEFTAdapter.load(out, into: fresh)
        assertClose(try fresh.logits(ids), trained, tolerance: 1e-4, "original base + converted adapter")
    }

    /// sft writes a DoRA adapter (trained-looking: random B and magnitude), a converted PiSSA
    /// adapter and a rank/alpha-pattern adapter on the tiny base, each reloading here with the
    /// same logits; with $SFT_EXPORT_DIR they and sft's logits are kept for
    /// tools/check_lora_variants.py, which loads them in Python PEFT (recorded result below).
    func testVariantAdaptersWrittenBySftReloadExactly() throws {
        let base = Fixtures.url("export/peft_tiny/base")
        let ids: [Int32] = [3, 17, 5, 44, 9, 71, 2, 30, 11, 60]
        let dir = try Scratch.folder("lora_variants")
        defer { Scratch.cleanUp(dir) }
        let configs: [(String, LoRAConfig)] = [
            ("dora", LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["all-linear"], useDoRA: true)),
            ("pissa", LoRAConfig(r: 3, alpha: 6, dropout: 0, targetModules: ["q_proj", "v_proj", "down_proj"], initWeights: .pissa(niter: nil))),
            ("patterns", LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: ["q_proj", "o_proj"], useRSLoRA: true,
                                    rankPattern: ["o_proj": 2], alphaPattern: ["layers\\.1\\..*q_proj": 5]))]
        var logits: [String: [Float]] = [:]
        for (name, cfg) in configs {
            let model = try ModelLoader.load(at: base, on: be).model
            try model.applyLoRA(cfg, seed: 4)
            var rng = SeededRandom(seed: 5)
            for (_, p) in model.trainableParameters {
                try p.value.assign(try p.value.floats().map { $0 + Float(0.1 * rng.nextNormal()) })
            }
            let want = try model.logits(ids)
            let out = dir.appendingPathComponent(name)
            try PEFTAdapter.save(model, config: cfg, baseModel: base.path, to: out)
            let again = try ModelLoader.load(at: base, on: be).model
            try PEFTAdapter.load(out, into: again)
            assertClose(try again.logits(ids), want, tolerance: 1e-4, "\(name) reloaded")
            logits[name] = want
        }
        let json: [String: Any] = ["ids": ids.map(Int.init), "logits": logits.mapValues { $0.map(Double.init) }]
        try JSONSerialization.data(withJSONObject: json).write(to: dir.appendingPathComponent("sft_logits.json"))
    }

    func testPythonPEFTLoadsSftsVariantAdaptersRecordedAPass() throws {
        let r = try Fixtures.json("export/results/lora_variants.json")
        XCTAssertEqual(r["pass"] as? Bool, true)
        let diffs = try XCTUnwrap(r["max_abs_diff"] as? [String: Double])
        XCTAssertEqual(Set(diffs.keys), ["dora", "pissa", "patterns"])
        for (name, d) in diffs { XCTAssertLessThanOrEqual(d, 1e-4, name) }
    }

    /// Examples/configs/dora-sharegpt.json (DoRA + LoRA+ + NEFTune + TensorBoard) trains on the
    /// demo data and writes a DoRA adapter that reloads.
    func testTheDoRAExampleConfigTrainsOnTheDemoData() throws {
        _ = try Assets.require(Assets.smolLM2)
        let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        var object = try JSONSerialization.jsonObject(with: Data(contentsOf: packageRoot.appendingPathComponent("Examples/configs/dora-sharegpt.json"))) as! [String: Any]
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-dora-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        object["model"] = Assets.smolLM2.path
        object["data"] = packageRoot.appendingPathComponent("Examples/data/sharegpt.json").path
        object["limit"] = nil; object["eval_split"] = 0; object["eval_steps"] = nil
        object["output_dir"] = out.path; object["max_steps"] = 2; object["max_seq_length"] = 64
        object["num_train_epochs"] = 3; object["save_steps"] = 2
        let result = try Finetune.run(try FinetuneConfig.from(json: object))
        XCTAssertEqual(result.summary.steps, 2)
        XCTAssertTrue(result.summary.finalLoss!.isFinite)
        let file = try SafetensorsFile(url: result.output.appendingPathComponent("adapter_model.safetensors"))
        XCTAssertEqual(file.names.filter { $0.hasSuffix(".lora_magnitude_vector") }.count, 30 * 7)
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("tensorboard").path).isEmpty)
        let lm = try LanguageModel.load(Assets.smolLM2, adapter: result.output)
        XCTAssertNotNil((lm.model.namedModules().compactMap { $0.1 as? Linear }.first { $0.lora != nil })?.lora?.magnitude)
    }

    func testGaussianAndFalseInitializations() throws {
        let net = try OneLinear(inFeatures: 50, outFeatures: 40, bias: false, seed: 1)
        try net.applyLoRA(LoRAConfig(r: 8, alpha: 8, dropout: 0, targetModules: ["proj"], initWeights: .gaussian), seed: 3)
        let a = try net.proj.lora!.a.weight.value.floats()
        let std = (a.reduce(0) { $0 + Double($1 * $1) } / Double(a.count)).squareRoot()
        XCTAssertEqual(std, 1.0 / 8, accuracy: 0.02)  // N(0, 1/r)
        XCTAssertEqual(try net.proj.lora!.b.weight.value.floats().map(abs).max(), 0)
        let other = try OneLinear(inFeatures: 50, outFeatures: 40, bias: false, seed: 1)
        try other.applyLoRA(LoRAConfig(r: 8, alpha: 8, dropout: 0, targetModules: ["proj"], initWeights: .random), seed: 3)
        XCTAssertGreaterThan(try other.proj.lora!.b.weight.value.floats().map(abs).max()!, 0.01)
    }

    // MARK: LoRA+ and NEFTune

    func testLoRAPlusScalesTheStepOfB() throws {
        var deltas: [[Float]] = []
        for ratio in [nil, 16.0] {
            let net = try OneLinear(inFeatures: 6, outFeatures: 4, bias: false, seed: 1)
            try net.applyLoRA(LoRAConfig(r: 2, alpha: 2, dropout: 0, targetModules: ["proj"], initWeights: .random), seed: 2)
            let params = net.trainableParameters
            let multipliers = ratio.map { r in Dictionary(uniqueKeysWithValues: params.filter { $0.0.contains(".lora_B.") }.map { ($0.0, r) }) } ?? [:]
            let opt = try AdamW(parameters: params, config: AdamWConfig(), lrMultipliers: multipliers)
            let y = try net.proj(try Tensor(random(3 * 6, seed: 3), shape: [3, 6], on: be))
            try Autograd.backward(y, gradient: try Tensor(random(3 * 4, seed: 4), shape: [3, 4], on: be))
            let before = try params.flatMap { try $0.1.value.floats() }
            try opt.update(lr: 1e-3)
            deltas.append(zip(try params.flatMap { try $0.1.value.floats() }, before).map { $0 - $1 })
        }
        let aCount = 2 * 6
        for i in 0..<aCount { XCTAssertEqual(deltas[1][i], deltas[0][i], accuracy: 1e-9, "A's step unchanged") }
        for i in aCount..<deltas[0].count where abs(deltas[0][i]) > 1e-6 {
            XCTAssertEqual(deltas[1][i] / deltas[0][i], 16, accuracy: 1e-2, "B's step ×16")
        }
        XCTAssertThrowsError(try FinetuneConfig.from(json: ["method": "full", "use_dora": true]).validateLoRAOnlyKeys()) {
            XCTAssertTrue("\($0)".contains("use_dora"), "\($0)")
        }
    }

    func testNEFTuneNoiseIsBoundedTrainingOnlyAndKeepsTheGradient() throws {
        let emb = try Embedding(vocab: 10, dim: 8, on: be)
        try emb.weight.value.assign(random(80, seed: 1))
        emb.weight.trainable = true
        let ids = try Tensor(ints: [1, 2, 3, 4, 5, 6], shape: [6], on: be)
        let clean = try emb(ids, rowLength: 3).floats()
        emb.neftuneNoiseAlpha = 5
        XCTAssertEqual(try emb(ids, rowLength: 3).floats(), clean, "no noise outside training")
        try Autograd.training(RandomStream(seed: 0x5f7_5eed)) {
            let y = try emb(ids, rowLength: 3)
            let noise = zip(try y.floats(), clean).map { $0 - $1 }
            let bound = 5 / Float(3 * 8).squareRoot()
            XCTAssertLessThanOrEqual(noise.map(abs).max()!, bound * 1.0001)
            XCTAssertGreaterThan(noise.map(abs).max()!, bound * 0.5)
            XCTAssertNotEqual(try emb(ids, rowLength: 3).floats(), try y.floats(), "fresh noise each call")
            let g = random(48, seed: 2)
            try Autograd.backward(y, gradient: try Tensor(g, shape: [6, 8], on: be))
            let dtable = try emb.weight.value.grad!.floats()
            for (row, id) in [1, 2, 3, 4, 5, 6].enumerated() {
                XCTAssertEqual(Array(dtable[(id * 8)..<(id * 8 + 8)]), Array(g[(row * 8)..<(row * 8 + 8)]))
            }
        }
    }
}
