// safetensors: files written by the reference `safetensors` package load with the right values;
// files written by sft read back in sft and in the reference package (checked once by
// tools/make_safetensors_fixtures.py --check-swift, report committed beside the fixture);
// HF folders (sharded, bf16/f16) load as f32; malformed files fail with clear errors.
import XCTest
import SFTCore
import SFTKernels

final class SafetensorsTests: XCTestCase {
    func testPythonWrittenFileLoadsWithTheRightValues() throws {
        let f = try SafetensorsFile(url: FormatsFixtures.url("python_written.safetensors"))
        XCTAssertEqual(f.metadata, ["format": "pt", "source": "fixture"])
        XCTAssertEqual(Set(f.names), ["w.f32", "w.f16", "w.bf16", "i.i64", "i.i32", "b.u8", "e.empty", "s.scalar"])
        XCTAssertEqual(f.tensor(named: "w.f32")?.shape, [2, 3])
        XCTAssertEqual(f.tensor(named: "w.f32")?.dtype, .f32)
        XCTAssertEqual(try f.loadF32("w.f32"), [-1, -0.5, 0, 0.5, 1, 1.5])
        XCTAssertEqual(try f.loadF32("w.f16"), [1, -2.5, 0.00006103515625, 65504])
        XCTAssertEqual(f.tensor(named: "w.bf16")?.dtype, .bf16)
        XCTAssertEqual(try f.loadF32("w.bf16"), [1, -1.5, 3.140625, -0.0078125])
        XCTAssertEqual(try f.loadF32("i.i64"), [-1, 0, 1_099_511_627_776])
        let i64 = f.rawBytes(of: f.tensor(named: "i.i64")!)
        XCTAssertEqual((0 ..< 3).map { i64.loadUnaligned(fromByteOffset: 8 * $0, as: Int64.self) }, [-1, 0, 1 << 40])
        XCTAssertEqual(try f.loadF32("i.i32"), [7, -8])
        XCTAssertEqual(try f.loadF32("b.u8"), [0, 128, 255])
        XCTAssertEqual(f.tensor(named: "e.empty")?.shape, [0, 4])
        XCTAssertEqual(try f.loadF32("e.empty"), [])
        XCTAssertEqual(f.tensor(named: "s.scalar")?.shape, [])
        XCTAssertEqual(try f.loadF32("s.scalar"), [42])
        assertFormatError(["nope", "no such tensor"]) { try f.loadF32("nope") }
    }

    /// Keep in sync with SWIFT_EXPECTED in tools/make_safetensors_fixtures.py.
    static func swiftWrittenTensors() throws -> [(name: String, tensor: SafetensorsTensor)] {
        [
            ("a.f32", try SafetensorsTensor([1, -2, 0.25, 3.5, 1e-3, -7], shape: [2, 3])),
            ("b.f16", try SafetensorsTensor([1, -2.5, 0.1, 65504], shape: [4], as: .f16)),
            ("c.bf16", try SafetensorsTensor([1, -1.5, 3.14159, 1e-3], shape: [2, 2], as: .bf16)),
            ("d.i64", try SafetensorsTensor([Int64(-1), 0, 1 << 40], shape: [3])),
            ("e.i32", try SafetensorsTensor([Int32(7), -8], shape: [2])),
            ("f.u8", try SafetensorsTensor([UInt8(0), 128, 255], shape: [3])),
            ("g.weird \"name\"\n", try SafetensorsTensor([Float(1)], shape: [1])),
        ]
    }

    func testSwiftWriterOutputReadsBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("out.safetensors")
        try Safetensors.write(Self.swiftWrittenTensors(), metadata: ["format": "pt", "writer": "sft"], to: url)
        let f = try SafetensorsFile(url: url)
        XCTAssertEqual(f.metadata, ["format": "pt", "writer": "sft"])
        XCTAssertEqual(f.names, ["a.f32", "b.f16", "c.bf16", "d.i64", "e.i32", "f.u8", "g.weird \"name\"\n"])
        XCTAssertEqual(try f.loadF32("a.f32"), [1, -2, 0.25, 3.5, 1e-3, -7])
        XCTAssertEqual(try f.loadF32("b.f16"), [1, -2.5, Float(Float16(0.1)), 65504])
        // 1e-3 is 0x3A83126F in f32: its bf16 rounds down to 0x3A83
        XCTAssertEqual(try f.loadF32("c.bf16"), [1, -1.5, 3.140625, Float(bitPattern: 0x3A83_0000)])
        XCTAssertEqual(try f.loadF32("d.i64"), [-1, 0, 1_099_511_627_776])
        XCTAssertEqual(try f.loadF32("f.u8"), [0, 128, 255])
        XCTAssertEqual((f.tensors.first?.offset ?? 1) % 8, 0, "data starts at a multiple of 8")
    }

    /// The committed swift_written.safetensors was checked with the reference implementation
    /// (swift_written.check.txt); the writer must keep producing exactly those bytes.
    /// SFT_WRITE_FIXTURES=1 rewrites the file in the source tree.
    func testSwiftWriterOutputMatchesCommittedFile() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var url = dir.appendingPathComponent("swift_written.safetensors")
        if ProcessInfo.processInfo.environment["SFT_WRITE_FIXTURES"] == "1" {
            url = FormatsFixtures.sourceFolder.appendingPathComponent("swift_written.safetensors")
        }
        try Safetensors.write(Self.swiftWrittenTensors(), metadata: ["writer": "sft", "format": "pt"], to: url)
        XCTAssertEqual(try Data(contentsOf: url), try Data(contentsOf: FormatsFixtures.url("swift_written.safetensors")))
        let report = try String(contentsOf: FormatsFixtures.url("swift_written.check.txt"), encoding: .utf8)
        XCTAssertTrue(report.hasSuffix("OK\n"), report)
    }

    func testShardedHFFolderLoadsAndCastsToF32() throws {
        let folder = try HFModelFolder(url: FormatsFixtures.url("hf_sharded"))
        XCTAssertEqual(folder.config["model_type"]?.stringValue, "llama")
        XCTAssertEqual(folder.config["hidden_size"]?.intValue, 4)
        XCTAssertNotNil(folder.tokenizerConfigURL)
        XCTAssertNil(folder.tokenizerURL)
        XCTAssertEqual(folder.weights.files.count, 2)
        XCTAssertEqual(Set(folder.names), ["model.embed_tokens.weight", "model.norm.weight", "model.layers.0.self_attn.q_proj.weight"])
        XCTAssertEqual(folder.weights.dtype(of: "model.embed_tokens.weight"), .bf16)
        XCTAssertEqual(folder.weights.dtype(of: "model.norm.weight"), .f16)
        XCTAssertEqual(folder.shape(of: "model.embed_tokens.weight"), [8, 4])
        let expected = try SafetensorsFile(url: FormatsFixtures.url("hf_sharded_expected.safetensors"))
        for name in folder.names {
            XCTAssertEqual(try folder.loadF32(name), try expected.loadF32(name), name)
        }
        XCTAssertEqual(folder.parameterCount, 32 + 4 + 16)
        let opened = try openWeights(at: FormatsFixtures.url("hf_sharded"))
        XCTAssertEqual(opened.names.count, 3)
        XCTAssertTrue(try openWeights(at: FormatsFixtures.url("permute.gguf")) is GGUFWeights)
    }

    // MARK: malformed

    /// A header (JSON text) followed by `data` bytes, with the length prefix set to `length`
    /// (default: the header's size).
    func file(_ header: String, data: [UInt8] = [], length: UInt64? = nil, raw: [UInt8]? = nil) throws -> URL {
        let h = raw ?? Array(header.utf8)
        var b: [UInt8] = []
        withUnsafeBytes(of: (length ?? UInt64(h.count)).littleEndian) { b += $0 }
        return try FormatsFixtures.temp(b + h + data, name: "bad.safetensors")
    }

    func testMalformedHeadersGiveClearErrors() throws {
        let ok = #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        XCTAssertEqual(try SafetensorsFile(url: file(ok, data: [UInt8](repeating: 0, count: 8))).names, ["a"])

        assertFormatError(["bad.safetensors", "not valid JSON"]) { try SafetensorsFile(url: file("{\"a\": [1, 2", data: [])) }
        assertFormatError(["bad.safetensors", "not a JSON object"]) { try SafetensorsFile(url: file("[1, 2]")) }
        assertFormatError(["bad.safetensors", "header length", "past the end"]) { try SafetensorsFile(url: file(ok, length: 1000)) }
        assertFormatError(["bad.safetensors", "limit"]) { try SafetensorsFile(url: file(ok, length: 1 << 40)) }
        assertFormatError(["bad.safetensors", "too short"]) { try SafetensorsFile(url: FormatsFixtures.temp([1, 2, 3], name: "bad.safetensors")) }
        assertFormatError(["bad.safetensors", "'a'", "overlap"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 12)))
        }
        assertFormatError(["bad.safetensors", "'a'", "needs 12 bytes", "hold 8"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "'a'", "past the end of the data"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "belong to no tensor"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#, data: [UInt8](repeating: 0, count: 12)))
        }
        assertFormatError(["bad.safetensors", "belong to no tensor"]) {
            try SafetensorsFile(url: file(ok, data: [UInt8](repeating: 0, count: 12)))
        }
        assertFormatError(["bad.safetensors", "'a'", "unknown dtype 'F128'"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "'a'", "shape"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "'a'", "overflows"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "'a'", "data_offsets"]) {
            try SafetensorsFile(url: file(#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: [UInt8](repeating: 0, count: 8)))
        }
        assertFormatError(["bad.safetensors", "__metadata__"]) {
            try SafetensorsFile(url: file(#"{"__metadata__":{"k":1}}"#))
        }
        // invalid UTF-8 inside a key: the error gives the byte offset of the bad byte
        var raw = Array(#"{"a?":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#.utf8)
        raw[3] = 0xFF
        assertFormatError(["bad.safetensors", "at byte 11", "UTF-8"]) {
            try SafetensorsFile(url: file("", data: [UInt8](repeating: 0, count: 8), raw: raw))
        }
    }

    func testEveryTruncationOfAPythonWrittenFileFailsCleanly() throws {
        let full = [UInt8](try Data(contentsOf: FormatsFixtures.url("python_written.safetensors")))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-st-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let url = dir.appendingPathComponent("cut.safetensors")
        for n in 0 ..< full.count {
            try Data(full[0 ..< n]).write(to: url)
            XCTAssertThrowsError(try SafetensorsFile(url: url), "cut at \(n)") { e in
                XCTAssertTrue("\(e)".contains("cut.safetensors"), "\(e)")
            }
        }
    }

    func testBrokenHFFolders() throws {
        let fm = FileManager.default
        let dir = fm.temporaryDirectory.appendingPathComponent("sft-hf-\(UUID().uuidString)")
        try fm.createDirectory(at: dir, withIntermediateDirectories: true)
        assertFormatError(["config.json", "missing"]) { try HFModelFolder(url: dir) }
        try Data("{\"model_type\": \"llama\"}".utf8).write(to: dir.appendingPathComponent("config.json"))
        assertFormatError(["no model.safetensors"]) { try HFModelFolder(url: dir) }
        try Data(#"{"weight_map": {"x": "model-1.safetensors"}}"#.utf8).write(to: dir.appendingPathComponent("model.safetensors.index.json"))
        assertFormatError(["model-1.safetensors", "missing"]) { try HFModelFolder(url: dir) }
        try Safetensors.write([("y", try SafetensorsTensor([Float(1)], shape: [1]))], to: dir.appendingPathComponent("model-1.safetensors"))
        assertFormatError(["'x'", "not found"]) { try HFModelFolder(url: dir) }
        try Data("{not json".utf8).write(to: dir.appendingPathComponent("config.json"))
        assertFormatError(["config.json", "not valid JSON"]) { try HFModelFolder(url: dir) }
    }
}
