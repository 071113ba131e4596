// Quantized matrix-vector products with f32 activations (every kernel variant this CPU has)
// against dequantize + a naive f64 matvec, on random blocks of every supported type and on
// real SmolLM2 weights. The integer-activation products: IntegerMatVecTests.swift.
import XCTest
import SFTCore
import SFTKernels

final class QuantizedMatVecTests: XCTestCase {
    /// Offsets of f16 scale fields per block, so random blocks get finite, modest scales.
    static let layouts: [(GGMLType, [Int])] = [
        (.q4_0, [0]), (.q4_1, [0, 2]), (.q5_0, [0]), (.q5_1, [0, 2]), (.q8_0, [0]), (.iq4_nl, [0]),
        (.q2_K, [80, 82]), (.q3_K, [108]), (.q4_K, [0, 2]), (.q5_K, [0, 2]), (.q6_K, [208]),
        (.f16, []), (.bf16, []), (.f32, []),
    ]

    struct RNG { var s: UInt64; mutating func next() -> UInt64 { s = s &* 6364136223846793005 &+ 1442695040888963407; return s >> 33 } }

    static func randomMatrix(_ type: GGMLType, halfOffsets: [Int], rows: Int, cols: Int, rng: inout RNG) -> [UInt8] {
        let bs = type.blockSize!, ts = type.typeSize!
        let nblocks = rows * cols / bs
        var bytes = [UInt8](repeating: 0, count: nblocks * ts)
        func half(_ v: Float) -> [UInt8] { let b = Float16(v).bitPattern; return [UInt8(b & 0xFF), UInt8(b >> 8)] }
        func unit(_ r: inout RNG) -> Float { Float(r.next() % 20001) / 10000 - 1 }
        switch type {
        case .f32:
            for i in 0 ..< rows * cols { withUnsafeBytes(of: unit(&rng).bitPattern) { bytes.replaceSubrange(4 * i ..< 4 * i + 4, with: $0) } }
        case .f16:
            for i in 0 ..< rows * cols { bytes.replaceSubrange(2 * i ..< 2 * i + 2, with: half(unit(&rng))) }
        case .bf16:
            for i in 0 ..< rows * cols { let b = unit(&rng).bitPattern >> 16; bytes[2 * i] = UInt8(b & 0xFF); bytes[2 * i + 1] = UInt8(b >> 8) }
        default:
            for i in 0 ..< bytes.count { bytes[i] = UInt8(truncatingIfNeeded: rng.next()) }
            for b in 0 ..< nblocks {
                for o in halfOffsets { bytes.replaceSubrange(b * ts + o ..< b * ts + o + 2, with: half(unit(&rng) * 0.05)) }
            }
        }
        return bytes
    }

    func naive(_ w: [Float], _ x: [Float], rows: Int, cols: Int) -> [Float] {
        (0 ..< rows).map { r in Float((0 ..< cols).reduce(0.0) { $0 + Double(w[r * cols + $1]) * Double(x[$1]) }) }
    }

    func testEveryKernelVariantMatchesDequantizeThenNaiveMatVec() throws {
        var rng = RNG(s: 42)
        let isas = QuantKernelISA.allCases.filter { $0 != .auto && $0.rawValue <= QuantKernelISA.best.rawValue }
        XCTAssertTrue(isas.contains(.generic))
        for (type, offsets) in Self.layouts {
            let cols = type.blockSize! == 256 ? 768 : 544 // 3 super-blocks / 17 blocks
            let rows = 37
            let w = Self.randomMatrix(type, halfOffsets: offsets, rows: rows, cols: cols, rng: &rng)
            let x = (0 ..< cols).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
            let dense = try w.withUnsafeBytes { try dequantizeBlocks(type, $0, count: rows * cols) }
            let want = naive(dense, x, rows: rows, cols: cols)
            let scale = want.map(abs).max()!
            for isa in isas {
                for threads in [1, 3] {
                    var y = [Float](repeating: .nan, count: rows)
                    try w.withUnsafeBytes { wb in
                        try quantizedMatVec(type, weights: wb.baseAddress!, x: x, y: &y, rows: rows, cols: cols, isa: isa, threads: threads)
                    }
                    assertClose(y, want, rtol: 0, atol: 2e-5 * scale, "\(type) \(isa) threads=\(threads)")
                }
            }
        }
    }

    func testBadShapesAreErrors() throws {
        let w = [UInt8](repeating: 0, count: 20 * 4)
        var y = [Float](repeating: 0, count: 2)
        let x = [Float](repeating: 0, count: 48)
        XCTAssertThrowsError(try w.withUnsafeBytes { try quantizedMatVec(.q4_1, weights: $0.baseAddress!, x: x, y: &y, rows: 2, cols: 48) }) {
            XCTAssertTrue("\($0)".contains("multiple"), "\($0)")
        }
        XCTAssertThrowsError(try w.withUnsafeBytes { try quantizedMatVec(GGMLType(rawValue: 16), weights: $0.baseAddress!, x: x, y: &y, rows: 1, cols: 256) })
    }

    func testSmolLM2WeightsMatVecMatchesDequantized() throws {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else { throw XCTSkip("SmolLM2 GGUF not fetched") }
        let g = try GGUFFile(url: Assets.smolLM2)
        for name in ["blk.0.ffn_up.weight", "blk.0.ffn_down.weight", "token_embd.weight"] {
            let t = try XCTUnwrap(g.tensor(named: name))
            let (rows, cols) = (t.shape[0], t.shape[1])
            let x = (0 ..< cols).map { Float(sin(Double($0) * 0.37)) }
            let dense = try g.dequantize(t)
            let checkRows = min(rows, 2048) // the embedding has 49152 rows: check a prefix naively
            let want = naive(Array(dense[0 ..< checkRows * cols]), x, rows: checkRows, cols: cols)
            var y = [Float](repeating: .nan, count: rows)
            try quantizedMatVec(t.type, weights: g.rawBytes(of: t).baseAddress!, x: x, y: &y, rows: rows, cols: cols)
            let scale = want.map(abs).max()!
            assertClose(Array(y[0 ..< checkRows]), want, rtol: 0, atol: 1e-5 * scale, name)
            XCTAssertFalse(y.contains { $0.isNaN }, name)
        }
    }
}
