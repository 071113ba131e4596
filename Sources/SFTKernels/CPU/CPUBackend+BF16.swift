// The CPU backend's bf16 GEMM (mixed precision, see WeightForms/DenseBF16.swift): sft_gemm_bf16
// (gemm_bf16.c) split into blocks of C on the backend's pool, each part packing its own bf16
// panels. Readable reference: sft_gemm_bf16_ref.

import CSFTKernels
import Foundation

extension CPUBackend {
    public func gemmBF16(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                         A: BufferView, aType: DType, lda: Int, B: BufferView, bType: DType, ldb: Int,
                         beta: Float, C: BufferView, ldc: Int) throws {
        let profileStart = OpProfile.begin()
        defer {
            if profileStart > 0 {
                OpProfile.end("gemm bf16 \(M)×\(N)×\(K)\(transA ? " Aᵀ" : "")\(transB ? " Bᵀ" : "")", profileStart,
                              flops: 2 * Double(M) * Double(N) * Double(K))
            }
        }
        guard try checkGEMMBF16(transA: transA, transB: transB, M: M, N: N, K: K, A: A, aType: aType, lda: lda,
                                B: B, bType: bType, ldb: ldb, C: C, ldc: ldc) != nil else { return }
        let (pa, pb, pc) = (UnsafeRawPointer(A.raw), UnsafeRawPointer(B.raw), C.f32())
        // One part per core, each with at least 2M multiply-adds and one 32-column tile.
        let nparts = max(1, min(gemmParts(M * N * max(K, 1)), max(M, N) / 32))
        try runParts(nparts, op: "gemmBF16") { p, np in
            sft_gemm_bf16(transA ? 1 : 0, transB ? 1 : 0, Int64(M), Int64(N), Int64(K), alpha, pa, aType == .bf16 ? 1 : 0,
                          Int64(lda), pb, bType == .bf16 ? 1 : 0, Int64(ldb), beta, pc, Int64(ldc), Int32(p), Int32(np))
        }
    }

    /// The bf16 GEMM's micro-kernel in use ("avx512bf16", "avx512", "avx2", "generic").
    public static var gemmBF16Variant: String { String(cString: sft_gemm_bf16_variant()) }

    /// Forces the bf16 GEMM's micro-kernel ("auto" to undo), for tests and benchmarks of every
    /// variant on one machine; throws when this CPU cannot run it.
    public static func setGEMMBF16Variant(_ name: String) throws {
        if sft_gemm_bf16_set_variant(name) != 0 {
            throw KernelError.invalidArgument(op: "gemmBF16", message: String(cString: sft_last_error()))
        }
    }
}

extension CPUBackend {
    /// The vdpbf16ps peak of this CPU in GFLOP/s: a register-only loop (sft_dpbf16_peak) of
    /// `iterations` rounds on each of `threads` cores of the pool at once. nil without AVX512_BF16.
    public func dpbf16PeakGFLOPS(threads n: Int, iterations: Int = 20_000_000) -> Double? {
        var sink: Float = 0
        guard sft_dpbf16_peak(1, &sink) > 0 else { return nil }
        let parts = max(1, min(n, threads))
        var flops = [Double](repeating: 0, count: parts)
        let t0 = DispatchTime.now().uptimeNanoseconds
        flops.withUnsafeMutableBufferPointer { out in
            let o = out.baseAddress!
            parallel(parts) { p, _ in
                var s: Float = 0
                o[Int(p)] = sft_dpbf16_peak(Int64(iterations), &s)
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        return flops.reduce(0, +) / seconds * 1e-9
    }
}
