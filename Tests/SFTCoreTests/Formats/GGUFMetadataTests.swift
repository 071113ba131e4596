// GGUF metadata of every value type (incl. nested arrays), versions 2 and 3, custom alignment,
// on the fixture from tools/make_gguf_fixtures.py.
import XCTest
import SFTCore
import SFTKernels

final class GGUFMetadataTests: XCTestCase {
    func testEveryMetadataValueTypeReadsBack() throws {
        let g = try GGUFFile(url: FormatsFixtures.url("metadata.gguf"))
        let m = g.metadata
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(m["t.u8"], .uint8(200))
        XCTAssertEqual(m["t.i8"], .int8(-100))
        XCTAssertEqual(m["t.u16"], .uint16(60000))
        XCTAssertEqual(m["t.i16"], .int16(-30000))
        XCTAssertEqual(m["t.u32"], .uint32(4_000_000_000))
        XCTAssertEqual(m["t.i32"], .int32(-2_000_000_000))
        XCTAssertEqual(m["t.u64"], .uint64(1 << 63 + 5))
        XCTAssertNil(m["t.u64"]?.int, "2^63+5 does not fit in Int")
        XCTAssertEqual(m["t.i64"]?.int, -(1 << 62))
        XCTAssertEqual(m["t.f32"]?.float, 1.5)
        XCTAssertEqual(m["t.f64"], .float64(-2.25e100))
        XCTAssertEqual(m["t.true"]?.bool, true)
        XCTAssertEqual(m["t.false"]?.bool, false)
        XCTAssertEqual(m["t.str"]?.string, "héllo ✓")
        XCTAssertEqual(m["t.empty_str"]?.string, "")
        XCTAssertEqual(m["t.arr_i32"]?.ints, [1, -2, 3])
        XCTAssertEqual(m["t.arr_i32"]?.typeName, "array[int32]")
        XCTAssertEqual(m["t.arr_f32"]?.floats, [0.5, -1.0])
        XCTAssertEqual(m["t.arr_str"]?.strings, ["a", "bc", ""])
        XCTAssertEqual(m["t.arr_bool"]?.array?.compactMap(\.bool), [true, false])
        XCTAssertEqual(m["t.nested"]?.array?.map { $0.ints ?? [] }, [[1, 2], [3], [4, 5, 6]])
        XCTAssertEqual(m["t.nested_str"]?.array?.map { $0.strings ?? [] }, [["x"], ["y", "z"]])
        XCTAssertEqual(m["general.alignment"]?.int, 64)
        XCTAssertEqual(g.alignment, 64)
        XCTAssertEqual(g.dataOffset % 64, 0)
        XCTAssertEqual(g.metadataKeys.first, "general.architecture")

        let a = try XCTUnwrap(g.tensor(named: "a"))
        XCTAssertEqual(a.dims, [3, 2])
        XCTAssertEqual(a.shape, [2, 3])
        XCTAssertEqual(try g.dequantize(a), [0, 1, 2, 3, 4, 5])
        let b = try XCTUnwrap(g.tensor(named: "b"))
        XCTAssertEqual(b.type, .f16)
        XCTAssertEqual(b.offset % 64, 0)
        XCTAssertEqual(try g.dequantize(b), [1, -2, 3, -4, 5, -6.5])
        XCTAssertNil(g.tensor(named: "missing"))
    }

    func testVersion2FilesReadLikeVersion3() throws {
        var bytes = [UInt8](try Data(contentsOf: FormatsFixtures.url("metadata.gguf")))
        bytes[4] = 2 // v2 and v3 share the little-endian layout
        let g = try GGUFFile(url: FormatsFixtures.temp(bytes))
        XCTAssertEqual(g.version, 2)
        XCTAssertEqual(g.metadata["t.str"]?.string, "héllo ✓")
        XCTAssertEqual(try g.dequantize(g.tensor(named: "a")!), [0, 1, 2, 3, 4, 5])
    }

    func testBuilderFileParsesAndRawBytesAreTheData() throws {
        let g = try GGUFFile(url: FormatsFixtures.temp(GGUFBytes.valid(values: [1, -2, 3.5, 4]).b))
        let t = try XCTUnwrap(g.tensor(named: "t"))
        XCTAssertEqual(g.alignment, 32)
        XCTAssertEqual(t.offset, g.dataOffset)
        XCTAssertEqual(g.rawBytes(of: t).count, 16)
        XCTAssertEqual(Array(g.rawBytes(of: t).bindMemory(to: Float.self)), [1, -2, 3.5, 4])
    }
}
