// Sizes, counts and ids read from files are checked before use (issue #18 item 1): a GGUF head
// count near 2^62, tokenizer ids of Int.max and 2^31, absurd config.json sizes end in errors
// naming the file or key and the value — never a trap or a multi-gigabyte allocation.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class CheckedSizesTests: XCTestCase {
    /// A Llama GGUF with one 4x4 q projection and `llama.attention.head_count` = `heads` (uint64).
    func ggufWithHeadCount(_ heads: UInt64) throws -> URL {
        var g = GGUFBytes()
        g.header(tensors: 1, kvs: 2)
        g.str("general.architecture"); g.u32(8); g.str("llama")
        g.str("llama.attention.head_count"); g.u32(10); g.u64(heads)
        g.tensorInfo("blk.0.attn_q.weight", dims: [4, 4], type: 0, offset: 0)
        g.pad()
        for _ in 0 ..< 16 { g.f32(0) }
        return try FormatsFixtures.temp(g.b, name: "heads.gguf")
    }

    func testGGUFHeadCountNear2To62IsAnErrorNamingTheTensor() throws {
        for heads: UInt64 in [1 << 62, (1 << 62) + 1, UInt64(Int.max), 5] {
            let url = try ggufWithHeadCount(heads)
            assertFormatError(["heads.gguf", "blk.0.attn_q.weight", "\(heads) heads"]) { try GGUFWeights(url: url) }
        }
        // The same file with a sane count loads.
        XCTAssertNoThrow(try GGUFWeights(url: ggufWithHeadCount(2)))
    }

    func testModelConfigSizesAreCappedNamingKeyValueAndFile() {
        let base: [String: Any] = ["model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
                                   "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100]
        XCTAssertNoThrow(try ModelConfigLimits.check(base))
        XCTAssertNoThrow(try LlamaConfig(hf: base))
        let bad: [(String, Any)] = [
            ("num_attention_heads", 1 << 62), ("num_attention_heads", 0), ("num_key_value_heads", -3),
            ("hidden_size", Int.max), ("vocab_size", 1 << 31), ("num_hidden_layers", 1 << 40),
            ("head_dim", 1 << 50), ("intermediate_size", 1e300), ("max_position_embeddings", 1 << 60),
            ("eos_token_id", [2, Int.max]), ("bos_token_id", -1),
        ]
        for (key, value) in bad {
            var c = base; c[key] = value
            assertFormatError(["config '\(key)'", "out of range", "in /models/x/config.json"]) {
                try ModelConfigLimits.check(c, source: "/models/x/config.json")
            }
            // Every family decode runs the same check (no trap, no allocation).
            assertFormatError(["config '\(key)'"]) { try LlamaConfig(hf: c) }
        }
        // Each size within its cap, but together far more parameters than any model has.
        var huge = base
        huge["hidden_size"] = 1 << 17; huge["intermediate_size"] = 1 << 20; huge["num_hidden_layers"] = 1 << 12
        assertFormatError(["parameters", "hidden 131072", "layers 4096"]) { try ModelConfigLimits.check(huge) }
    }

    func testOpeningAModelNamesTheFileOfAnAbsurdConfig() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-cfg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let config = #"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "#
            + #""num_attention_heads": 4611686018427387904, "vocab_size": 100}"#
        try Data(config.utf8).write(to: dir.appendingPathComponent("config.json"))
        try Safetensors.write([("model.norm.weight", try SafetensorsTensor([Float(1)], shape: [1]))],
                              to: dir.appendingPathComponent("model.safetensors"))
        assertFormatError(["num_attention_heads", "4611686018427387904", dir.lastPathComponent]) {
            try ModelLoader.load(at: dir, on: CPUBackend.shared)
        }
    }

    /// tokenizer.json with a two-token BPE vocabulary; `extra` is merged into the top level.
    func tokenizerJSON(vocabId: Any = 1, addedId: Any? = nil) -> [String: Any] {
        var json: [String: Any] = [
            "model": ["type": "BPE", "vocab": ["a": 0, "b": vocabId], "merges": [String]()] as [String: Any],
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false],
        ]
        if let addedId { json["added_tokens"] = [["id": addedId, "content": "<x>", "special": true]] }
        return json
    }

    func testTokenizerIdsOfIntMaxAnd2To31AreErrorsNotAllocations() {
        XCTAssertNoThrow(try TokenizerSpec(tokenizerJSON: tokenizerJSON(), path: "/t/tokenizer.json"))
        for id: Any in [Int.max, 1 << 31, 1 << 22, -1, 1.5, 1e300] {
            assertFormatError(["/t/tokenizer.json", "model.vocab entry 'b'", "\(id)"]) {
                try TokenizerSpec(tokenizerJSON: tokenizerJSON(vocabId: id), path: "/t/tokenizer.json")
            }
            assertFormatError(["/t/tokenizer.json", "added_tokens entry '<x>'", "\(id)"]) {
                try TokenizerSpec(tokenizerJSON: tokenizerJSON(addedId: id), path: "/t/tokenizer.json")
            }
        }
        // generation_config.json's eos ids are checked against the vocabulary, not truncated to 32 bits.
        assertFormatError(["generation_config.json eos_token_id", "4294967297"]) {
            try TokenizerSpec(tokenizerJSON: tokenizerJSON(), generationConfig: ["eos_token_id": [1, 4294967297]],
                              path: "/t/tokenizer.json")
        }
        // Specs built in code are capped too.
        let big = TokenizerSpec(model: .byteLevelBPE, tokens: [String](repeating: "x", count: TokenizerSpec.maxVocabularySize + 1))
        assertFormatError(["tokenizer.tokens", "more than"]) { try Tokenizer(spec: big) }
    }

    func testPEFTAdapterRanksAreCapped() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-peft-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        func write(_ json: String) throws { try Data(json.utf8).write(to: dir.appendingPathComponent("adapter_config.json")) }
        try write(#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "rank_pattern": {"q_proj": 4}}"#)
        XCTAssertEqual(try PEFTAdapter.readConfig(dir).r, 8)
        try write(#"{"peft_type": "LORA", "r": 1099511627776, "lora_alpha": 16}"#)
        assertFormatError(["adapter_config.json", "'r'", "1099511627776"]) { try PEFTAdapter.readConfig(dir) }
        try write(#"{"peft_type": "LORA", "r": 8, "rank_pattern": {"q_proj": 4611686018427387904}}"#)
        assertFormatError(["adapter_config.json", "rank_pattern['q_proj']", "4611686018427387904"]) { try PEFTAdapter.readConfig(dir) }
    }

    func testGGUFTokenTypeOutsideInt32IsNotTruncated() throws {
        var g = GGUFBytes()
        g.header(tensors: 0, kvs: 4)
        g.str("tokenizer.ggml.model"); g.u32(8); g.str("gpt2")
        g.str("tokenizer.ggml.tokens"); g.u32(9); g.u32(8); g.u64(2); g.str("a"); g.str("b")
        g.str("tokenizer.ggml.merges"); g.u32(9); g.u32(8); g.u64(0)
        // 2^32 + 1 would truncate to 1 ("normal").
        g.str("tokenizer.ggml.token_type"); g.u32(9); g.u32(11); g.u64(2); g.u64(1); g.u64((1 << 32) + 1)
        let url = try FormatsFixtures.temp(g.b, name: "types.gguf")
        assertFormatError(["types.gguf", "tokenizer.ggml.token_type", "4294967297"]) { try TokenizerSpec(gguf: GGUFFile(url: url)) }
    }
}
