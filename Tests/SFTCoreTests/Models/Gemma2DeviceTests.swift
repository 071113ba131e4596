// Gemma 2 on every device (the CPU; CUDA where usable — the emulated GPU on CI): the golden
// fixture's losses through the fused, final-softcapped LM-head loss, top-5 logits, the greedy
// continuation through the KV cache (softcapped cached attention) and the LoRA gradients
// (softcapped attention backward) equal transformers' values.
import Foundation
import SFTCore
import XCTest

final class Gemma2DeviceTests: XCTestCase {
    func testGoldenValuesOnEveryDevice() throws {
        let golden = try Fixtures.json("model/zoo/gemma2/golden.json")
        for device in try TestDevices.all() {
            let be = try backend(for: device)
            let m = try ModelLoader.load(at: Fixtures.url("model/zoo/gemma2"), on: be).model
            let V = m.vocabSize
            for (n, s) in (golden["sequences"] as! [[String: Any]]).enumerated() {
                let ids = (s["ids"] as! [Int]).map(Int32.init), T = ids.count
                let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [T], on: be)
                let loss = try Autograd.withNoGrad { try m.loss(try ModelInput(tokens: ids, on: be), targets: targets).loss.item() }
                let want = s["mean_loss"] as! Double
                XCTAssertEqual(Double(loss), want, accuracy: 1e-4 * want, "\(device) seq \(n): loss")
                let logits = try m.logits(ids)
                for (i, id) in (s["top5_ids"] as! [Int]).enumerated() {
                    XCTAssertEqual(Double(logits[(T - 1) * V + id]), (s["top5_logits"] as! [Double])[i], accuracy: 1e-3,
                                   "\(device) seq \(n): top-5 #\(i)")
                }
                let greedy = (s["greedy"] as! [Int]).map(Int32.init), gaps = s["greedy_gaps"] as! [Double]
                let cache = try m.makeCache(capacity: T + greedy.count)
                var step = try m.decode(ids, cache: cache)
                for (k, expected) in greedy.enumerated() {
                    let next = Int32(step.indices.max { step[$0] < step[$1] }!)
                    if next != expected {
                        XCTAssertLessThan(gaps[k], 1e-3, "\(device) seq \(n) step \(k): \(next) instead of \(expected)")
                        break
                    }
                    step = try m.decode([next], cache: cache)
                }
            }
            // LoRA gradients (r = 2 on q_proj and v_proj, A and B from the fixture).
            let lora = golden["lora"] as! [String: Any]
            let modules = lora["modules"] as! [String: [String: [Double]]]
            try m.applyLoRA(LoRAConfig(r: lora["r"] as! Int, alpha: lora["alpha"] as! Double, dropout: 0,
                                       targetModules: lora["targets"] as! [String]), seed: 1)
            let byName = Dictionary(uniqueKeysWithValues: m.namedModules())
            for (name, w) in modules {
                let lin = byName[name] as! Linear
                try lin.lora!.a.weight.value.assign(w["A"]!.map(Float.init))
                try lin.lora!.b.weight.value.assign(w["B"]!.map(Float.init))
            }
            let ids = ((golden["sequences"] as! [[String: Any]])[0]["ids"] as! [Int]).map(Int32.init)
            let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
            m.zeroGrad()
            let (loss, _) = try m.loss(try ModelInput(tokens: ids, on: be), targets: targets)
            XCTAssertEqual(Double(try loss.item()), lora["loss"] as! Double, accuracy: 1e-4 * (lora["loss"] as! Double), "\(device) LoRA loss")
            try Autograd.backward(loss)
            for (name, w) in modules.sorted(by: { $0.key < $1.key }) {
                let lin = byName[name] as! Linear
                for (key, p) in [("dA", lin.lora!.a.weight), ("dB", lin.lora!.b.weight)] {
                    let got = try p.value.grad!.floats(), want = w[key]!
                    let scale = want.map(abs).max()!
                    for i in want.indices {
                        XCTAssertEqual(Double(got[i]), want[i], accuracy: 1e-4 * scale + 1e-7, "\(device) \(name) \(key)[\(i)]")
                    }
                }
            }
        }
    }
}
