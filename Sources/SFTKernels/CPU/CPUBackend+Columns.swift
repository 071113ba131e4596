// Column slices of row-major matrices on the CPU (the q / k / v and gate / up parts of fused
// projections): one memcpy per row.
import Foundation

extension CPUBackend {
    public func copyColumns(_ src: BufferView, ldSrc: Int, into dst: BufferView, ldDst: Int, rows: Int, width: Int) throws {
        let op = "copyColumns"
        try nonNegative(op, ["rows": rows, "width": width])
        try check(src, rows: rows, width: width, ld: ldSrc, op, "src (ld=\(ldSrc))")
        try check(dst, rows: rows, width: width, ld: ldDst, op, "dst (ld=\(ldDst))")
        let ps = src.f32(), pd = dst.f32()
        for r in 0..<rows { (pd + r * ldDst).update(from: ps + r * ldSrc, count: width) }
    }
}
