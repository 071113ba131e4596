// Typed configs of the zoo: the transformers 4 and 5 layouts decode to the same config, a
// setting that changes the math and is not implemented fails naming its key, and the golden
// fixtures are sensitive to what a permissive reader used to drop (RoPE θ and scaling, the
// sliding window). Packing never lets a document see another through a sliding window.
import XCTest
import SFTCore
import SFTKernels

final class ZooConfigTests: XCTestCase {
    let be = CPUBackend.shared

    func fixtureConfig(_ family: String) throws -> [String: Any] {
        try Fixtures.json("model/zoo/\(family)/config.json")
    }

    func testTransformers4And5LayoutsDecodeTheSameConfig() throws {
        for family in ["llama31", "smollm2", "qwen2", "llama_yarn"] {
            let v5 = try fixtureConfig(family)
            var v4 = v5
            var rope = v5["rope_parameters"] as! [String: Any]
            v4["rope_theta"] = rope.removeValue(forKey: "rope_theta")
            v4.removeValue(forKey: "rope_parameters")
            if rope["rope_type"] as? String != "default" {
                rope["type"] = rope.removeValue(forKey: "rope_type")   // the oldest spelling
                v4["rope_scaling"] = rope
            }
            XCTAssertEqual(try LlamaConfig(hf: v4), try LlamaConfig(hf: v5), family)
        }
        let c = try LlamaConfig(hf: try fixtureConfig("llama31"))
        XCTAssertEqual(c.ropeTheta, 500000)
        XCTAssertEqual(c.ropeScaling?.ropeType, "llama3")
        XCTAssertEqual(c.ropeScaling?.factor, 8)
        XCTAssertEqual(try LlamaConfig(hf: try fixtureConfig("smollm2")).ropeTheta, 100000)
        XCTAssertEqual(try LlamaConfig(hf: try fixtureConfig("mistral")).slidingWindow, 5)
        XCTAssertTrue(try LlamaConfig(hf: try fixtureConfig("qwen3")).qkNorm)
        XCTAssertTrue(try LlamaConfig(hf: try fixtureConfig("qwen2")).attentionBias)
        // What sft writes (transformers 4 layout) reads back the same.
        XCTAssertEqual(try LlamaConfig(hf: c.hf), c)
    }

    func testUnsupportedMathSettingsFailNamingTheKey() throws {
        let base = try fixtureConfig("llama31")
        func assertFails(_ change: (inout [String: Any]) -> Void, naming key: String, line: UInt = #line) {
            var c = base
            change(&c)
            XCTAssertThrowsError(try ModelRegistry.build(config: c, on: be), line: line) { e in
                guard case SFTError.config(let field, _) = e else { return XCTFail("\(e)", line: line) }
                XCTAssertEqual(field, key, "\(e)", line: line)
            }
        }
        assertFails({ $0["attn_logit_softcapping"] = 50.0 }, naming: "attn_logit_softcapping")
        assertFails({ $0["quantization_config"] = ["quant_method": "gptq"] }, naming: "quantization_config")
        assertFails({ $0["hidden_act"] = "gelu" }, naming: "hidden_act")
        assertFails({ $0["attention_dropout"] = 0.1 }, naming: "attention_dropout")
        assertFails({ $0["rope_parameters"] = ["rope_type": "mrope", "rope_theta": 10000.0] }, naming: "rope_parameters.rope_type")
        assertFails({ $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5] },
                    naming: "rope_parameters.partial_rotary_factor")
        assertFails({ $0["rope_parameters"] = ["rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "smoothing": 1.0] },
                    naming: "rope_parameters.smoothing")
        assertFails({ $0["rope_scaling"] = ["type": "su", "factor": 2.0]; $0.removeValue(forKey: "rope_parameters") },
                    naming: "rope_scaling.rope_type")
        assertFails({ $0["rope_parameters"] = ["full_attention": ["rope_type": "default", "rope_theta": 1.0e4]] },
                    naming: "rope_parameters")
        assertFails({ $0["layer_types"] = ["full_attention", "chunked_attention"] }, naming: "layer_types")
        // A GGUF key with no HF meaning arrives under its own name and fails the same way.
        assertFails({ $0["llama.rope.scaling.yarn_log_multiplier"] = "0.1" }, naming: "llama.rope.scaling.yarn_log_multiplier")
        // MPT: settings transformers implements and sft does not, inside attn_config.
        var mpt = try fixtureConfig("mpt")
        var attn = mpt["attn_config"] as! [String: Any]
        attn["qk_ln"] = true
        mpt["attn_config"] = attn
        XCTAssertThrowsError(try ModelRegistry.build(config: mpt, on: be)) { e in
            guard case SFTError.config(let field, _) = e else { return XCTFail("\(e)") }
            XCTAssertEqual(field, "attn_config.qk_ln")
        }
        // Harmless keys pass, whatever their value.
        var ok = base
        ok["torch_dtype"] = "bfloat16"; ok["use_cache"] = false; ok["pretraining_tp"] = 2; ok["initializer_range"] = 0.5
        XCTAssertNoThrow(try ModelRegistry.build(config: ok, on: be))
    }

    /// Mean loss of sequence 0 of `family`'s golden file with its config changed by `change`.
    func loss(_ family: String, change: (inout [String: Any]) -> Void) throws -> (got: Double, golden: Double) {
        var config = try fixtureConfig(family)
        change(&config)
        let folder = Fixtures.url("model/zoo/\(family)")
        let weights = try SafetensorsWeights(files: [folder.appendingPathComponent("model.safetensors")], config: config)
        let m = try ModelLoader.load(weights, on: be)
        let g = try Fixtures.json("model/zoo/\(family)/golden.json")
        let s = (g["sequences"] as! [[String: Any]])[0]
        let ids = (s["ids"] as! [Int]).map(Int32.init)
        let input = try ModelInput(tokens: ids, on: be)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        return (Double(try Autograd.withNoGrad { try m.loss(input, targets: targets).loss.item() }), s["mean_loss"] as! Double)
    }

    func testFixturesShowWhatAPermissiveReaderGotWrong() throws {
        let exact = try loss("llama31") { _ in }
        XCTAssertEqual(exact.got, exact.golden, accuracy: 1e-4 * exact.golden)
        // θ = 10000 and no scaling (the old fallback) is visibly wrong on each RoPE fixture.
        for family in ["llama31", "smollm2", "qwen3", "phi3", "llama_yarn"] {
            let wrong = try loss(family) { $0["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0] }
            // (3× the golden tests' 1e-4 tolerance: they would catch it)
            XCTAssertGreaterThan(abs(wrong.got - wrong.golden), 3e-4 * wrong.golden, "\(family): RoPE settings matter")
        }
        let noWindow = try loss("mistral") { $0.removeValue(forKey: "sliding_window") }
        XCTAssertGreaterThan(abs(noWindow.got - noWindow.golden), 3e-4 * noWindow.golden, "the window matters")
        let noClip = try loss("mpt_clip") { c in
            var attn = c["attn_config"] as! [String: Any]
            attn["clip_qkv"] = NSNull()
            c["attn_config"] = attn
        }
        XCTAssertGreaterThan(abs(noClip.got - noClip.golden), 3e-4 * noClip.golden, "mpt's clip_qkv matters")
        let gemmaNoWindow = try loss("gemma3") { $0["layer_types"] = ["full_attention", "full_attention", "full_attention"] }
        XCTAssertGreaterThan(abs(gemmaNoWindow.got - gemmaNoWindow.golden), 3e-4 * gemmaNoWindow.golden, "gemma3's sliding layers matter")
    }

    /// Two documents packed in one row, the second starting inside the first's last window:
    /// each document's logits equal those of the document run alone (positions restart).
    func testPackedRowsNeverSeeAnotherDocumentThroughASlidingWindowOrALiBi() throws {
      for family in ["mistral", "gemma3", "mpt"] {
        let m = try ModelLoader.load(at: Fixtures.url("model/zoo/\(family)"), on: be).model
        let a: [Int32] = [5, 9, 14, 3, 22, 41, 7], b: [Int32] = [30, 8, 8, 19, 50, 11, 4, 27, 33]
        let ids = a + b
        let input = ModelInput(ids: try Tensor(ints: ids, shape: [ids.count], on: be),
                               positions: try Tensor(ints: (0..<Int32(a.count)).map { $0 } + (0..<Int32(b.count)).map { $0 },
                                                     shape: [ids.count], on: be),
                               docIds: try Tensor(ints: [Int32](repeating: 0, count: a.count) + [Int32](repeating: 1, count: b.count),
                                                  shape: [ids.count], on: be),
                               B: 1, T: ids.count)
        let packed = try Autograd.withNoGrad { try Ops.linear(try m.hiddenStates(input, checkpointing: false), m.lmHeadWeight.value).floats() }
        let alone = try m.logits(a) + m.logits(b)
        XCTAssertEqual(packed.count, alone.count)
        let diff = zip(packed, alone).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(diff, 1e-4, "\(family): packed vs alone: max |Δ| \(diff)")
      }
    }
}
