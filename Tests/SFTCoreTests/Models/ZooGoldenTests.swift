// Every family in the zoo against transformers 5 on tiny random models saved by transformers
// itself (config.json in the transformers-5 layout with `rope_parameters`), made by
// tools/make_zoo_fixtures.py: per-token losses (1e-4 relative), top-5 logits (1e-3), greedy
// continuation through the KV cache, LoRA gradients (1e-4 relative); and the RoPE inverse
// frequencies of every kind against transformers' ROPE_INIT_FUNCTIONS.
import XCTest
@testable import SFTCore
import SFTKernels

final class ZooGoldenTests: XCTestCase {
    static let families = ["llama31", "smollm2", "mistral", "qwen2", "qwen3", "gemma3", "phi3", "mpt", "mpt_clip", "llama_yarn",
                           "gemma2"]
    let be = CPUBackend.shared

    struct Sequence {
        let ids: [Int32]; let meanLoss: Double; let tokenLosses: [Double]; let top5Ids: [Int]; let top5: [Double]
        let greedy: [Int32]; let gaps: [Double]
    }

    func golden(_ family: String) throws -> (sequences: [Sequence], lora: [String: Any]) {
        let j = try Fixtures.json("model/zoo/\(family)/golden.json")
        let seqs = (j["sequences"] as! [[String: Any]]).map { s in
            Sequence(ids: (s["ids"] as! [Int]).map(Int32.init), meanLoss: s["mean_loss"] as! Double,
                     tokenLosses: s["token_losses"] as! [Double], top5Ids: s["top5_ids"] as! [Int],
                     top5: s["top5_logits"] as! [Double], greedy: (s["greedy"] as! [Int]).map(Int32.init),
                     gaps: s["greedy_gaps"] as! [Double])
        }
        return (seqs, j["lora"] as! [String: Any])
    }

    func load(_ family: String) throws -> CausalLM {
        try ModelLoader.load(at: Fixtures.url("model/zoo/\(family)"), on: be).model
    }

    /// Next-token losses of one row from its logits, in Double.
    func tokenLosses(_ logits: [Float], _ ids: [Int32], V: Int) -> [Double] {
        (0..<(ids.count - 1)).map { t in
            let row = logits[(t * V)..<((t + 1) * V)]
            let mx = Double(row.max()!)
            let lse = mx + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1) - mx) })
            return lse - Double(row[row.startIndex + Int(ids[t + 1])])
        }
    }

    func testEveryFamilyGivesTransformersLossesAndLogits() throws {
        for family in Self.families {
            let m = try load(family)
            for (n, s) in try golden(family).sequences.enumerated() {
                let logits = try m.logits(s.ids)
                let V = m.vocabSize
                let losses = tokenLosses(logits, s.ids, V: V)
                for (t, (got, want)) in zip(losses, s.tokenLosses).enumerated() {
                    XCTAssertEqual(got, want, accuracy: 1e-4 * abs(want) + 1e-6, "\(family) seq \(n) token \(t) loss")
                }
                let mean = losses.reduce(0, +) / Double(losses.count)
                XCTAssertEqual(mean, s.meanLoss, accuracy: 1e-4 * s.meanLoss, "\(family) seq \(n) mean loss")
                let T = s.ids.count
                for (i, id) in s.top5Ids.enumerated() {
                    XCTAssertEqual(Double(logits[(T - 1) * V + id]), s.top5[i], accuracy: 1e-3, "\(family) seq \(n) top-5 #\(i)")
                }
                // The fused loss (training's path) agrees.
                let input = try ModelInput(tokens: s.ids, on: be)
                let targets = try Tensor(ints: Array(s.ids.dropFirst()) + [-100], shape: [T], on: be)
                let fused = try Autograd.withNoGrad { try m.loss(input, targets: targets).loss.item() }
                XCTAssertEqual(Double(fused), s.meanLoss, accuracy: 1e-4 * s.meanLoss, "\(family) seq \(n) fused loss")
            }
        }
    }

    func testEveryFamilyDecodesTheGreedyContinuationThroughTheKVCache() throws {
        for family in Self.families {
            let m = try load(family)
            for (n, s) in try golden(family).sequences.enumerated() {
                let cache = try m.makeCache(capacity: s.ids.count + s.greedy.count + 1)
                var logits = try m.decode(s.ids, cache: cache)
                for (step, expected) in s.greedy.enumerated() {
                    let next = Int32(logits.indices.max { logits[$0] < logits[$1] }!)
                    if next != expected {
                        XCTAssertLessThan(s.gaps[step], 1e-3, "\(family) seq \(n) step \(step): \(next) instead of \(expected)")
                        break
                    }
                    logits = try m.decode([next], cache: cache)
                }
            }
        }
    }

    func testEveryFamilyGivesTransformersLoRAGradients() throws {
        for family in Self.families {
            let m = try load(family)
            let (seqs, lora) = try golden(family)
            let r = lora["r"] as! Int, alpha = lora["alpha"] as! Double
            let modules = lora["modules"] as! [String: [String: [Double]]]
            let loraTargets = lora["targets"] as! [String]
            try m.applyLoRA(LoRAConfig(r: r, alpha: alpha, dropout: 0, targetModules: loraTargets), seed: 1)
            let byName = Dictionary(uniqueKeysWithValues: m.namedModules())
            XCTAssertEqual(Set(modules.keys), Set(byName.compactMap { ($0.value as? Linear)?.lora != nil ? $0.key : nil }), family)
            for (name, w) in modules {
                let lin = byName[name] as! Linear
                try lin.lora!.a.weight.value.assign(w["A"]!.map(Float.init))
                try lin.lora!.b.weight.value.assign(w["B"]!.map(Float.init))
            }
            let ids = seqs[0].ids
            let input = try ModelInput(tokens: ids, on: be)
            let targets = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [ids.count], on: be)
            m.zeroGrad()
            let (loss, _) = try m.loss(input, targets: targets)
            XCTAssertEqual(Double(try loss.item()), lora["loss"] as! Double, accuracy: 1e-4 * (lora["loss"] as! Double), "\(family) LoRA loss")
            try Autograd.backward(loss)
            for (name, w) in modules.sorted(by: { $0.key < $1.key }) {
                let lin = byName[name] as! Linear
                for (key, p) in [("dA", lin.lora!.a.weight), ("dB", lin.lora!.b.weight)] {
                    let got = try p.value.grad!.floats(), want = w[key]!
                    let scale = want.map(abs).max()!
                    for i in want.indices {
                        XCTAssertEqual(Double(got[i]), want[i], accuracy: 1e-4 * scale + 1e-7, "\(family) \(name) \(key)[\(i)]")
                    }
                }
            }
        }
    }

    func testRopeFrequenciesOfEveryKindMatchTransformers() throws {
        let j = try Fixtures.json("model/zoo/rope_frequencies.json")
        let D = j["head_dim"] as! Int, maxPos = j["max_position_embeddings"] as! Int
        for (name, c) in (j["cases"] as! [String: [String: Any]]).sorted(by: { $0.key < $1.key }) {
            let raw = c["rope_parameters"] as! [String: Any]
            let values = try HFConfig.values(["rope_parameters": raw, "max_position_embeddings": maxPos])
            let p = try RopeParameters.fromHF(values)
            XCTAssertEqual(p.kind, raw["rope_type"] as! String, name)
            for (length, want) in c["lengths"] as! [String: [String: Any]] {
                let seqLen = length == "load" ? nil : Int(length)
                let (inv, factor) = try p.frequencies(headDim: D, maxPositionEmbeddings: maxPos, seqLen: seqLen)
                let w = want["inv_freq"] as! [Double]
                XCTAssertEqual(inv.count, w.count, name)
                for i in w.indices {
                    XCTAssertEqual(Double(inv[i]), w[i], accuracy: 2e-6 * abs(w[i]), "\(name) at \(length): inv_freq[\(i)]")
                }
                XCTAssertEqual(Double(factor), want["attention_factor"] as! Double, accuracy: 1e-6, "\(name) at \(length): attention factor")
            }
        }
    }
}
