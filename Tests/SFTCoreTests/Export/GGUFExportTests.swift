// GGUF files written by sft read back exactly: every metadata value type and tensor encoding
// through sft's GGUF reader; Q8_0 blocks against a naive quantizer written here; models
// exported with llama.cpp's names and q/k row order reload with identical logits (f32), or the
// logits of the same weights rounded as stored (f16, bf16, q8_0); tokenizer.ggml.* keys give the
// same ids. tools/check_gguf_export.py reads the SmolLM2 export with the Python `gguf` package
// and transformers (recorded result checked in testPythonCheckRecordedAPass).
import XCTest
import SFTCore
import SFTKernels

/// ggml's reference Q8_0 round trip, written out plainly: per block of 32, d = max|x| / 127
/// stored as f16, q = round(x / d); the reader computes f16(d) · q.
func naiveQ8_0RoundTrip(_ x: [Float]) -> [Float] {
    var out: [Float] = []
    for b in stride(from: 0, to: x.count, by: 32) {
        let block = x[b ..< b + 32]
        let d = block.map { abs($0) }.max()! / 127
        let dStored = Float(Float16(d))
        for v in block {
            let q = d == 0 ? 0 : (v * (1 / d)).rounded(.toNearestOrAwayFromZero)
            out.append(dStored * q)
        }
    }
    return out
}

final class GGUFExportTests: XCTestCase {
    func testWriterRoundTripsEveryValueTypeAndTensorEncoding() throws {
        var w = try GGUFWriter()
        let values: [(String, GGUFValue)] = [
            ("a.u8", .uint8(200)), ("a.i8", .int8(-100)), ("a.u16", .uint16(60000)), ("a.i16", .int16(-30000)),
            ("a.u32", .uint32(4_000_000_000)), ("a.i32", .int32(-2_000_000_000)), ("a.f32", .float32(1e-5)),
            ("a.bool", .bool(true)), ("a.str", .string("héllo\n<|im_end|>")), ("a.u64", .uint64(UInt64.max)),
            ("a.i64", .int64(Int64.min)), ("a.f64", .float64(3.141592653589793)),
            ("a.arr", .array(elementType: 8, [.string("x"), .string(""), .string("日本")])),
            ("a.nested", .array(elementType: 9, [.array(elementType: 5, [.int32(1), .int32(-2)]), .array(elementType: 5, [])])),
            ("a.empty", .array(elementType: 6, [])),
        ]
        for (k, v) in values { try w.set(k, v) }
        try w.set("a.u8", .uint8(201))  // replaces in place
        var rng = SeededRandom(seed: 1)
        let x = (0 ..< 64 * 3).map { _ in Float(rng.nextNormal()) }
        for (name, type) in [("t.f32", GGMLType.f32), ("t.f16", .f16), ("t.bf16", .bf16), ("t.q8", .q8_0)] {
            try w.addTensor(name: name, shape: [3, 64], type: type) { x }
        }
        try w.addTensor(name: "t.vec", shape: [5], type: .f32) { [1, 2, 3, 4, 5] }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sft-writer-\(ProcessInfo.processInfo.processIdentifier).gguf")
        defer { try? FileManager.default.removeItem(at: url) }
        try w.write(to: url)

        let g = try GGUFFile(url: url)
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.metadataKeys, values.map(\.0))
        for (k, v) in values where k != "a.u8" { XCTAssertEqual(g.metadata[k], v, k) }
        XCTAssertEqual(g.metadata["a.u8"], .uint8(201))
        XCTAssertEqual(g.tensors.map(\.name), ["t.f32", "t.f16", "t.bf16", "t.q8", "t.vec"])
        XCTAssertTrue(g.tensors.allSatisfy { ($0.offset - g.dataOffset) % 32 == 0 })
        let t = { (n: String) in try g.dequantize(XCTUnwrap(g.tensor(named: n))) }
        XCTAssertEqual(g.tensor(named: "t.q8")?.dims, [64, 3])
        XCTAssertEqual(try t("t.f32"), x)
        XCTAssertEqual(try t("t.f16"), x.map { Float(Float16($0)) })
        XCTAssertEqual(try t("t.bf16"), x.map(roundedToBF16))
        XCTAssertEqual(try t("t.q8"), naiveQ8_0RoundTrip(x))
        XCTAssertEqual(try t("t.vec"), [1, 2, 3, 4, 5])
    }

    func testWriterRejectsWhatGGUFCannotHold() throws {
        var w = try GGUFWriter()
        XCTAssertThrowsError(try w.set("k", .array(elementType: 4, [.string("not a u32")])))
        XCTAssertThrowsError(try w.addTensor(name: "q", shape: [2, 48], type: .q8_0) { [] })  // rows not whole blocks
        try w.addTensor(name: "x", shape: [2], type: .f32) { [1, 2] }
        XCTAssertThrowsError(try w.addTensor(name: "x", shape: [2], type: .f32) { [1, 2] })  // duplicate
        XCTAssertThrowsError(try w.addTensor(name: "y", shape: [2], type: .q4_1) { [1, 2] })
        XCTAssertThrowsError(try GGUFWriter(alignment: 24))
        // A producer that returns the wrong count fails the write, naming the tensor; no file is left.
        try w.addTensor(name: "short", shape: [4], type: .f32) { [1] }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sft-bad-\(ProcessInfo.processInfo.processIdentifier).gguf")
        XCTAssertThrowsError(try w.write(to: url)) { XCTAssertTrue("\($0)".contains("short"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    func testQKRowsAreStoredInLlamaCppOrder() {
        // One head of D = 4 rows: HF (rotate-half) rows 0 1 | 2 3 pair up as (0,2), (1,3);
        // ggml's interleaved RoPE wants the pairs adjacent: 0 2 1 3.
        let rows: [Float] = [0, 0, 1, 1, 2, 2, 3, 3]  // 4 rows of 2
        XCTAssertEqual(GGUFExport.permuteRows(rows, rows: 4, heads: 1), [0, 0, 2, 2, 1, 1, 3, 3])
        XCTAssertEqual(GGUFExport.permuteRows([0, 1, 2, 3, 4, 5, 6, 7], rows: 8, heads: 2), [0, 2, 1, 3, 4, 6, 5, 7])
        XCTAssertEqual(GGUFExport.ggufName(forHF: "model.layers.12.self_attn.q_proj.weight"), "blk.12.attn_q.weight")
        XCTAssertEqual(GGUFExport.ggufName(forHF: "model.layers.0.post_attention_layernorm.weight"), "blk.0.ffn_norm.weight")
        XCTAssertEqual(GGUFExport.ggufName(forHF: "model.layers.3.self_attn.k_proj.bias"), "blk.3.attn_k.bias")
        XCTAssertEqual(GGUFExport.ggufName(forHF: "lm_head.weight"), "output.weight")
        XCTAssertNil(GGUFExport.ggufName(forHF: "model.layers.0.self_attn.rotary.weight"))
    }

    func testTinyModelExportReloadsWithIdenticalLogitsAndTokenizer() throws {
        for tied in [false, true] {
            let lm = try ExportFixtures.tinyLanguageModel(tied: tied)
            let dir = try Scratch.folder("gguf_tiny_\(tied)")
            defer { Scratch.cleanUp(dir) }
            let url = dir.appendingPathComponent("tiny.gguf")
            try GGUFExport.save(lm, to: url)
            let back = try LanguageModel.load(url)
            let ids = lm.encodePrompt(ExportFixtures.sampleText)
            XCTAssertEqual(try back.model.logits(ids), try lm.model.logits(ids), "tied \(tied)")
            var expected = (lm.model as! LlamaModel).config
            expected.bosTokenId = lm.tokenizer.bosTokenId.map(Int.init)
            expected.eosTokenId = lm.tokenizer.eosTokenId.map(Int.init)
            XCTAssertEqual((back.model as! LlamaModel).config, expected)
            let g = try GGUFFile(url: url)
            XCTAssertEqual(g.tensor(named: "output.weight") == nil, tied)
            XCTAssertEqual(g.tensor(named: "blk.1.attn_q.weight")?.dims, [32, 32])
            for c in try loadGolden("gpt2").filter({ !$0.text.contains("<mask>") && !$0.text.contains("<sep>") }) {
                XCTAssertEqual(back.tokenizer.encode(c.text), c.ids, c.text.debugDescription)
            }
        }
    }

    /// f16 / bf16 / q8_0 files hold the weights rounded as stored; 1-D tensors stay f32, and
    /// q8_0 falls back to f16 for rows that are not whole blocks (down_proj: 48 columns).
    func testReducedPrecisionExportsHoldTheRoundedWeights() throws {
        let lm = try ExportFixtures.tinyLanguageModel()
        let ids = lm.encodePrompt(ExportFixtures.sampleText)
        let cases: [(GGUFExport.DType, GGMLType, ([Float], [Int]) -> [Float])] = [
            (.f16, .f16, { v, _ in v.map { Float(Float16($0)) } }),
            (.bf16, .bf16, { v, _ in v.map(roundedToBF16) }),
            (.q8_0, .q8_0, { v, s in s.last! % 32 == 0 ? naiveQ8_0RoundTrip(v) : v.map { Float(Float16($0)) } }),
        ]
        for (dtype, matrixType, round) in cases {
            let dir = try Scratch.folder("gguf_tiny_\(dtype.rawValue)")
            defer { Scratch.cleanUp(dir) }
            let url = dir.appendingPathComponent("tiny.gguf")
            try GGUFExport.save(lm, to: url, dtype: dtype)
            let g = try GGUFFile(url: url)
            XCTAssertEqual(g.tensor(named: "blk.0.attn_norm.weight")?.type, .f32)
            XCTAssertEqual(g.tensor(named: "blk.0.attn_q.weight")?.type, matrixType)
            XCTAssertEqual(g.tensor(named: "blk.0.ffn_down.weight")?.type, dtype == .q8_0 ? .f16 : matrixType)
            let reference = try ExportFixtures.tinyLanguageModel()
            for (_, p) in reference.model.namedParameters() where p.value.shape.count == 2 {
                try p.value.assign(round(try p.value.floats(), p.value.shape))
            }
            let back = try LanguageModel.load(url)
            XCTAssertEqual(try back.model.logits(ids), try reference.model.logits(ids), dtype.rawValue)
        }
    }

    /// Unmerged adapters are refused, and so is a RoPE kind llama.cpp has no key for (dynamic
    /// NTK); llama3 scaling is written as llama.cpp's rope_freqs tensor (ZooFinetuneTests).
    func testExportRefusesUnmergedAdaptersAndRopeScalingLlamaCppCannotStore() throws {
        let lm = try ExportFixtures.tinyLanguageModel()
        try lm.model.applyLoRA(LoRAConfig(r: 2), seed: 1)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("sft-refused.gguf")
        try? FileManager.default.removeItem(at: url)
        XCTAssertThrowsError(try GGUFExport.save(lm, to: url)) { XCTAssertTrue("\($0)".contains("merge"), "\($0)") }
        var c = LlamaConfig(hiddenSize: 32, intermediateSize: 48, numLayers: 1, numHeads: 4, numKVHeads: 2, vocabSize: lm.tokenizer.vocabSize)
        c.ropeScaling = RopeScaling(ropeType: "dynamic", factor: 2)
        let scaled = LanguageModel(model: try LlamaModel(config: c, on: CPUBackend.shared), tokenizer: lm.tokenizer,
                                   chatTemplate: nil, source: InMemoryWeights(), url: url)
        XCTAssertThrowsError(try GGUFExport.save(scaled, to: url)) { XCTAssertTrue("\($0)".contains("rope"), "\($0)") }
        XCTAssertFalse(FileManager.default.fileExists(atPath: url.path))
    }

    /// tokenizer.ggml.* written from each fixture tokenizer reads back with the same ids.
    func testTokenizerMetadataRoundTripsThroughGGUF() throws {
        // gpt2's <mask>/<sep> carry lstrip/rstrip, which GGUF cannot say: texts with them are left out.
        let sources: [(String, URL)] = [("sp_gguf", try fixtureURL("sp_gguf/tokenizer.gguf")), ("llama3", try fixtureURL("llama3")),
                                         ("sp_legacy", try fixtureURL("sp_legacy")), ("gpt2", try fixtureURL("gpt2"))]
        for (name, source) in sources {
            let original = try Tokenizer(url: source)
            var w = try GGUFWriter()
            for (k, v) in try original.spec.ggufMetadata() { try w.set(k, v) }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tok-\(name)-\(ProcessInfo.processInfo.processIdentifier).gguf")
            defer { try? FileManager.default.removeItem(at: url) }
            try w.write(to: url)
            let back = try Tokenizer(spec: TokenizerSpec(gguf: GGUFFile(url: url)))
            XCTAssertEqual(back.spec.tokens, original.spec.tokens, name)
            XCTAssertEqual(back.bosTokenId, original.bosTokenId, name)
            XCTAssertEqual(back.addBosToken, original.addBosToken, name)
            XCTAssertEqual(back.chatTemplate, original.chatTemplate, name)
            var mismatches = 0
            for c in try loadGolden(name) where !c.text.contains("<mask>") && !c.text.contains("<sep>") {
                if back.encode(c.text) != c.ids || back.encode(c.text, addSpecialTokens: false) != c.idsNoSpecial {
                    mismatches += 1
                    if mismatches < 3 { XCTFail("\(name): ids differ for \(c.text.debugDescription)") }
                }
            }
            XCTAssertEqual(mismatches, 0, name)
        }
    }

    /// The real model: GGUF (Q4_1/Q8_0) → sft → GGUF f32 → sft gives identical logits, and the
    /// tokenizer and hyper-parameter keys equal the original file's.
    func testSmolLM2ExportedAsGGUFReloadsWithIdenticalLogitsAndKeys() throws {
        let source = try Assets.require(Assets.smolLM2)
        let lm = try LanguageModel.load(source)
        let dir = try Scratch.folder("gguf_smollm2")
        defer { Scratch.cleanUp(dir) }
        let url = dir.appendingPathComponent("smollm2-f32.gguf")
        try GGUFExport.save(lm, to: url)
        let text = "<|im_start|>user\nWrite 3 words about 2024.<|im_end|>\n<|im_start|>assistant\n"
        let ids = lm.encodePrompt(text)
        let logits = try lm.model.logits(ids)
        do {
            let back = try LanguageModel.load(url)
            XCTAssertEqual(back.encodePrompt(text), ids)
            XCTAssertEqual(try back.model.logits(ids), logits)
        }
        let original = try GGUFFile(url: source), written = try GGUFFile(url: url)
        for key in original.metadataKeys where key.hasPrefix("tokenizer.") || key.hasPrefix("llama.") {
            XCTAssertEqual(written.metadata[key], original.metadata[key], key)
        }
        XCTAssertEqual(Set(written.tensors.map(\.name)), Set(original.tensors.map(\.name)))
        for t in original.tensors { XCTAssertEqual(written.tensor(named: t.name)?.dims, t.dims, t.name) }
        if Scratch.keeping {
            try dumpLogits(ids, logits, vocab: lm.model.vocabSize, text: text, to: dir.appendingPathComponent("sft_logits.safetensors"))
            try GGUFExport.save(lm, to: dir.appendingPathComponent("smollm2-q8_0.gguf"), dtype: .q8_0)
        }
    }

    /// tools/check_gguf_export.py's recorded run: the Python gguf reader reads the export, its
    /// keys and shapes equal the original's, transformers' logits on it agree with sft's, and
    /// gguf's own Q8_0 quantizer gives the same bytes.
    func testPythonCheckRecordedAPass() throws {
        let r = try Fixtures.json("export/results/gguf_export.json")
        XCTAssertEqual(r["pass"] as? Bool, true)
        let t = try XCTUnwrap(r["transformers_vs_sft"] as? [String: Any])
        XCTAssertLessThanOrEqual(try XCTUnwrap(t["max_abs_diff"] as? Double), 1e-4)
    }
}
