// Malformed GGUF files throw errors that name the file and the problem; none crash.
import XCTest
import SFTCore
import SFTKernels

final class GGUFMalformedTests: XCTestCase {
    func open(_ g: GGUFBytes) throws -> GGUFFile { try GGUFFile(url: FormatsFixtures.temp(g.b, name: "bad.gguf")) }

    func testEveryTruncationOfARealFileFailsCleanly() throws {
        let full = [UInt8](try Data(contentsOf: FormatsFixtures.url("metadata.gguf")))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-trunc-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("cut.gguf")
        var failures = 0
        // The last tensor ends before the file does when padding follows it; every cut before
        // the end of the last tensor's data must be an error.
        let g = try GGUFFile(url: FormatsFixtures.url("metadata.gguf"))
        let end = g.tensors.map { $0.offset + $0.byteCount }.max()!
        for n in 0 ..< end {
            try Data(full[0 ..< n]).write(to: url)
            do {
                _ = try GGUFFile(url: url)
                XCTFail("truncated to \(n) bytes parsed")
            } catch let e as SFTError {
                if case .format(let path, _, _) = e { XCTAssertEqual(path, url.path) } else { XCTFail("\(e)") }
                failures += 1
            }
        }
        XCTAssertEqual(failures, end)
    }

    func testBadMagic() {
        var g = GGUFBytes.valid()
        g.b[0 ..< 4] = [0x47, 0x47, 0x4D, 0x4C] // "GGML"
        assertFormatError(["bad.gguf", "bad magic 'GGML'"]) { try open(g) }
    }

    func testUnsupportedAndByteSwappedVersions() {
        var g = GGUFBytes.valid()
        g.b[4] = 1
        assertFormatError(["bad.gguf", "version 1"]) { try open(g) }
        g.b[4 ..< 8] = [0, 0, 0, 3]
        assertFormatError(["bad.gguf", "big-endian"]) { try open(g) }
    }

    func testAbsurdCounts() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: UInt64.max)
        assertFormatError(["bad.gguf", "metadata count"]) { try open(g) }
        g = GGUFBytes()
        g.header(tensors: 1 << 60, kvs: 0)
        assertFormatError(["bad.gguf", "tensor count"]) { try open(g) }
    }

    func testAbsurdDimensions() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [4, 4, 4, 4, 4], type: 0, offset: 0)
        g.pad(); g.b += [UInt8](repeating: 0, count: 4096)
        assertFormatError(["bad.gguf", "'w'", "5 dimensions"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [1 << 40, 1 << 40], type: 0, offset: 0)
        g.pad(); g.b += [UInt8](repeating: 0, count: 64)
        assertFormatError(["bad.gguf", "'w'"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [1 << 33, 1 << 33, 1 << 33], type: 0, offset: 0)
        g.pad(); g.b += [UInt8](repeating: 0, count: 64)
        assertFormatError(["bad.gguf", "'w'", "overflows"]) { try open(g) }
    }

    func testDataPastTheEnd() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [8], type: 0, offset: 0)
        g.pad(); g.b += [UInt8](repeating: 0, count: 16) // needs 32
        assertFormatError(["bad.gguf", "'w'", "past the end"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [4], type: 0, offset: UInt64.max - 31)
        g.pad(); g.b += [UInt8](repeating: 0, count: 16)
        assertFormatError(["bad.gguf", "'w'", "past the end"]) { try open(g) }
    }

    func testMisalignedAndOverlappingTensors() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("w", dims: [4], type: 0, offset: 4)
        g.pad(); g.b += [UInt8](repeating: 0, count: 64)
        assertFormatError(["bad.gguf", "'w'", "alignment"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 2, kvs: 0)
        g.tensorInfo("a", dims: [16], type: 0, offset: 0)
        g.tensorInfo("b", dims: [16], type: 0, offset: 32)
        g.pad(); g.b += [UInt8](repeating: 0, count: 128)
        assertFormatError(["bad.gguf", "'a'", "'b'", "overlap"]) { try open(g) }
    }

    func testUnknownTypeIdNamesTensor() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("blk.3.ffn_up.weight", dims: [32], type: 99, offset: 0)
        g.pad(); g.b += [UInt8](repeating: 0, count: 128)
        assertFormatError(["bad.gguf", "blk.3.ffn_up.weight", "unknown GGML type id 99"]) { try open(g) }
    }

    func testRowLengthNotAMultipleOfTheBlock() {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("q", dims: [48, 2], type: 3, offset: 0) // Q4_1 blocks hold 32 values
        g.pad(); g.b += [UInt8](repeating: 0, count: 128)
        assertFormatError(["bad.gguf", "'q'", "multiple"]) { try open(g) }
    }

    func testStringLengthPastTheEnd() {
        var g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("general.name"); g.u32(8); g.u64(1 << 40); g.b += Array("short".utf8)
        assertFormatError(["bad.gguf", "general.name", "remain"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.u64(UInt64.max); g.b += [UInt8](repeating: 0, count: 16) // key length, then too few bytes
        assertFormatError(["bad.gguf", "metadata key"]) { try open(g) }
    }

    func testBadValuesInMetadata() {
        var g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("k"); g.u32(13); g.u32(0)
        assertFormatError(["bad.gguf", "'k'", "unknown value type 13"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("k"); g.u32(9); g.u32(4); g.u64(1 << 50)
        assertFormatError(["bad.gguf", "'k'", "array"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("k"); g.u32(7); g.u8(2)
        assertFormatError(["bad.gguf", "'k'", "bool"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.rawStr([0x6B, 0xFF, 0xFE]); g.u32(4); g.u32(1)
        assertFormatError(["bad.gguf", "UTF-8"]) { try open(g) }

        // deeply nested arrays are refused, not recursed into without end
        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("deep"); g.u32(9)
        for _ in 0 ..< 40 { g.u32(9); g.u64(1) }
        g.u32(4); g.u64(1); g.u32(7)
        assertFormatError(["bad.gguf", "'deep'", "nested"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 2)
        g.str("k"); g.u32(4); g.u32(1)
        g.str("k"); g.u32(4); g.u32(2)
        assertFormatError(["bad.gguf", "duplicate", "'k'"]) { try open(g) }

        g = GGUFBytes()
        g.header(tensors: 0, kvs: 1)
        g.str("general.alignment"); g.u32(4); g.u32(24)
        assertFormatError(["bad.gguf", "alignment"]) { try open(g) }
    }

    func testEmptyAndMissingFiles() {
        assertFormatError(["empty.gguf", "too short"]) { try GGUFFile(url: FormatsFixtures.temp([], name: "empty.gguf")) }
        assertFormatError(["/no/such/file.gguf", "cannot open"]) { try GGUFFile(url: URL(fileURLWithPath: "/no/such/file.gguf")) }
    }
}
