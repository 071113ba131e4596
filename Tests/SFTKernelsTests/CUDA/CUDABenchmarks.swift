// Timings of the CUDA backend's main kernels on the GPU, for the issue's side-by-side numbers
// (tools/bench_torch_cuda.py times PyTorch on the same shapes in the same command). Runs only
// with SFT_CUDA_BENCH=1 on a machine with a usable GPU. Inputs are random (never zeros), the
// first run of each op (module compile, allocation) is left out, and each time is the median
// of several repeats of `iterations` back-to-back calls, synchronized around them.

import Foundation
import SFTKernels
import XCTest

final class CUDABenchmarks: XCTestCase {
    var gpu: CUDABackend!

    override func setUpWithError() throws {
        guard ProcessInfo.processInfo.environment["SFT_CUDA_BENCH"] == "1" else {
            throw XCTSkip("set SFT_CUDA_BENCH=1 to time the CUDA kernels")
        }
        if let why = Device.cuda(0).unavailableReason { throw XCTSkip("no usable CUDA device: \(why)") }
        gpu = try CUDABackend.shared(ordinal: 0)
    }

    func random(_ n: Int, scale: Float = 1) throws -> BufferView {
        var rng = RNG(UInt64(n))
        let host = rng.floats(n, scale: Double(scale))
        let v = BufferView(try gpu.allocate(bytes: n * 4))
        try host.withUnsafeBytes { try gpu.upload($0.baseAddress!, to: v, bytes: $0.count) }
        return v
    }

    /// Median seconds per call.
    func seconds(iterations: Int = 10, repeats: Int = 5, _ body: () throws -> Void) throws -> Double {
        try body()
        try gpu.synchronize()
        var times: [Double] = []
        for _ in 0..<repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<iterations { try body() }
            try gpu.synchronize()
            times.append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9 / Double(iterations))
        }
        return times.sorted()[repeats / 2]
    }

    func report(_ op: String, _ shape: String, _ s: Double, flops: Double? = nil, bytes: Double? = nil) {
        var line = "\(op.padding(toLength: 26, withPad: " ", startingAt: 0)) \(shape.padding(toLength: 34, withPad: " ", startingAt: 0)) \(String(format: "%9.3f", s * 1e3)) ms"
        if let flops { line += String(format: "  %8.2f TFLOP/s", flops / s / 1e12) }
        if let bytes { line += String(format: "  %8.1f GB/s", bytes / s / 1e9) }
        print("bench \(gpu.gpu.name): \(line)")
    }

    func testTimeTheMainKernels() throws {
        // GEMM: f32, TF32, bf16 with f32 accumulation (4096³)
        let n = 4096
        let a = try random(n * n), b = try random(n * n), c = BufferView(try gpu.allocate(bytes: n * n * 4))
        for tf32 in [false, true] {
            gpu.allowTF32 = tf32
            let s = try seconds {
                try gpu.gemm(transA: false, transB: true, M: n, N: n, K: n, alpha: 1, A: a, lda: n, strideA: 0, B: b,
                             ldb: n, strideB: 0, beta: 0, C: c, ldc: n, strideC: 0, batch: 1)
            }
            report(tf32 ? "gemm tf32" : "gemm f32", "4096x4096x4096", s, flops: 2 * pow(Double(n), 3))
        }
        gpu.allowTF32 = false
        let a16 = BufferView(try gpu.allocate(bytes: n * n * 2)), b16 = BufferView(try gpu.allocate(bytes: n * n * 2))
        try gpu.cast(a, from: .f32, into: a16, to: .bf16, count: n * n)
        try gpu.cast(b, from: .f32, into: b16, to: .bf16, count: n * n)
        let s16 = try seconds {
            try gpu.gemm(transA: false, transB: true, M: n, N: n, K: n, alpha: 1, A: a16, aType: .bf16, lda: n, strideA: 0,
                         B: b16, bType: .bf16, ldb: n, strideB: 0, beta: 0, C: c, cType: .f32, ldc: n, strideC: 0, batch: 1)
        }
        report("gemm bf16 -> f32", "4096x4096x4096", s16, flops: 2 * pow(Double(n), 3))

        // Attention, causal: forward 2·B·H·D·T² FLOPs (half of the square), backward 2.5× that.
        for (T, H, KV, D) in [(2048, 32, 8, 64), (2048, 32, 8, 128), (8192, 32, 8, 64)] {
            let shape = AttentionShape(B: 1, T: T, H: H, KV: KV, D: D)
            let q = try random(T * H * D), k = try random(T * KV * D), v = try random(T * KV * D), dout = try random(T * H * D)
            let o = BufferView(try gpu.allocate(bytes: T * H * D * 4)), lse = BufferView(try gpu.allocate(bytes: H * T * 4))
            let dq = BufferView(try gpu.allocate(bytes: T * H * D * 4))
            let dk = BufferView(try gpu.allocate(bytes: T * KV * D * 4)), dv = BufferView(try gpu.allocate(bytes: T * KV * D * 4))
            let fwdFlops = 2 * Double(H * D) * Double(T) * Double(T)
            let f = try seconds(iterations: 3) {
                try gpu.attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: nil, alibi: nil, shape: shape)
            }
            let bwd = try seconds(iterations: 3) {
                try gpu.attentionBackward(q: q, k: k, v: v, o: o, dout: dout, lse: lse, docIds: nil, alibi: nil, dq: dq, dk: dk,
                                          dv: dv, shape: shape)
            }
            let label = "B=1 T=\(T) H=\(H) KV=\(KV) D=\(D)"
            report("attention fwd f32", label, f, flops: fwdFlops)
            report("attention bwd f32", label, bwd, flops: 2.5 * fwdFlops)
            report("attention fwd+bwd f32", label, f + bwd, flops: 3.5 * fwdFlops)
        }

        // Fused LM head + cross-entropy with gradients (SmolLM2's head: C=576, V=49152).
        let (N, C, V) = (4096, 576, 49152)
        let x = try random(N * C), w = try random(V * C, scale: 0.05), dx = BufferView(try gpu.allocate(bytes: N * C * 4))
        let dw = try random(V * C)
        var rng = RNG(9)
        let targets = (0..<N).map { _ in Int32(rng.int(0..<V)) }
        let t = BufferView(try gpu.allocate(bytes: N * 4))
        try targets.withUnsafeBytes { try gpu.upload($0.baseAddress!, to: t, bytes: $0.count) }
        gpu.resetPeakMemory()
        let xs = try seconds(iterations: 3) {
            _ = try gpu.crossEntropyLMHead(x: x, weight: w, targets: t, N: N, C: C, V: V, ignoreIndex: -100, chunk: 1024,
                                           gradScale: 1 / Float(N), dx: dx, dweight: dw)
        }
        report("lm head + xent fwd+bwd", "N=\(N) C=\(C) V=\(V) chunk=1024", xs, flops: 6 * Double(N) * Double(C) * Double(V))
        print("bench \(gpu.gpu.name): lm head peak memory \(gpu.memoryStats.peakBytes >> 20) MiB")

        // Memory-bound: add over 64M floats (read 2, write 1).
        let m = 64 << 20
        let p = try random(m), r = try random(m), y = BufferView(try gpu.allocate(bytes: m * 4))
        let sa = try seconds { try gpu.add(p, r, into: y, count: m) }
        report("add f32", "n=64M", sa, bytes: 12 * Double(m))
        let sw = try seconds { try gpu.swigluForward(gate: p, up: r, h: y, count: m) }
        report("swiglu fwd f32", "n=64M", sw, bytes: 12 * Double(m))
        let rs = BufferView(try gpu.allocate(bytes: (m / 2048) * 4))
        let sn = try seconds {
            try gpu.rmsnormForward(x: p, weight: r, y: y, rstd: rs, N: m / 2048, C: 2048, eps: 1e-5)
        }
        report("rmsnorm fwd f32", "N=32768 C=2048", sn, bytes: 8 * Double(m))
    }
}
