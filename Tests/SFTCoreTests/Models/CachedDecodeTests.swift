// The cached decode step of the families whose attention has ALiBi (MPT) or softcapping
// (Gemma 2): greedy decoding through the KV cache gives, at every step, the logits of the full
// forward pass over the whole sequence (no cache), and the greedy tokens of transformers.
import XCTest
@testable import SFTCore
import SFTKernels

final class CachedDecodeTests: XCTestCase {
    let be = CPUBackend.shared

    func testCachedGreedyEqualsFullForwardAndTransformers() throws {
        for family in ["mpt", "mpt_clip", "gemma2"] {
            let m = try ModelLoader.load(at: Fixtures.url("model/zoo/\(family)"), on: be).model
            let golden = try Fixtures.json("model/zoo/\(family)/golden.json")
            for (n, s) in (golden["sequences"] as! [[String: Any]]).enumerated() {
                var seq = (s["ids"] as! [Int]).map(Int32.init)
                let greedy = (s["greedy"] as! [Int]).map(Int32.init), gaps = s["greedy_gaps"] as! [Double]
                let cache = try m.makeCache(capacity: seq.count + greedy.count)
                var cached = try m.decode(seq, cache: cache)
                let V = m.vocabSize
                for step in greedy.indices {
                    let full = Array(try m.logits(seq).suffix(V))
                    let diff = zip(cached, full).map { abs($0 - $1) }.max()!
                    XCTAssertLessThan(diff, 1e-4, "\(family) seq \(n) step \(step): cached vs full forward")
                    let next = Int32(cached.indices.max { cached[$0] < cached[$1] }!)
                    XCTAssertTrue(next == greedy[step] || gaps[step] < 1e-3, "\(family) seq \(n) step \(step): \(next) vs \(greedy[step])")
                    seq.append(next)
                    if step + 1 < greedy.count { cached = try m.decode([next], cache: cache) }
                }
            }
        }
    }
}
