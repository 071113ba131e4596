// Gemma 2 beyond the zoo's golden tests (which include it): the transformers 4 layout (no
// layer_types: even layers slide; rope_theta at the top) decodes to the same config; both
// softcaps and the sliding layers visibly change the golden loss (so the golden tests would catch
// a model that ignored them); bad settings fail naming their key; packing two documents, the
// second starting inside the first's last window, gives each document's hidden states alone.
import XCTest
@testable import SFTCore
import SFTKernels

final class Gemma2Tests: XCTestCase {
    let be = CPUBackend.shared

    func fixtureConfig() throws -> [String: Any] { try Fixtures.json("model/zoo/gemma2/config.json") }

    func testTransformers4LayoutDecodesTheSameConfig() throws {
        let v5 = try fixtureConfig()
        var v4 = v5
        v4.removeValue(forKey: "layer_types")   // t4 rule: sliding, full, sliding for 3 layers
        v4.removeValue(forKey: "rope_parameters")
        v4["rope_theta"] = 10000.0
        v4["cache_implementation"] = "hybrid"
        v4["hidden_act"] = "gelu_pytorch_tanh"
        let c = try Gemma2Config(hf: v5)
        XCTAssertEqual(try Gemma2Config(hf: v4), c)
        XCTAssertEqual(c.layerTypes, ["sliding_attention", "full_attention", "sliding_attention"])
        XCTAssertEqual(c.attnLogitSoftcapping, 2)
        XCTAssertEqual(c.finalLogitSoftcapping, 3)
        XCTAssertEqual(try Gemma2Config(hf: c.hf), c, "what sft writes reads back the same")
        // transformers' defaults when the keys are absent; null turns a softcap off.
        var bare = v5
        bare.removeValue(forKey: "attn_logit_softcapping")
        bare["final_logit_softcapping"] = NSNull()
        let d = try Gemma2Config(hf: bare)
        XCTAssertEqual(d.attnLogitSoftcapping, 50)
        XCTAssertNil(d.finalLogitSoftcapping)
        XCTAssertEqual(try Gemma2Config(hf: d.hf), d)
    }

    func testBadSettingsFailNamingTheKey() throws {
        let base = try fixtureConfig()
        for (key, value) in [("attn_logit_softcapping", -1.0 as Any), ("final_logit_softcapping", 0.0),
                             ("hidden_activation", "gelu"), ("sliding_window_size", 7), ("attention_dropout", 0.1),
                             ("layer_types", ["full_attention"]), ("use_bidirectional_attention", true),
                             ("some_new_setting", 1)] {
            var c = base
            c[key] = value
            XCTAssertThrowsError(try ModelRegistry.build(config: c, on: be), key) { e in
                guard case SFTError.config(let field, _) = e else { return XCTFail("\(e)") }
                XCTAssertEqual(field, key)
            }
        }
    }

    /// Mean loss of golden sequence 0 with the config changed by `change`.
    func loss(change: (inout [String: Any]) -> Void) throws -> (got: Double, golden: Double) {
        var config = try fixtureConfig()
        change(&config)
        let folder = Fixtures.url("model/zoo/gemma2")
        let weights = try SafetensorsWeights(files: [folder.appendingPathComponent("model.safetensors")], config: config)
        let m = try ModelLoader.load(weights, on: be)
        let s = (try Fixtures.json("model/zoo/gemma2/golden.json")["sequences"] as! [[String: Any]])[0]
        let ids = (s["ids"] as! [Int]).map(Int32.init)
        let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
        let got = try Autograd.withNoGrad { try m.loss(try ModelInput(tokens: ids, on: be), targets: targets).loss.item() }
        return (Double(got), s["mean_loss"] as! Double)
    }

    func testSoftcapsAndSlidingLayersChangeTheGoldenLoss() throws {
        let exact = try loss { _ in }
        XCTAssertEqual(exact.got, exact.golden, accuracy: 1e-4 * exact.golden)
        let changes: [(String, (inout [String: Any]) -> Void)] = [
            ("attention softcap", { $0["attn_logit_softcapping"] = NSNull() }),
            ("final softcap", { $0["final_logit_softcapping"] = NSNull() }),
            ("sliding layers", { $0["layer_types"] = ["full_attention", "full_attention", "full_attention"] }),
        ]
        for (what, change) in changes {
            let wrong = try loss(change: change)
            XCTAssertGreaterThan(abs(wrong.got - wrong.golden), 3e-4 * wrong.golden, "\(what) matters")
        }
    }

    func testPackedRowsGiveEachDocumentsHiddenStatesAlone() throws {
        let m = try ModelLoader.load(at: Fixtures.url("model/zoo/gemma2"), on: be).model
        // window 4: b's first tokens sit inside a's last window
        let a: [Int32] = [5, 9, 14, 3, 22, 41, 7], b: [Int32] = [30, 8, 8, 19, 50, 11, 4, 27, 33]
        let ids = a + b
        let input = ModelInput(ids: try Tensor(ints: ids, shape: [ids.count], on: be),
                               positions: try Tensor(ints: (0..<Int32(a.count)).map { $0 } + (0..<Int32(b.count)).map { $0 },
                                                     shape: [ids.count], on: be),
                               docIds: try Tensor(ints: [Int32](repeating: 0, count: a.count) + [Int32](repeating: 1, count: b.count),
                                                  shape: [ids.count], on: be),
                               B: 1, T: ids.count)
        let packed = try Autograd.withNoGrad { try m.hiddenStates(input, checkpointing: false).floats() }
        let alone = try Autograd.withNoGrad {
            try m.hiddenStates(try ModelInput(tokens: a, on: be), checkpointing: false).floats()
                + m.hiddenStates(try ModelInput(tokens: b, on: be), checkpointing: false).floats()
        }
        XCTAssertEqual(packed.count, alone.count)
        let diff = zip(packed, alone).map { abs($0 - $1) }.max()!
        XCTAssertLessThan(diff, 1e-4, "packed vs alone: max |Δ| \(diff)")
        // Without document ids the second document does see the first (the test can fail).
        var joined = input
        joined.docIds = nil
        let leaky = try Autograd.withNoGrad { try m.hiddenStates(joined, checkpointing: false).floats() }
        XCTAssertGreaterThan(zip(leaky, alone).map { abs($0 - $1) }.max()!, 1e-3)
    }
}
