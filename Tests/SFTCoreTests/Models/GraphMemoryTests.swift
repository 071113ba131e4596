// The autograd graph must be freed once the loss goes out of scope: a backward closure that
// captured its own output would keep every activation of every step alive.
import XCTest
import SFTCore
import SFTKernels

final class GraphMemoryTests: XCTestCase {
    func testTrainingStepsDoNotLeakActivations() throws {
        let be = CPUBackend.shared
        let m = try TinyLlama.make()
        try m.applyLoRA(LoRAConfig(r: 2, alpha: 4, dropout: 0.1), seed: 1)
        let ids = TinyLlama.tokens(16, seed: 1)
        var leaked: [Int] = []
        try Autograd.training(RandomStream(seed: 1)) { for ckpt in [false, true] {
            for _ in 0..<3 {
                m.zeroGrad()
                let before = be.memoryStats.currentBytes
                do {
                    let input = try ModelInput(tokens: ids, on: be)
                    let t = try Tensor(ints: Array(ids.dropFirst()) + [-100], shape: [16], on: be)
                    let (l, _) = try m.loss(input, targets: t, checkpointing: ckpt)
                    try Autograd.backward(l)
                }
                m.zeroGrad()
                leaked.append(be.memoryStats.currentBytes - before)
            }
        } }
        XCTAssertEqual(leaked, [Int](repeating: 0, count: leaked.count), "bytes still held after each step")
    }
}
