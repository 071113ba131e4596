// Linear4bit behaviour: the 4-bit Linear's forward and input gradient equal an f32 Linear
// holding the dequantized weight (tiles, matrix-vector path, blocks straddling rows, bias,
// double quantization), its weight is no parameter, and LoRA on top trains as on f32.
import Foundation
import XCTest
import SFTCore
import SFTKernels

final class QuantizedLinearTests: XCTestCase {
    let be = CPUBackend.shared

    func normals(_ n: Int, seed: UInt64, sigma: Double = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Float(sigma * rng.nextNormal()) }
    }

    func assertClose(_ a: [Float], _ b: [Float], tol: Float, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let scale = max(1, b.map { abs($0) }.max() ?? 1)
        let bad = zip(a, b).enumerated().filter { abs($0.element.0 - $0.element.1) > tol * scale }.prefix(5)
        XCTAssertTrue(bad.isEmpty, "\(what): first differences (index, got, expected): \(bad.map { ($0.offset, $0.element.0, $0.element.1) })",
                      file: file, line: line)
    }

    /// Forward and dX of the 4-bit op against Ops.linear on the dequantized weight.
    func check(N: Int, K: Int, M: Int, config: QuantizationConfig, bias: Bool, seed: UInt64) throws {
        let what = "N=\(N) K=\(K) M=\(M) \(config.type) block \(config.blockSize)\(config.doubleQuant ? " dq" : "")\(bias ? " bias" : "")"
        let w = normals(M * K, seed: seed, sigma: 0.05)
        let q = try QuantizedWeight(quantizing: w, shape: [M, K], config: config, on: be)
        let wdq = try Tensor(try q.dequantize(), shape: [M, K], on: be)
        let xv = normals(N * K, seed: seed + 1), gv = normals(N * M, seed: seed + 2)
        let bv = normals(M, seed: seed + 3)

        let x1 = try Tensor(xv, shape: [N, K], on: be, requiresGrad: true)
        let b1 = bias ? try Tensor(bv, shape: [M], on: be, requiresGrad: true) : nil
        let y1 = try Ops.quantizedLinear(x1, q, bias: b1)
        try Autograd.backward(y1, gradient: try Tensor(gv, shape: [N, M], on: be))

        let x2 = try Tensor(xv, shape: [N, K], on: be, requiresGrad: true)
        let b2 = bias ? try Tensor(bv, shape: [M], on: be, requiresGrad: true) : nil
        let y2 = try Ops.linear(x2, wdq, bias: b2)
        try Autograd.backward(y2, gradient: try Tensor(gv, shape: [N, M], on: be))

        XCTAssertEqual(y1.shape, [N, M])
        assertClose(try y1.floats(), try y2.floats(), tol: 2e-6, "\(what) forward")
        assertClose(try XCTUnwrap(x1.grad).floats(), try XCTUnwrap(x2.grad).floats(), tol: 2e-6, "\(what) dX")
        if bias { assertClose(try XCTUnwrap(b1?.grad).floats(), try XCTUnwrap(b2?.grad).floats(), tol: 1e-6, "\(what) dbias") }
    }

    func testForwardAndInputGradientMatchDequantizedF32Linear() throws {
        let nf4 = QuantizationConfig(type: .nf4, blockSize: 64)
        try check(N: 1, K: 256, M: 96, config: nf4, bias: false, seed: 1)          // matrix-vector path
        try check(N: 2, K: 128, M: 33, config: nf4, bias: true, seed: 2)
        try check(N: 37, K: 100, M: 70, config: nf4, bias: true, seed: 3)        // blocks straddle rows
        try check(N: 9, K: 4096, M: 600, config: QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true),
                  bias: false, seed: 4)                                           // 3 row tiles
        try check(N: 5, K: 96, M: 64, config: QuantizationConfig(type: .fp4, blockSize: 32, doubleQuant: true), bias: true, seed: 5)
        try check(N: 1, K: 300, M: 41, config: QuantizationConfig(type: .fp4, blockSize: 128, doubleQuant: true), bias: true, seed: 6)
    }

    func testQuantizedLinearDropsItsWeightParameterAndKeepsBias() throws {
        let l = try Linear(inFeatures: 64, outFeatures: 32, bias: true, on: be)
        try l.weight.value.assign(normals(64 * 32, seed: 9))
        XCTAssertEqual(l.parameterCount(), 64 * 32 + 32)
        try l.quantize(QuantizationConfig())
        XCTAssertNotNil(l.quantized)
        XCTAssertEqual(l.namedParameters().map(\.0), ["bias"])
        XCTAssertEqual(l.parameterCount(), 32)
        XCTAssertEqual(l.weight.value.count, 0, "the f32 weight is dropped")
        XCTAssertEqual(l.quantizedWeightNames(), ["weight"])
        let x = try Tensor(normals(3 * 64, seed: 10), shape: [3, 64], on: be)
        let y = try l(x).floats()
        try l.dequantize()
        XCTAssertNil(l.quantized)
        XCTAssertEqual(l.parameterCount(), 64 * 32 + 32)
        assertClose(try l(x).floats(), y, tol: 2e-6, "dequantized Linear gives the 4-bit Linear's output")
    }

    /// QLoRA: LoRA on the 4-bit Linear gives the same output and adapter gradients as LoRA on
    /// an f32 Linear whose weight is the dequantized one.
    func testLoRAOnQuantizedLinearMatchesLoRAOnDequantizedWeight() throws {
        let w = normals(48 * 128, seed: 21, sigma: 0.1)
        func make(quantized: Bool) throws -> Linear {
            let l = try Linear(inFeatures: 128, outFeatures: 48, bias: false, on: be)
            try l.weight.value.assign(w)
            try l.quantize(QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true))
            if !quantized { try l.dequantize() }
            try l.applyLoRA(LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 5)
            try l.lora!.b.weight.value.assign(normals(48 * 4, seed: 22, sigma: 0.1))
            return l
        }
        let q = try make(quantized: true), f = try make(quantized: false)
        XCTAssertEqual(q.trainableParameters.map(\.0), ["lora_A.weight", "lora_B.weight"])
        XCTAssertEqual(f.trainableParameters.map(\.0), ["lora_A.weight", "lora_B.weight"])
        let xv = normals(6 * 128, seed: 23), gv = normals(6 * 48, seed: 24)
        var outs: [[Float]] = []
        for l in [q, f] {
            let x = try Tensor(xv, shape: [6, 128], on: be, requiresGrad: true)
            let y = try l(x)
            try Autograd.backward(y, gradient: try Tensor(gv, shape: [6, 48], on: be))
            outs.append(try y.floats() + x.grad!.floats() + l.lora!.a.weight.value.grad!.floats() + l.lora!.b.weight.value.grad!.floats())
        }
        assertClose(outs[0], outs[1], tol: 2e-6, "output, dX, dA, dB")
    }

    func testShapeErrorsAreThrown() throws {
        let q = try QuantizedWeight(quantizing: normals(64 * 8, seed: 1), shape: [8, 64], config: QuantizationConfig(), on: be)
        let x = try Tensor(normals(2 * 32, seed: 2), shape: [2, 32], on: be)
        XCTAssertThrowsError(try Ops.quantizedLinear(x, q)) { XCTAssertTrue("\($0)".contains("linear4bit"), "\($0)") }
        XCTAssertThrowsError(try QuantizedWeight(quantizing: [1, 2, 3], shape: [2, 2], config: QuantizationConfig(), on: be))
    }
}
