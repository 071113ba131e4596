// The 4-bit weight form on every device (one body; CPU always, CUDA wherever it is usable —
// the emulated GPU on CI, a real one on a GPU machine): the 4-bit Linear's forward (matrix-
// vector path and row tiles) and input gradient on each accelerator equal the CPU's, for NF4
// and FP4 with and without double quantization. And the CPU fallback other backends get for
// decoding (download, decode on the host, upload) equals the CPU backend's own decoder.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class QuantizedLinearDeviceTests: XCTestCase {
    func normals(_ n: Int, seed: UInt64, sigma: Double = 1) -> [Float] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { _ in Float(sigma * rng.nextNormal()) }
    }

    /// (y, dX) of the 4-bit op on `device`, from the same values and config.
    func run(on device: Device, N: Int, K: Int, M: Int, config: QuantizationConfig, seed: UInt64) throws -> ([Float], [Float]) {
        let be = try backend(for: device)
        let q = try QuantizedWeight(quantizing: normals(M * K, seed: seed, sigma: 0.05), shape: [M, K], config: config, on: be)
        let x = try Tensor(normals(N * K, seed: seed + 1), shape: [N, K], on: be, requiresGrad: true)
        let bias = try Tensor(normals(M, seed: seed + 3), shape: [M], on: be, requiresGrad: true)
        let y = try Ops.quantizedLinear(x, q, bias: bias)
        try Autograd.backward(y, gradient: try Tensor(normals(N * M, seed: seed + 2), shape: [N, M], on: be))
        return (try y.floats(), try XCTUnwrap(x.grad).floats())
    }

    func testForwardAndInputGradientEqualTheCPUsOnEveryDevice() throws {
        let cases: [(N: Int, K: Int, M: Int, QuantizationConfig)] = [
            (1, 256, 96, QuantizationConfig(type: .nf4, blockSize: 64)),                        // matrix-vector
            (2, 300, 41, QuantizationConfig(type: .fp4, blockSize: 128, doubleQuant: true)),     // matrix-vector, dq
            (37, 100, 70, QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)),     // blocks straddle rows
            (5, 1056, 1000, QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)),   // row tiles: 2 CPU, 5 GPU
            (6, 96, 64, QuantizationConfig(type: .fp4, blockSize: 32)),
        ]
        let devices = try TestDevices.all()
        // Accelerators decode 16 M-value tiles: make them small enough for several tiles here.
        let saved = Linear4bitTiling.acceleratorTileValues
        Linear4bitTiling.acceleratorTileValues = 1 << 18
        defer { Linear4bitTiling.acceleratorTileValues = saved }
        for (i, c) in cases.enumerated() {
            let what = "N=\(c.N) K=\(c.K) M=\(c.M) \(c.3.type) block \(c.3.blockSize)\(c.3.doubleQuant ? " dq" : "")"
            let (y0, dx0) = try run(on: .cpu, N: c.N, K: c.K, M: c.M, config: c.3, seed: UInt64(10 * i))
            for device in devices.dropFirst() {
                let (y, dx) = try run(on: device, N: c.N, K: c.K, M: c.M, config: c.3, seed: UInt64(10 * i))
                for (got, want, name) in [(y, y0, "y"), (dx, dx0, "dX")] {
                    let scale = max(1, want.map { abs($0) }.max() ?? 1)
                    let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
                    XCTAssertLessThanOrEqual(worst, 1e-5 * scale, "\(device) \(what): \(name) differs from the CPU's by \(worst)")
                }
            }
        }
    }

    /// bitsandbytes' compute dtype: bf16 / f16 tiles (x, dY and the decoded tile rounded to 16
    /// bits, f32 accumulation) stay within 16-bit rounding of the CPU's f32; decode rows (N ≤ 2)
    /// use the f32 matrix-vector product forward (their input gradient still runs on 16-bit
    /// tiles). The CPU computes bf16 with its bf16 GEMM and f16 in f32.
    func testSixteenBitComputeDTypesStayNearF32() throws {
        let saved = Linear4bitTiling.acceleratorTileValues
        Linear4bitTiling.acceleratorTileValues = 1 << 18
        defer { Linear4bitTiling.acceleratorTileValues = saved }
        let shapes = [(N: 9, K: 1056, M: 1000), (N: 2, K: 256, M: 96)]
        for (i, s) in shapes.enumerated() {
            let f32 = QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: true)
            let (y0, dx0) = try run(on: .cpu, N: s.N, K: s.K, M: s.M, config: f32, seed: UInt64(100 + i))
            for dtype in [DType.bf16, .f16] {
                var c = f32
                c.computeDType = dtype
                for device in try TestDevices.all() {
                    let (y, dx) = try run(on: device, N: s.N, K: s.K, M: s.M, config: c, seed: UInt64(100 + i))
                    for (got, want, name) in [(y, y0, "y"), (dx, dx0, "dX")] {
                        let f32Compute = device == .cpu && dtype == .f16
                        let tol: Float = f32Compute || (s.N <= 2 && name == "y") ? 1e-5 : (dtype == .bf16 ? 2e-2 : 4e-3)
                        let scale = max(1, want.map { abs($0) }.max() ?? 1)
                        let worst = zip(got, want).map { abs($0 - $1) }.max() ?? .infinity
                        XCTAssertLessThanOrEqual(worst, tol * scale, "\(device) \(dtype) N=\(s.N): \(name) differs from f32 by \(worst)")
                    }
                }
            }
        }
    }

    /// QLoRA with compute_dtype bf16: the 4-bit op's forward equals, bit for bit on the CPU, the
    /// bf16 GEMM of x and the weight dequantized to f32 (then rounded to bf16 as it is packed);
    /// its input gradient equals that reference up to f32 summation order (tiles split the sum),
    /// and both are within f32 summation order of the exact product of the bf16-rounded values,
    /// on every device (the emulated GPU decodes tiles straight to bf16).
    func testBF16ComputeEqualsDequantizeThenRoundReference() throws {
        let cpu = CPUBackend.shared
        func rounded(_ x: [Float]) -> [Double] {
            x.map { v in let u = v.bitPattern; return Double(Float(bitPattern: ((u &+ 0x7fff &+ ((u >> 16) & 1)) >> 16) << 16)) }
        }
        for (i, s) in [(N: 9, K: 1056, M: 1000), (N: 37, K: 100, M: 70)].enumerated() {
            var config = QuantizationConfig(type: i == 0 ? .nf4 : .fp4, blockSize: 64, doubleQuant: i == 0)
            config.computeDType = .bf16
            let seed = UInt64(300 + i)
            let q = try QuantizedWeight(quantizing: normals(s.M * s.K, seed: seed, sigma: 0.05), shape: [s.M, s.K], config: config, on: cpu)
            let w = try q.dequantize()
            let x = normals(s.N * s.K, seed: seed + 1), dy = normals(s.N * s.M, seed: seed + 2)
            // The reference: the dequantized f32 weight through the bf16 GEMM in one call each.
            let (vx, vw, vdy) = (try Tensor(x, shape: [s.N, s.K], on: cpu), try Tensor(w, shape: [s.M, s.K], on: cpu),
                                 try Tensor(dy, shape: [s.N, s.M], on: cpu))
            let yRef = try Tensor(empty: [s.N, s.M], on: cpu), dxRef = try Tensor(empty: [s.N, s.K], on: cpu)
            try cpu.gemmBF16(transA: false, transB: true, M: s.N, N: s.M, K: s.K, alpha: 1, A: vx.storage, aType: .f32, lda: s.K,
                             B: vw.storage, bType: .f32, ldb: s.K, beta: 0, C: yRef.storage, ldc: s.M)
            try cpu.gemmBF16(transA: false, transB: false, M: s.N, N: s.K, K: s.M, alpha: 1, A: vdy.storage, aType: .f32, lda: s.M,
                             B: vw.storage, bType: .f32, ldb: s.K, beta: 0, C: dxRef.storage, ldc: s.K)
            let (yWant, dxWant) = (try yRef.floats(), try dxRef.floats())
            // Exact products of the rounded values, summed in Double.
            let (rx, rw, rdy) = (rounded(x), rounded(w), rounded(dy))
            var yExact = [Double](repeating: 0, count: s.N * s.M), dxExact = [Double](repeating: 0, count: s.N * s.K)
            for n in 0..<s.N {
                for m in 0..<s.M {
                    for k in 0..<s.K { yExact[n * s.M + m] += rx[n * s.K + k] * rw[m * s.K + k] }
                    for k in 0..<s.K { dxExact[n * s.K + k] += rdy[n * s.M + m] * rw[m * s.K + k] }
                }
            }
            for device in try TestDevices.all() {
                let be = try backend(for: device)
                let qd = try QuantizedWeight(quantizing: normals(s.M * s.K, seed: seed, sigma: 0.05), shape: [s.M, s.K], config: config, on: be)
                let xt = try Tensor(x, shape: [s.N, s.K], on: be, requiresGrad: true)
                let y = try Ops.quantizedLinear(xt, qd, bias: nil)
                try Autograd.backward(y, gradient: try Tensor(dy, shape: [s.N, s.M], on: be))
                let (yGot, dxGot) = (try y.floats(), try XCTUnwrap(xt.grad).floats())
                if device == .cpu {
                    XCTAssertEqual(yGot.map(\.bitPattern), yWant.map(\.bitPattern), "CPU y: the dequantize-then-round GEMM, bit for bit")
                    if s.M <= cpu.linear4bitTileRows(M: s.M, K: s.K) {
                        XCTAssertEqual(dxGot.map(\.bitPattern), dxWant.map(\.bitPattern), "CPU dX in one tile: bit for bit")
                    }
                }
                for (got, exact, name) in [(yGot, yExact, "y"), (dxGot, dxExact, "dX")] {
                    let scale = max(1, exact.map { abs($0) }.max() ?? 1)
                    let worst = zip(got, exact).map { abs(Double($0) - $1) }.max() ?? .infinity
                    XCTAssertLessThanOrEqual(worst, 2e-5 * scale, "\(device) N=\(s.N): \(name) is not the bf16-rounded product (off by \(worst))")
                }
                // And it is not the f32 product: the rounding happened.
                let yF32 = (0..<s.N * s.M).map { j in (0..<s.K).reduce(0.0) { $0 + Double(x[j / s.M * s.K + $1]) * Double(w[j % s.M * s.K + $1]) } }
                XCTAssertGreaterThan(zip(yGot, yF32).map { abs(Double($0) - $1) }.max() ?? 0, 1e-5, "\(device): bf16 rounding shows")
            }
        }
    }

    /// The fallback decoder (what a backend without its own 4-bit kernels runs, with explicit
    /// transfers) gives the CPU decoder's bits, for tiles that start and end mid-block.
    func testHostFallbackDecodesLikeTheCPUBackend() throws {
        let be = try backend(for: .cpu)
        for config in [QuantizationConfig(type: .nf4, blockSize: 64), QuantizationConfig(type: .fp4, blockSize: 32, doubleQuant: true),
                       QuantizationConfig(type: .nf4, blockSize: 256, doubleQuant: true)] {
            let (M, K) = (700, 45)
            let q = try QuantizedWeight(quantizing: normals(M * K, seed: 7), shape: [M, K], config: config, on: be)
            for (r0, rows) in [(0, M), (3, 1), (101, 333), (699, 1)] {
                let native = try Tensor(empty: [rows, K], on: be), fallback = try Tensor(empty: [rows, K], on: be)
                try be.dequantize4bit(q.matrix, rows: r0, count: rows, into: native.storage)
                try be.dequantize4bitOnHost(q.matrix, rows: r0, count: rows, into: fallback.storage)
                let a = try native.floats(), b = try fallback.floats()
                XCTAssertEqual(a.map(\.bitPattern), b.map(\.bitPattern), "\(config) rows \(r0)..<\(r0 + rows)")
                XCTAssertEqual(Array(try q.dequantize()[(r0 * K)..<((r0 + rows) * K)]), a, "\(config) rows \(r0)..<\(r0 + rows) vs dequantize()")
            }
        }
        let q = try QuantizedWeight(quantizing: normals(64, seed: 1), shape: [8, 8], config: QuantizationConfig(), on: be)
        let out = try Tensor(empty: [8, 8], on: be)
        XCTAssertThrowsError(try be.dequantize4bit(q.matrix, rows: 4, count: 5, into: out.storage)) {
            XCTAssertTrue("\($0)".contains("rows 4..<9"), "\($0)")
        }
    }

    /// Where a backend does not run GGUF blocks, nothing asks it to: `supports` says so and the
    /// packed ops throw a typed error instead of touching memory.
    func testWeightFormSupportIsAnswered() throws {
        let cpu = try backend(for: .cpu)
        XCTAssertTrue(WeightFormKind.allCases.allSatisfy { cpu.supports($0) })
        for device in try TestDevices.accelerators() {
            let be = try backend(for: device)
            XCTAssertTrue(be.supports(.dense) && be.supports(.blockwise4bit))
            XCTAssertFalse(be.supports(.ggufBlocks))
            XCTAssertThrowsError(try [UInt8](repeating: 0, count: 20).withUnsafeBytes { try be.packBlocks(.q4_1, rows: 1, cols: 32, bytes: $0) })
        }
    }
}
