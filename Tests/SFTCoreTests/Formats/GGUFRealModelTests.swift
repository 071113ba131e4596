// The real SmolLM2-135M-Instruct Q4_1 GGUF parses: version, metadata, tensor table, types.
// Skipped (not failed) when the assets have not been fetched.
import XCTest
import SFTCore
import SFTKernels

final class GGUFRealModelTests: XCTestCase {
    func loadSmolLM2() throws -> GGUFFile {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else {
            throw XCTSkip("SmolLM2 GGUF not fetched (run scripts/fetch-assets)")
        }
        return try GGUFFile(url: Assets.smolLM2)
    }

    func testSmolLM2MetadataAndTensorTableParse() throws {
        let g = try loadSmolLM2()
        XCTAssertEqual(g.version, 3)
        XCTAssertEqual(g.metadata["general.architecture"]?.string, "llama")
        XCTAssertEqual(g.metadata["llama.block_count"]?.int, 30)
        XCTAssertEqual(g.metadata["llama.embedding_length"]?.int, 576)
        XCTAssertEqual(g.metadata["llama.attention.head_count"]?.int, 9)
        XCTAssertEqual(g.metadata["llama.attention.head_count_kv"]?.int, 3)
        XCTAssertEqual(g.metadata["llama.rope.freq_base"]?.float, 100000)
        XCTAssertEqual(g.metadata["tokenizer.ggml.model"]?.string, "gpt2")
        XCTAssertEqual(g.metadata["tokenizer.ggml.bos_token_id"]?.int, 1)
        XCTAssertEqual(g.metadata["tokenizer.ggml.add_bos_token"]?.bool, false)
        let tokens = try XCTUnwrap(g.metadata["tokenizer.ggml.tokens"]?.strings)
        XCTAssertEqual(tokens.count, 49152)
        XCTAssertEqual(Array(tokens.prefix(3)), ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        XCTAssertEqual(g.metadata["tokenizer.ggml.token_type"]?.ints?.count, 49152)
        XCTAssertEqual(g.metadata["general.languages"]?.strings, ["en"])
        XCTAssertTrue(g.metadata["tokenizer.chat_template"]?.string?.contains("<|im_start|>") ?? false)
        XCTAssertEqual(g.metadataKeys.count, 33) // the header's kv count, as gguf-py reports it

        XCTAssertEqual(g.tensors.count, 272)
        var counts: [GGMLType: Int] = [:]
        for t in g.tensors { counts[t.type, default: 0] += 1 }
        XCTAssertEqual(counts, [.q4_1: 210, .f32: 61, .q8_0: 1])
        let embed = try XCTUnwrap(g.tensor(named: "token_embd.weight"))
        XCTAssertEqual(embed.dims, [576, 49152])
        XCTAssertEqual(embed.shape, [49152, 576])
        XCTAssertEqual(embed.type, .q8_0)
        XCTAssertEqual(embed.offset, 1785664)       // values from gguf-py's GGUFReader
        XCTAssertEqual(embed.byteCount, 30081024)
        let k = try XCTUnwrap(g.tensor(named: "blk.0.attn_k.weight"))
        XCTAssertEqual(k.shape, [192, 576])
        XCTAssertEqual(k.type, .q4_1)
        XCTAssertEqual(k.offset, 33530176)
    }

    func testSmolLM2TensorsDequantizeToFiniteValues() throws {
        let g = try loadSmolLM2()
        for name in ["blk.0.attn_norm.weight", "blk.0.attn_q.weight", "token_embd.weight"] {
            let t = try XCTUnwrap(g.tensor(named: name))
            let v = try g.dequantize(t)
            XCTAssertEqual(v.count, t.elementCount)
            XCTAssertTrue(v.allSatisfy { $0.isFinite }, name)
            let meanAbs = v.reduce(0) { $0 + abs($1) } / Float(v.count)
            XCTAssertGreaterThan(meanAbs, 1e-3, name)
            XCTAssertLessThan(meanAbs, 10, name)
        }
    }
}
