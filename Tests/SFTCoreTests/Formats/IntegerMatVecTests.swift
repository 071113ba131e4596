// Integer-activation matrix-vector products (quant_dot.c): the activation quantizers (8 and 16
// bits) against their definition and bit-exact across instruction sets; every kernel variant
// exact where the math is exactly representable, equal to the integer math in Double
// otherwise, and within the bound that x's rounding allows of the dequantized f32 product;
// results independent of the thread count (odd row counts, ragged pieces); the fused
// epilogues and multi-matrix calls.
import XCTest
import SFTCore
import SFTKernels

final class IntegerMatVecTests: XCTestCase {
    typealias RNG = QuantizedMatVecTests.RNG
    static let intTypes: [GGMLType] = [.q4_0, .q4_1, .q5_0, .q5_1, .q8_0]
    /// Bits of x for each weight type: Q8_0 reads 16-bit x, the 4/5-bit types 8-bit x.
    static func bits(_ type: GGMLType) -> Int { type == .q8_0 ? 16 : 8 }
    static func steps(_ bits: Int) -> Float { bits == 8 ? 127 : 32767 }
    static var isas: [QuantKernelISA] { QuantKernelISA.allCases.filter { $0 != .auto && $0.rawValue <= QuantKernelISA.best.rawValue } }

    static func layout(_ type: GGMLType) -> [Int] { QuantizedMatVecTests.layouts.first { $0.0 == type }!.1 }

    static func half(_ v: Float) -> [UInt8] { let b = Float16(v).bitPattern; return [UInt8(b & 0xFF), UInt8(b >> 8)] }

    /// y = W x through quantizedMatVecs; `interleaved` first rearranges W (Q4_0 / Q4_1).
    func matVec(_ type: GGMLType, _ w: [UInt8], _ x: [Float], rows: Int, isa: QuantKernelISA = .auto, threads: Int = 1,
                activations: MatVecActivations = .quantized, interleaved: Bool = false) throws -> [Float] {
        let laidOut = interleaved ? try w.withUnsafeBytes { try XCTUnwrap(interleaveForMatVec(type, $0, rows: rows, cols: x.count)) } : w
        if interleaved && rows >= 8 { XCTAssertNotEqual(laidOut, w, "\(type): interleaving moved the codes") }
        var y = [Float](repeating: .nan, count: rows)
        try laidOut.withUnsafeBytes { wb in
            try y.withUnsafeMutableBufferPointer { yb in
                try quantizedMatVecs([QuantizedMatVecOutput(type, weights: wb.baseAddress!, rows: rows, y: yb.baseAddress!, interleaved: interleaved)],
                                     x: x, cols: x.count, activations: activations, isa: isa, threads: threads)
            }
        }
        return y
    }

    /// The layouts each type runs in: GGML rows, and interleaved groups of 8 rows for Q4_0,
    /// Q4_1 and Q8_0.
    static func layouts(_ type: GGMLType) -> [Bool] { [.q4_0, .q4_1, .q8_0].contains(type) ? [false, true] : [false] }

    func testActivationQuantizersFollowTheirDefinitionOnEveryISA() throws {
        var rng = RNG(s: 7)
        var x = (0 ..< 32 * 9).map { _ in Float(rng.next() % 20001) / 1000 - 10 }
        for j in 32 ..< 64 { x[j] = 0 }                                        // an all-zero block: d = 0
        let ties: [Float] = [127, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -126.5]   // 8 bits, d = 1: halves round to even
        for (j, v) in ties.enumerated() { x[64 + j] = v }
        for j in 64 + ties.count ..< 96 { x[j] = Float(j % 5) }
        for j in 96 ..< 128 { x[j] = 1e-30 * Float(j - 100) }                  // tiny values
        x[128] = 32767; x[129] = 0.5; x[130] = -1.5; x[131] = 32766.5          // 16 bits, d = 1
        for bits in [8, 16] {
            let ref = try quantizeActivations(x, bits: bits, isa: .generic)
            for b in 0 ..< x.count / 32 {
                let block = x[(32 * b) ..< (32 * b + 32)]
                let d = block.map(abs).max()! / Self.steps(bits), id: Float = d != 0 ? 1 / d : 0
                let q = block.map { ($0 * id).rounded(.toNearestOrEven) }
                XCTAssertEqual(ref.d[b], d, "\(bits) bits, block \(b): d")
                XCTAssertEqual(ref.codes[(32 * b) ..< (32 * b + 32)].map(Float.init), q, "\(bits) bits, block \(b): codes")
                if bits == 8 { XCTAssertEqual(ref.s[b], d * q.reduce(0, +), "block \(b): s") }
            }
            XCTAssertEqual(ref.d[1], 0)
            for isa in Self.isas {
                let got = try quantizeActivations(x, bits: bits, isa: isa)
                XCTAssertEqual(got.codes, ref.codes, "\(bits) bits, \(isa)")
                XCTAssertEqual(got.d.map(\.bitPattern), ref.d.map(\.bitPattern), "\(bits) bits, \(isa)")
                XCTAssertEqual(got.s.map(\.bitPattern), ref.s.map(\.bitPattern), "\(bits) bits, \(isa)")
            }
        }
        XCTAssertEqual(try quantizeActivations(x, bits: 8).codes[64 ..< 72], [127, 2, -4, 0, 0, 2, 126, -126])
        XCTAssertEqual(try quantizeActivations(x, bits: 16).codes[128 ..< 132], [32767, 0, -2, 32766])
        XCTAssertThrowsError(try quantizeActivations([Float](repeating: 1, count: 33)))
        XCTAssertThrowsError(try quantizeActivations(x, bits: 4))
    }

    /// Power-of-two scales and activations that quantize without rounding make every float
    /// step exact, so each variant must give the exact product to the bit: the integer parts
    /// are checked exactly, independent of summation order.
    func testEveryVariantIsExactWhenTheMathIsRepresentable() throws {
        var rng = RNG(s: 11)
        let rows = 37
        for type in Self.intTypes {
            // x = code * d with d a power of two and one code per block at full scale; for 16
            // bits the other codes stay small and the row short, so every sum fits 24 bits.
            let bits = Self.bits(type), full = Int(Self.steps(bits))
            let cols = bits == 8 ? 17 * 32 : 3 * 32, d: Float = bits == 8 ? 1.0 / 64 : 1.0 / 32768, small = bits == 8 ? 127 : 64
            var x = [Float](repeating: 0, count: cols)
            for b in 0 ..< cols / 32 {
                for j in 0 ..< 32 { x[32 * b + j] = Float(Int(rng.next() % UInt64(2 * small + 1)) - small) * d }
                x[32 * b + Int(rng.next() % 32)] = Float(rng.next() % 2 == 0 ? full : -full) * d
            }
            var w = QuantizedMatVecTests.randomMatrix(type, halfOffsets: [], rows: rows, cols: cols, rng: &rng)
            let ts = type.typeSize!, offsets = Self.layout(type)
            for blk in 0 ..< rows * cols / 32 {
                let dw: Float = bits == 16 || rng.next() % 2 == 0 ? 1.0 / 32 : 1.0 / 16
                w.replaceSubrange(blk * ts ..< blk * ts + 2, with: Self.half(dw))
                if offsets.count == 2 {
                    let m: [Float] = [0.125, -0.125, 0.0625, 0]
                    w.replaceSubrange(blk * ts + 2 ..< blk * ts + 4, with: Self.half(m[Int(rng.next() % 4)]))
                }
            }
            let dense = try w.withUnsafeBytes { try dequantizeBlocks(type, $0, count: rows * cols) }
            let exact = (0 ..< rows).map { r in Float((0 ..< cols).reduce(0.0) { $0 + Double(dense[r * cols + $1]) * Double(x[$1]) }) }
            for isa in Self.isas {
                for threads in [1, 2, 3] {
                    for interleaved in Self.layouts(type) {
                        let y = try matVec(type, w, x, rows: rows, isa: isa, threads: threads, interleaved: interleaved)
                        XCTAssertEqual(y.map(\.bitPattern), exact.map(\.bitPattern),
                                       "\(type) \(isa) threads=\(threads) interleaved=\(interleaved): \(zip(y, exact).prefix(3))")
                    }
                }
            }
        }
    }

    /// Random scales: each variant equals the integer math done in Double (float rounding
    /// only), and the product is within the bound x's rounding allows of the f32 product:
    /// |Δy_r| <= Σ_blocks (max|x_b| / (2 · steps)) Σ_{j in b} |w_rj|, steps 127 or 32767.
    func testIntegerProductsStayWithinTheActivationRoundingBound() throws {
        var rng = RNG(s: 42)
        for type in Self.intTypes {
            for (rows, cols) in [(37, 544), (1, 32), (129, 96)] {
                let w = QuantizedMatVecTests.randomMatrix(type, halfOffsets: Self.layout(type), rows: rows, cols: cols, rng: &rng)
                let x = (0 ..< cols).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
                let dense = try w.withUnsafeBytes { try dequantizeBlocks(type, $0, count: rows * cols) }
                let bits = Self.bits(type)
                let xq = try quantizeActivations(x, bits: bits, isa: .generic)
                let xd = (0 ..< cols).map { Double(xq.d[$0 / 32]) * Double(xq.codes[$0]) }
                var intMath = [Double](), bound = [Double](), magnitude = [Double]()
                for r in 0 ..< rows {
                    let row = dense[(r * cols) ..< (r * cols + cols)].map(Double.init)
                    intMath.append((0 ..< cols).reduce(0.0) { $0 + row[$1] * xd[$1] })
                    var b = 0.0
                    for blk in 0 ..< cols / 32 {
                        let amax = Double(x[(32 * blk) ..< (32 * blk + 32)].map(abs).max()!)
                        b += amax / Double(2 * Self.steps(bits)) * 1.001 * (32 * blk ..< 32 * blk + 32).reduce(0.0) { $0 + abs(row[$1]) }
                    }
                    bound.append(b)
                    magnitude.append((0 ..< cols).reduce(0.0) { $0 + abs(row[$1] * xd[$1]) })
                }
                let f32 = (0 ..< rows).map { r in (0 ..< cols).reduce(0.0) { $0 + Double(dense[r * cols + $1]) * Double(x[$1]) } }
                var byISA: [QuantKernelISA: [Float]] = [:]
                for isa in Self.isas {
                  for interleaved in Self.layouts(type) {
                    let y = try matVec(type, w, x, rows: rows, isa: isa, threads: 1, interleaved: interleaved)
                    if !interleaved { byISA[isa] = y }
                    for r in 0 ..< rows {
                        let floatSlack = 2e-6 * magnitude[r] + 1e-30
                        XCTAssertLessThanOrEqual(abs(Double(y[r]) - intMath[r]), floatSlack, "\(type) \(isa) \(rows)x\(cols) row \(r) vs integer math")
                        XCTAssertLessThanOrEqual(abs(Double(y[r]) - f32[r]), bound[r] + floatSlack, "\(type) \(isa) \(rows)x\(cols) row \(r) vs f32")
                    }
                    // Rows never straddle threads: any split gives the same bits.
                    for threads in [2, 3] {
                        let yt = try matVec(type, w, x, rows: rows, isa: isa, threads: threads, interleaved: interleaved)
                        XCTAssertEqual(yt.map(\.bitPattern), y.map(\.bitPattern), "\(type) \(isa) threads=\(threads) interleaved=\(interleaved)")
                    }
                    // The reference kernels do the same float steps in both layouts.
                    if isa == .generic && interleaved {
                        XCTAssertEqual(y.map(\.bitPattern), byISA[.generic]!.map(\.bitPattern), "\(type) generic, interleaved vs rows")
                    }
                  }
                }
                // x really was rounded: the 8-bit product is not the f32 one (beyond float noise;
                // a single 32-value row can happen to land close).
                if rows > 1 && bits == 8 {
                    XCTAssertTrue((0 ..< rows).contains { abs(Double(byISA[.generic]![$0]) - f32[$0]) > 1e-5 * magnitude[$0] }, "\(type) \(rows)x\(cols)")
                }
            }
        }
    }

    /// f32 activations on an interleaved matrix read it back as GGML rows: the same bits as
    /// the f32 product on the original layout.
    func testF32ActivationsOnInterleavedMatricesMatchTheRowLayout() throws {
        var rng = RNG(s: 3)
        for type in [GGMLType.q4_0, .q4_1, .q8_0] {
            for rows in [1, 8, 45] {
                let w = QuantizedMatVecTests.randomMatrix(type, halfOffsets: Self.layout(type), rows: rows, cols: 96, rng: &rng)
                let x = (0 ..< 96).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
                for threads in [1, 2] {
                    XCTAssertEqual(try matVec(type, w, x, rows: rows, threads: threads, activations: .f32, interleaved: true).map(\.bitPattern),
                                   try matVec(type, w, x, rows: rows, activations: .f32).map(\.bitPattern), "\(type) rows=\(rows)")
                }
            }
        }
        let q5 = [UInt8](repeating: 0, count: 22), short = [UInt8](repeating: 0, count: 19)
        XCTAssertNil(try q5.withUnsafeBytes { try interleaveForMatVec(.q5_0, $0, rows: 1, cols: 32) })
        XCTAssertThrowsError(try short.withUnsafeBytes { try interleaveForMatVec(.q4_1, $0, rows: 1, cols: 32) })
    }

    func testTypesWithoutAnIntegerKernelFallBackToTheF32Kernels() throws {
        var rng = RNG(s: 5)
        for (type, offsets) in [(GGMLType.q6_K, [208]), (.q4_K, [0, 2]), (.f16, [])] {
            let rows = 19, cols = 512
            let w = QuantizedMatVecTests.randomMatrix(type, halfOffsets: offsets, rows: rows, cols: cols, rng: &rng)
            let x = (0 ..< cols).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
            XCTAssertEqual(try matVec(type, w, x, rows: rows, threads: 2).map(\.bitPattern),
                           try matVec(type, w, x, rows: rows, activations: .f32).map(\.bitPattern), "\(type)")
        }
    }

    func testFusedEpiloguesAndMatricesSharingX() throws {
        var rng = RNG(s: 9)
        let cols = 576, types: [GGMLType] = [.q4_1, .q8_0, .q4_0], rows = [61, 23, 23]
        let ws = zip(types, rows).map { QuantizedMatVecTests.randomMatrix($0, halfOffsets: Self.layout($0), rows: $1, cols: cols, rng: &rng) }
        let x = (0 ..< cols).map { _ in Float(rng.next() % 2001) / 1000 - 1 }
        let separate = try (0 ..< 3).map { try matVec(types[$0], ws[$0], x, rows: rows[$0]) }
        let pointers = ws.map { w -> UnsafeMutableRawPointer in
            let p = UnsafeMutableRawPointer.allocate(byteCount: w.count, alignment: 64)
            w.withUnsafeBytes { p.copyMemory(from: $0.baseAddress!, byteCount: w.count) }
            return p
        }
        defer { pointers.forEach { $0.deallocate() } }
        let ys = rows.map { UnsafeMutableBufferPointer<Float>.allocate(capacity: $0) }
        defer { ys.forEach { $0.deallocate() } }
        try quantizedMatVecs((0 ..< 3).map { QuantizedMatVecOutput(types[$0], weights: pointers[$0], rows: rows[$0], y: ys[$0].baseAddress!) },
                             x: x, cols: cols, threads: 2)
        for k in 0 ..< 3 { XCTAssertEqual(Array(ys[k]).map(\.bitPattern), separate[k].map(\.bitPattern), "matrix \(k) of 3 sharing x") }

        // y += W x
        let start = (0 ..< rows[0]).map { Float($0) * 0.25 - 3 }
        var acc = start
        try acc.withUnsafeMutableBufferPointer { yb in
            try quantizedMatVecs([QuantizedMatVecOutput(types[0], weights: pointers[0], rows: rows[0], y: yb.baseAddress!)],
                                 x: x, cols: cols, epilogue: .accumulate, threads: 3)
        }
        XCTAssertEqual(acc.map(\.bitPattern), zip(start, separate[0]).map { ($0 + $1).bitPattern }, "accumulate")

        // silu(gate x) * (up x), gate and up of different types
        var h = [Float](repeating: .nan, count: rows[1])
        try h.withUnsafeMutableBufferPointer { hb in
            try quantizedMatVecs([QuantizedMatVecOutput(types[1], weights: pointers[1], rows: rows[1], y: hb.baseAddress!),
                                  QuantizedMatVecOutput(types[2], weights: pointers[2], rows: rows[2], y: nil)],
                                 x: x, cols: cols, epilogue: .swiglu, threads: 2)
        }
        let want = zip(separate[1], separate[2]).map { g, u in Float(Double(g) / (1 + exp(-Double(g))) * Double(u)) }
        assertClose(h, want, rtol: 1e-6, atol: 1e-7, "swiglu")

        // Misuse is an error, not a crash.
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 64)
        defer { scratch.deallocate() }
        XCTAssertThrowsError(try quantizedMatVecs([QuantizedMatVecOutput(types[0], weights: pointers[0], rows: rows[0], y: scratch),
                                                   QuantizedMatVecOutput(types[1], weights: pointers[1], rows: rows[1], y: nil)],
                                                  x: x, cols: cols, epilogue: .swiglu)) {
            XCTAssertTrue("\($0)".contains("equal rows"), "\($0)")
        }
        XCTAssertThrowsError(try quantizedMatVecs(Array(repeating: QuantizedMatVecOutput(.q4_1, weights: pointers[0], rows: 1, y: scratch), count: 5),
                                                  x: x, cols: cols))
        XCTAssertThrowsError(try quantizedMatVecs([QuantizedMatVecOutput(.q4_1, weights: pointers[0], rows: 1, y: scratch)], x: x, cols: 48)) {
            XCTAssertTrue("\($0)".contains("multiple"), "\($0)")
        }
        XCTAssertThrowsError(try quantizedMatVecs([QuantizedMatVecOutput(.q4_1, weights: pointers[0], rows: 1, y: nil)], x: x, cols: cols))
    }

    /// Real SmolLM2 blocks (Q4_1 projections with 8-bit x, the Q8_0 embedding as LM head with
    /// 16-bit x): within the activation-rounding bound of the f32 product.
    func testSmolLM2ProjectionsAndHeadStayWithinTheRoundingBound() throws {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else { throw XCTSkip("SmolLM2 GGUF not fetched") }
        let g = try GGUFFile(url: Assets.smolLM2)
        for name in ["blk.0.attn_q.weight", "blk.3.ffn_down.weight", "token_embd.weight"] {
            let t = try XCTUnwrap(g.tensor(named: name))
            let (rows, cols) = (t.shape[0], t.shape[1])
            XCTAssertTrue(Self.intTypes.contains(t.type), "\(name) is \(t.type)")
            let x = (0 ..< cols).map { Float(sin(Double($0) * 0.37) * (1 + Double($0 % 7))) }
            let checkRows = min(rows, 1024)
            let dense = try g.dequantize(t)
            var y = [Float](repeating: .nan, count: rows)
            try y.withUnsafeMutableBufferPointer { yb in
                try quantizedMatVecs([QuantizedMatVecOutput(t.type, weights: g.rawBytes(of: t).baseAddress!, rows: rows, y: yb.baseAddress!)],
                                     x: x, cols: cols)
            }
            // The interleaved layout (what packed decode runs) gives the same rows up to float rounding.
            let laidOut = try XCTUnwrap(interleaveForMatVec(t.type, g.rawBytes(of: t), rows: rows, cols: cols))
            var yi = [Float](repeating: .nan, count: rows)
            try laidOut.withUnsafeBytes { wb in
                try yi.withUnsafeMutableBufferPointer { yb in
                    try quantizedMatVecs([QuantizedMatVecOutput(t.type, weights: wb.baseAddress!, rows: rows, y: yb.baseAddress!, interleaved: true)],
                                         x: x, cols: cols)
                }
            }
            let scale = Double(y.map(abs).max()!)
            for r in 0 ..< rows where abs(Double(yi[r]) - Double(y[r])) > 1e-5 * scale {
                XCTFail("\(name) row \(r): interleaved \(yi[r]) vs rows \(y[r])"); break
            }
            for r in 0 ..< checkRows {
                let row = dense[(r * cols) ..< (r * cols + cols)]
                let f32 = zip(row, x).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
                var bound = 1e-5 * zip(row, x).reduce(0.0) { $0 + abs(Double($1.0) * Double($1.1)) }
                for blk in 0 ..< cols / 32 {
                    let amax = Double(x[(32 * blk) ..< (32 * blk + 32)].map(abs).max()!)
                    bound += amax / Double(2 * Self.steps(Self.bits(t.type))) * 1.001 * row[(row.startIndex + 32 * blk) ..< (row.startIndex + 32 * blk + 32)].reduce(0.0) { $0 + abs(Double($1)) }
                }
                XCTAssertLessThanOrEqual(abs(Double(y[r]) - f32), bound, "\(name) row \(r)")
            }
            XCTAssertFalse(y.contains { $0.isNaN }, name)
        }
    }
}
