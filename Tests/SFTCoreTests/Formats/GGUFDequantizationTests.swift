// Every GGML block type sft decodes matches gguf-py's reference dequantizer on the fixture
// made by tools/make_gguf_fixtures.py (random raw blocks, plus gguf-py-quantized rows).
import XCTest
import SFTCore
import SFTKernels

final class GGUFDequantizationTests: XCTestCase {
    func testEveryBlockTypeMatchesGGUFPyDequantize() throws {
        let g = try GGUFFile(url: FormatsFixtures.url("quants.gguf"))
        let expectedTypes: [String: GGMLType] = [
            "q4_0": .q4_0, "q4_1": .q4_1, "q5_0": .q5_0, "q5_1": .q5_1, "q8_0": .q8_0, "iq4_nl": .iq4_nl,
            "q2_k": .q2_K, "q3_k": .q3_K, "q4_k": .q4_K, "q5_k": .q5_K, "q6_k": .q6_K, "q8_k": .q8_K,
            "f16": .f16, "bf16": .bf16, "f32": .f32,
        ]
        var checked = 0
        for t in g.tensors where !t.name.hasSuffix(".expected") {
            let base = String(t.name.split(separator: ".")[0])
            XCTAssertEqual(t.type, expectedTypes[base], t.name)
            let expected = try XCTUnwrap(g.tensor(named: t.name + ".expected"), t.name)
            XCTAssertEqual(expected.type, .f32)
            XCTAssertEqual(t.shape, [2, 256], t.name)
            let got = try g.dequantize(t)
            let want = try g.dequantize(expected)
            // The reference computes in f32 too, but may group the scale products differently.
            assertClose(got, want, rtol: 2e-6, atol: 1e-9, t.name)
            XCTAssertTrue(want.contains { $0 != 0 }, "\(t.name): fixture should not be all zeros")
            checked += 1
        }
        XCTAssertEqual(checked, expectedTypes.count + 5) // + the five quantized legacy tensors
    }

    func testBlockDecoderAgreesWithFileDequantize() throws {
        let g = try GGUFFile(url: FormatsFixtures.url("quants.gguf"))
        let t = try XCTUnwrap(g.tensor(named: "q6_k"))
        XCTAssertEqual(try dequantizeBlocks(.q6_K, g.rawBytes(of: t), count: t.elementCount), try g.dequantize(t))
    }

    func testUnsupportedTypeErrorNamesTensorAndTypeId() throws {
        // IQ2_XXS (id 16) has a known block size, so the file parses, but sft cannot decode it.
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 0)
        g.tensorInfo("blk.0.attn_q.weight", dims: [256, 1], type: 16, offset: 0)
        g.pad()
        g.b += [UInt8](repeating: 0, count: 66)
        let f = try GGUFFile(url: FormatsFixtures.temp(g.b))
        let info = try XCTUnwrap(f.tensor(named: "blk.0.attn_q.weight"))
        XCTAssertEqual(info.type.name, "IQ2_XXS")
        XCTAssertFalse(info.type.canDequantize)
        assertFormatError(["blk.0.attn_q.weight", "IQ2_XXS", "16"]) { try f.dequantize(info) }
    }
}
