// CUDA C for column slices of row-major matrices (fused projections): the same copy as
// CPUBackend+Columns.

extension CUDAKernels {
    /// dst[r][c] = src[r][c] for c < width, rows lds / ldd floats apart.
    public static let columns = CUDAModuleSource(name: "columns", body: #"""
    extern "C" __global__ void sft_copy_columns_f32(const float *src, i64 lds, float *dst, i64 ldd, i64 rows, i64 width) {
        GRID_STRIDE(i, rows * width) {
            const i64 r = i / width, c = i % width;
            dst[r * ldd + c] = src[r * lds + c];
        }
    }
    """#, kernels: ["sft_copy_columns_f32(plplll)"])
}
