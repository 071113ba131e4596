// Every family in the zoo leaves sft the way it came in: its `layout` counts exactly the
// parameters of the loaded model (what the memory estimate rests on); HF folder → sft's GGUF
// export (llama.cpp's architecture, tensor names and metadata) → sft loads the GGUF → the same
// logits; HF folder → HF export → the same logits. tools/check_gguf_families.py reads the GGUF
// files these tests leave under $SFT_EXPORT_DIR with the Python `gguf` package.
import XCTest
@testable import SFTCore
import SFTKernels

final class ZooExportTests: XCTestCase {
    static let families = ZooGoldenTests.families
    let be = CPUBackend.shared

    func load(_ family: String) throws -> LoadedModel {
        try ModelLoader.load(at: Fixtures.url("model/zoo/\(family)"), on: be)
    }

    /// A fixed row of token ids inside the vocabulary, longer than Phi-3's original context
    /// (16) and the sliding windows.
    func ids(vocab V: Int) -> [Int32] { (0..<24).map { Int32(($0 * 7 + 3) % V) } }

    func testEveryFamilysLayoutCountsTheLoadedModelsParameters() throws {
        for family in Self.families {
            let m = try load(family).model
            let layout = m.layout
            XCTAssertEqual(layout.parameterCount, m.parameterCount(), "\(family): all parameters")
            let linears = m.namedModules().filter { $0.0 != "lm_head" }.compactMap { $0.1 as? Linear }
            XCTAssertEqual(layout.linearWeightValues, linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures }, "\(family): Linear weights")
            XCTAssertEqual(Set(layout.linears.map(\.name)),
                           Set(m.namedModules().filter { $0.1 is Linear && $0.0 != "lm_head" }.map { String($0.0.split(separator: ".").last!) }),
                           "\(family): Linear names")
            // LoRA on PEFT's default targets (all Linears where PEFT has none): the estimate's
            // adapters are what applyLoRA adds.
            let lora = LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: m.peftDefaultLoRATargets ?? ["all-linear"])
            let e = MemoryEstimate(model: m, quantization: nil, lora: lora, batch: 2, sequence: 16, checkpointing: false)
            XCTAssertEqual(e.weightsF32, 4 * m.parameterCount(), family)
            try m.applyLoRA(lora, seed: 1)
            XCTAssertEqual(e.adapters, 4 * m.parameterCount(trainableOnly: true), "\(family): adapters")
            XCTAssertEqual(e.optimizer, 2 * e.adapters)
            XCTAssertLessThan(e.activationsCheckpointed, e.activations, family)
            let full = MemoryEstimate(model: m, quantization: nil, lora: nil, batch: 2, sequence: 16, checkpointing: true)
            XCTAssertEqual(full.gradients, 4 * layout.parameterCount, family)
        }
    }

    func testPEFTDefaultTargetsFollowPEFTsMapping() throws {
        // TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING in peft 0.21 (phi3 has no entry).
        let expected: [String: [String]?] = ["llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
                                             "qwen2": ["q_proj", "v_proj"], "qwen3": ["q_proj", "v_proj"],
                                             "gemma2": ["q_proj", "v_proj"], "gemma3_text": ["q_proj", "v_proj"], "mpt": ["Wqkv"],
                                             "phi3": nil]
        for family in Self.families {
            let m = try load(family).model
            XCTAssertEqual(m.peftDefaultLoRATargets, expected[m.modelType]!, family)
        }
    }

    func testEveryFamilyExportsAsGGUFAndReloadsWithTheSameLogits() throws {
        let tokenizer = try Tokenizer(url: Fixtures.url("tokenizers/gpt2"))
        let dir = try Scratch.folder("zoo_gguf")
        defer { Scratch.cleanUp(dir) }
        for family in Self.families {
            let loaded = try load(family)
            let lm = LanguageModel(model: loaded.model, tokenizer: tokenizer, chatTemplate: nil, source: loaded.source, url: loaded.url)
            let url = dir.appendingPathComponent("\(family).gguf")
            try GGUFExport.save(lm, to: url)
            let g = try GGUFWeights(url: url)
            let expectedArch = ["gemma3_text": "gemma3", "mistral": "llama"][loaded.model.modelType] ?? loaded.model.modelType
            XCTAssertEqual(g.file.metadata["general.architecture"]?.string, expectedArch, family)
            let back = try ModelLoader.load(g, on: be)
            XCTAssertEqual(back.modelType, loaded.model.modelType == "mistral" ? "llama" : loaded.model.modelType, family)
            let x = ids(vocab: loaded.model.vocabSize)
            assertClose(try back.logits(x), try loaded.model.logits(x), tolerance: 2e-5, "\(family) GGUF logits")
        }
    }

    func testEveryFamilyDecodesFromPackedGGUFBlocksLikeItsExactWeights() throws {
        // f16 exports (the tiny rows are not whole Q8_0 blocks): every Linear and the LM head
        // (the embedding's blocks where tied) decode from packed blocks, x kept in f32.
        let tokenizer = try Tokenizer(url: Fixtures.url("tokenizers/gpt2"))
        let dir = try Scratch.folder("zoo_gguf_packed")
        defer { Scratch.cleanUp(dir) }
        for family in ["qwen3", "phi3", "gemma2", "gemma3", "mpt"] {
            let loaded = try load(family)
            let lm = LanguageModel(model: loaded.model, tokenizer: tokenizer, chatTemplate: nil, source: loaded.source, url: loaded.url)
            let url = dir.appendingPathComponent("\(family)-f16.gguf")
            try GGUFExport.save(lm, to: url, dtype: .f16)
            let exact = try LanguageModel.load(url, on: be).model
            let packed = try LanguageModel.load(url, on: be, packedDecode: true).model
            packed.setPackedActivations(.f32)
            XCTAssertNotNil(packed.packedLMHead ?? ((packed as Module).namedModules().first { $0.0 == "lm_head" }?.1 as? Linear)?.packed,
                            "\(family): packed LM head")
            XCTAssertGreaterThan(packed.namedModules().filter { ($0.1 as? Linear)?.packed != nil }.count, 0, family)
            let x = ids(vocab: loaded.model.vocabSize)
            let (c1, c2) = (try exact.makeCache(capacity: x.count + 4), try packed.makeCache(capacity: x.count + 4))
            assertClose(try packed.decode(x, cache: c2), try exact.decode(x, cache: c1), tolerance: 1e-3, "\(family) prompt")
            for t: Int32 in [5, 9, 1] {
                assertClose(try packed.decode([t], cache: c2), try exact.decode([t], cache: c1), tolerance: 1e-3, "\(family) step")
            }
        }
    }

    func testGemmaNormsAreStoredAsOnePlusWAndFusedTensorsKeepTheirRows() throws {
        let tokenizer = try Tokenizer(url: Fixtures.url("tokenizers/gpt2"))
        let dir = try Scratch.folder("zoo_gguf_tensors")
        defer { Scratch.cleanUp(dir) }
        for (family, hf, gguf, plusOne) in [("gemma3", "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight", true),
                                            ("gemma3", "model.layers.1.self_attn.q_norm.weight", "blk.1.attn_q_norm.weight", true),
                                            ("gemma2", "model.layers.1.pre_feedforward_layernorm.weight", "blk.1.ffn_norm.weight", true),
                                            ("gemma2", "model.layers.2.post_feedforward_layernorm.weight", "blk.2.post_ffw_norm.weight", true),
                                            ("gemma2", "model.norm.weight", "output_norm.weight", true),
                                            ("phi3", "model.layers.1.self_attn.qkv_proj.weight", "blk.1.attn_qkv.weight", false),
                                            ("phi3", "model.layers.0.mlp.gate_up_proj.weight", "blk.0.ffn_up.weight", false),
                                            ("mpt", "transformer.blocks.1.attn.Wqkv.weight", "blk.1.attn_qkv.weight", false)] {
            let loaded = try load(family)
            let lm = LanguageModel(model: loaded.model, tokenizer: tokenizer, chatTemplate: nil, source: loaded.source, url: loaded.url)
            let url = dir.appendingPathComponent("\(family).gguf")
            try GGUFExport.save(lm, to: url)
            let file = try GGUFFile(url: url)
            let stored = try file.dequantize(XCTUnwrap(file.tensor(named: gguf), gguf))
            let original = try loaded.source.loadF32(hf)
            XCTAssertEqual(stored, original.map { plusOne ? $0 + 1 : $0 }, "\(family) \(gguf)")
        }
    }

    func testGGUFExportRefusesWhatLlamaCppCannotExpress() throws {
        var c = try Gemma3Config(hf: try Fixtures.json("model/zoo/gemma3/config.json"))
        c.queryPreAttnScalar = 16
        XCTAssertThrowsError(try c.ggufExport()) { XCTAssertTrue("\($0)".contains("query_pre_attn_scalar"), "\($0)") }
        c = try Gemma3Config(hf: try Fixtures.json("model/zoo/gemma3/config.json"))
        c.layerTypes = ["full_attention", "sliding_attention", "sliding_attention"]
        XCTAssertThrowsError(try c.ggufExport()) { XCTAssertTrue("\($0)".contains("layer_types"), "\($0)") }
        c = try Gemma3Config(hf: try Fixtures.json("model/zoo/gemma3/config.json"))
        c.finalLogitSoftcapping = 30
        XCTAssertThrowsError(try c.ggufExport()) { XCTAssertTrue("\($0)".contains("softcapping"), "\($0)") }
        func gemma2() throws -> Gemma2Config { try Gemma2Config(hf: try Fixtures.json("model/zoo/gemma2/config.json")) }
        let refused: [((inout Gemma2Config) -> Void, String)] = [
            ({ $0.queryPreAttnScalar = 16 }, "query_pre_attn_scalar"),
            ({ $0.layerTypes = ["full_attention", "sliding_attention", "full_attention"] }, "layer_types"),
            ({ $0.attnLogitSoftcapping = nil }, "softcapping"),
            ({ $0.tieWordEmbeddings = false }, "tie_word_embeddings")]
        for (change, word) in refused {
            var g = try gemma2()
            change(&g)
            XCTAssertThrowsError(try g.ggufExport()) { XCTAssertTrue("\($0)".contains(word), "\($0)") }
        }
        // llama.cpp scales the 27B's queries (46 gemma2 / 62 gemma3 layers) by (hidden / heads)^-½.
        var g27 = try gemma2()
        g27.numLayers = 46
        g27.layerTypes = (0..<46).map { $0 % 2 == 0 ? "sliding_attention" : "full_attention" }
        XCTAssertThrowsError(try g27.ggufExport()) { XCTAssertTrue("\($0)".contains("query_pre_attn_scalar"), "\($0)") }
        g27.queryPreAttnScalar = Double(g27.hiddenSize / g27.numHeads)
        XCTAssertNoThrow(try g27.ggufExport())
        var c27 = try Gemma3Config(hf: try Fixtures.json("model/zoo/gemma3/config.json"))
        c27.numLayers = 62
        c27.layerTypes = (0..<62).map { ($0 + 1) % 6 == 0 ? "full_attention" : "sliding_attention" }
        XCTAssertThrowsError(try c27.ggufExport()) { XCTAssertTrue("\($0)".contains("query_pre_attn_scalar"), "\($0)") }
        c27.queryPreAttnScalar = Double(c27.hiddenSize / c27.numHeads)
        XCTAssertNoThrow(try c27.ggufExport())
        var p = try Phi3Config(hf: try Fixtures.json("model/zoo/phi3/config.json"))
        p.rope.scaling = RopeScaling(ropeType: "yarn", factor: 2)
        XCTAssertThrowsError(try p.ggufExport()) { XCTAssertTrue("\($0)".contains("yarn"), "\($0)") }
    }

    func testEveryFamilyExportsAsAnHFFolderAndReloadsWithTheSameLogits() throws {
        let tokenizer = try Tokenizer(url: Fixtures.url("tokenizers/gpt2"))
        for family in Self.families {
            let loaded = try load(family)
            let lm = LanguageModel(model: loaded.model, tokenizer: tokenizer, chatTemplate: nil, source: loaded.source, url: loaded.url)
            let dir = try Scratch.folder("zoo_hf_\(family)")
            defer { Scratch.cleanUp(dir) }
            try HFExport.saveModel(lm, to: dir)
            let back = try ModelLoader.load(at: dir, on: be).model
            let x = ids(vocab: loaded.model.vocabSize)
            assertClose(try back.logits(x), try loaded.model.logits(x), tolerance: 0, "\(family) HF logits")
        }
    }
}
