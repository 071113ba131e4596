// Column slices on CUDA (kernel in Kernels/CUDAKernels+Columns.swift).

extension CUDABackend {
    public func copyColumns(_ src: BufferView, ldSrc: Int, into dst: BufferView, ldDst: Int, rows: Int, width: Int) throws {
        let op = "copyColumns"
        try nonNegative(op, ["rows": rows, "width": width])
        try check(src, rows: rows, width: width, ld: ldSrc, op, "src (ld=\(ldSrc))")
        try check(dst, rows: rows, width: width, ld: ldDst, op, "dst (ld=\(ldDst))")
        if rows == 0 || width == 0 { return }
        try launch(CUDAKernels.columns, "sft_copy_columns_f32", grid: (blocks(rows * width), 1, 1), block: 256,
                   [.ptr(src), .i64(ldSrc), .ptr(dst), .i64(ldDst), .i64(rows), .i64(width)])
    }
}
