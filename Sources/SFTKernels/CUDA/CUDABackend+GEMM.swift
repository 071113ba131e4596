// The CUDA backend's GEMM (cuBLASLt; f32 with optional TF32, and bf16/f16 inputs with f32
// accumulation for mixed precision) and the fused LM head + cross-entropy built from it, the
// same loop as the CPU backend's: logits are made a chunk of rows at a time into one reused
// scratch buffer, so memory stays at chunk × V however many tokens there are.

import CSFTKernels
import Foundation

extension CUDABackend {
    public func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                     A: BufferView, lda: Int, strideA: Int, B: BufferView, ldb: Int, strideB: Int,
                     beta: Float, C: BufferView, ldc: Int, strideC: Int, batch: Int) throws {
        try gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: alpha, A: A, aType: .f32, lda: lda,
                 strideA: strideA, B: B, bType: .f32, ldb: ldb, strideB: strideB, beta: beta, C: C, cType: .f32,
                 ldc: ldc, strideC: strideC, batch: batch)
    }

    /// GEMM with storage types per operand: A and B f32, bf16 or f16 (both the same 16-bit
    /// type, or both f32), C f32 or the inputs' 16-bit type; accumulation is always f32.
    /// Same layout rules as `gemm` (row-major, strides in elements).
    public func gemm(transA: Bool, transB: Bool, M: Int, N: Int, K: Int, alpha: Float,
                     A: BufferView, aType: DType, lda: Int, strideA: Int,
                     B: BufferView, bType: DType, ldb: Int, strideB: Int, beta: Float,
                     C: BufferView, cType: DType, ldc: Int, strideC: Int, batch: Int) throws {
        let shape = "M=\(M) N=\(N) K=\(K) batch=\(batch) transA=\(transA) transB=\(transB)"
        func fail(_ m: String) -> KernelError { .invalidArgument(op: "gemm", message: "\(m) (\(shape))") }
        func typeCode(_ t: DType) -> Int32? {
            switch t {
            case .f32: return Int32(SFT_CUDA_R_32F)
            case .bf16: return Int32(SFT_CUDA_R_16BF)
            case .f16: return Int32(SFT_CUDA_R_16F)
            default: return nil
            }
        }
        guard let at = typeCode(aType), let bt = typeCode(bType), let ct = typeCode(cType), aType == bType,
              cType == .f32 || cType == aType else {
            throw fail("unsupported types A=\(aType) B=\(bType) C=\(cType)")
        }
        guard let extent = try checkGEMM(transA: transA, transB: transB, M: M, N: N, K: K, lda: lda, strideA: strideA,
                                         ldb: ldb, strideB: strideB, ldc: ldc, strideC: strideC, batch: batch,
                                         shape: shape) else { return }
        func checkOperand(_ v: BufferView, _ t: DType, _ count: Int, _ name: String) throws {
            guard v.byteOffset % t.size == 0 else { throw fail("\(name): offset \(v.byteOffset) not aligned to \(t)") }
            try check(v, bytes: count * t.size, "gemm", "\(name) (\(shape))")
        }
        try checkOperand(A, aType, extent.a, "A")
        try checkOperand(B, bType, extent.b, "B")
        try checkOperand(C, cType, extent.c, "C")
        if K == 0 {
            // C = beta C: nothing to multiply (cuBLASLt does not take K = 0).
            guard cType == .f32 else { throw fail("K = 0 with a 16-bit C") }
            try launch(CUDAKernels.elementwise, "sft_scale_strided_f32", grid: (blocks(batch * M * N), 1, 1), block: 256,
                       [.ptr(C), .i64(ldc), .i64(strideC), .i64(M), .i64(N), .i64(batch), .f32(beta)])
            return
        }
        try bind()
        // cuBLASLt takes a 32-bit batch count: larger batches go in pieces.
        var done = 0
        while done < batch {
            let n = min(batch - done, Int(Int32.max))
            let r = sft_cublaslt_gemm(lt, transA ? 1 : 0, transB ? 1 : 0, Int64(M), Int64(N), Int64(K), alpha,
                                      address(A) + sft_CUdeviceptr(done * strideA * aType.size), at, Int64(lda), Int64(strideA),
                                      address(B) + sft_CUdeviceptr(done * strideB * bType.size), bt, Int64(ldb), Int64(strideB),
                                      beta, address(C) + sft_CUdeviceptr(done * strideC * cType.size), ct, Int64(ldc),
                                      Int64(strideC), Int64(n), allowTF32 ? 1 : 0, address(BufferView(workspace)),
                                      Self.workspaceBytes, stream)
            if r != 0 { throw KernelError.native(op: "gemm", message: String(cString: sft_last_error())) }
            done += n
        }
    }

    /// Rows whose target is `ignoreIndex` cost nothing: the targets are read once (the one
    /// synchronization before the loop), the counted rows gathered into chunks of `chunk`, and
    /// ignored rows get dx = 0. The loss is summed on the GPU and read once at the end.
    public func crossEntropyLMHead(x: BufferView, weight: BufferView, weightType: DType, targets: BufferView, N: Int,
                                   C: Int, V: Int, ignoreIndex: Int32, chunk: Int, gradScale: Float, softcap: Float,
                                   dx: BufferView?, dweight: BufferView?, compute: DType) throws -> (loss: Double, count: Int) {
        try checkCrossEntropyLMHead(x: x, weight: weight, targets: targets, N: N, C: C, V: V, chunk: chunk, softcap: softcap, dx: dx,
                                    dweight: dweight, compute: compute, weightType: weightType)
        // bf16: the weight cast once per call; the GEMMs through cuBLASLt's bf16 path.
        let w16 = weightType == .bf16 ? weight : compute == .bf16 ? BufferView(try allocate(bytes: V * C * 2)) : nil
        if let w16, weightType == .f32 { try cast(weight, from: .f32, into: w16, to: .bf16, count: V * C) }
        func mm(_ transA: Bool, _ transB: Bool, _ M: Int, _ N: Int, _ K: Int, _ a: BufferView, _ lda: Int,
                weightB: Bool, _ b: BufferView, _ ldb: Int, _ beta: Float, _ c: BufferView, _ ldc: Int) throws {
            if let w16 {
                try gemmBF16(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 1, A: a, aType: .f32, lda: lda,
                             B: weightB ? w16 : b, bType: weightB ? .bf16 : .f32, ldb: ldb, beta: beta, C: c, ldc: ldc)
            } else {
                try gemm(transA: transA, transB: transB, M: M, N: N, K: K, alpha: 1, A: a, lda: lda, strideA: 0,
                         B: b, ldb: ldb, strideB: 0, beta: beta, C: c, ldc: ldc, strideC: 0, batch: 1)
            }
        }
        var hostTargets = [Int32](repeating: 0, count: N)
        try hostTargets.withUnsafeMutableBytes { try download(targets, to: $0.baseAddress!, bytes: $0.count) }
        let active = try countedRows(hostTargets, V: V, ignoreIndex: ignoreIndex)
        if let dx { try fill(dx, value: 0, count: N * C) }
        if active.isEmpty { return (0, 0) }

        let rows = min(chunk, active.count)
        let wantGrad = dx != nil || dweight != nil
        let tr = CUDAKernels.training
        let index = BufferView(try allocate(bytes: active.count * 4))
        try active.withUnsafeBytes { try upload($0.baseAddress!, to: index, bytes: $0.count) }
        let rowLoss = BufferView(try allocate(bytes: active.count * 8))
        let logits = BufferView(try allocate(bytes: rows * V * 4))
        let xs = BufferView(try allocate(bytes: rows * C * 4))
        let ts = BufferView(try allocate(bytes: rows * 4))
        let dxs = dx == nil ? nil : BufferView(try allocate(bytes: rows * C * 4))

        var r0 = 0
        while r0 < active.count {
            let n = min(rows, active.count - r0)
            let idx = index.advanced(byBytes: r0 * 4)
            try launch(tr, "sft_gather_rows_f32", grid: (blocks(n * C), 1, 1), block: 256,
                       [.ptr(x), .ptr(idx), .ptr(xs), .i64(n), .i64(C)])
            try launch(tr, "sft_gather_i32", grid: (blocks(n), 1, 1), block: 256, [.ptr(targets), .ptr(idx), .ptr(ts), .i64(n)])
            // logits (n, V) = xs (n, C) · Wᵀ
            try mm(false, true, n, V, C, xs, C, weightB: true, weight, C, 0, logits, V)
            try launch(tr, "sft_xent_rows_f32", grid: (n, 1, 1), block: 1024,
                       [.ptr(logits), .ptr(ts), .i64(n), .i64(V), .i32(ignoreIndex), .f32(gradScale),
                        .i32(wantGrad ? 1 : 0), .f32(softcap), .ptr(rowLoss.advanced(byBytes: r0 * 8))])
            if let dx, let dxs {
                // dx rows = dlogits (n, V) · W (V, C), scattered back to their rows
                try mm(false, false, n, C, V, logits, V, weightB: true, weight, C, 0, dxs, C)
                try launch(tr, "sft_scatter_rows_f32", grid: (blocks(n * C), 1, 1), block: 256,
                           [.ptr(dxs), .ptr(idx), .ptr(dx), .i64(n), .i64(C)])
            }
            if let dweight {
                // dW (V, C) += dlogitsᵀ (V, n) · xs (n, C)
                try mm(true, false, V, C, n, logits, V, weightB: false, xs, C, 1, dweight, C)
            }
            r0 += n
        }
        let total = BufferView(try allocate(bytes: 8))
        try launch(CUDAKernels.elementwise, "sft_sum_f64", grid: (1, 1, 1), block: 1024,
                   [.ptr(rowLoss), .i64(active.count), .ptr(total)])
        var loss = 0.0
        try download(total, to: &loss, bytes: 8)
        return (loss, active.count)
    }
}
