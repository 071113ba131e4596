// GGUF -> HF names and the undoing of llama.cpp's q/k row permutation, checked two ways:
// against the original HF tensors the fixture script permuted, and by an independent RoPE
// computation (interleaved RoPE on the stored rows == rotate-half RoPE on the loaded rows).
import XCTest
import SFTCore
import SFTKernels

final class GGUFNameMappingTests: XCTestCase {
    func testNamesMapToHFCheckpointNames() {
        XCTAssertEqual(GGUFWeights.hfName("token_embd.weight"), "model.embed_tokens.weight")
        XCTAssertEqual(GGUFWeights.hfName("output_norm.weight"), "model.norm.weight")
        XCTAssertEqual(GGUFWeights.hfName("output.weight"), "lm_head.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.12.attn_q.weight"), "model.layers.12.self_attn.q_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.0.attn_k.bias"), "model.layers.0.self_attn.k_proj.bias")
        XCTAssertEqual(GGUFWeights.hfName("blk.0.attn_v.weight"), "model.layers.0.self_attn.v_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.0.attn_output.weight"), "model.layers.0.self_attn.o_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.1.attn_norm.weight"), "model.layers.1.input_layernorm.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.1.ffn_norm.weight"), "model.layers.1.post_attention_layernorm.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.2.ffn_gate.weight"), "model.layers.2.mlp.gate_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.2.ffn_up.weight"), "model.layers.2.mlp.up_proj.weight")
        XCTAssertEqual(GGUFWeights.hfName("blk.2.ffn_down.weight"), "model.layers.2.mlp.down_proj.weight")
        XCTAssertNil(GGUFWeights.hfName("rope_freqs.weight"))
        XCTAssertEqual(GGUFWeights.hfName("blk.0.something_new.weight"), "blk.0.something_new.weight")
    }

    func testLoadedWeightsEqualTheOriginalHFTensors() throws {
        let w = try GGUFWeights(url: FormatsFixtures.url("permute.gguf"))
        let hf = try SafetensorsFile(url: FormatsFixtures.url("permute_hf.safetensors"))
        XCTAssertEqual(Set(w.names), Set(hf.names))
        for name in hf.names {
            XCTAssertEqual(w.shape(of: name), hf.tensor(named: name)?.shape, name)
            XCTAssertEqual(try w.loadF32(name), try hf.loadF32(name), name)
        }
        // the stored q rows really are permuted (otherwise the test above proves nothing)
        let stored = try w.file.dequantize(w.file.tensor(named: "blk.0.attn_q.weight")!)
        XCTAssertNotEqual(stored, try hf.loadF32("model.layers.0.self_attn.q_proj.weight"))
        // raw bytes (rows moved, not decoded) agree with the f32 path
        let raw = try w.loadRaw("model.layers.0.self_attn.k_proj.weight")
        XCTAssertEqual(raw.type, .f32)
        XCTAssertEqual(raw.bytes.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) },
                       try hf.loadF32("model.layers.0.self_attn.k_proj.weight"))
        let c = w.config
        XCTAssertEqual(c["model_type"]?.stringValue, "llama")
        XCTAssertEqual(c["num_attention_heads"]?.intValue, 4)
        XCTAssertEqual(c["num_key_value_heads"]?.intValue, 2)
        XCTAssertEqual(c["hidden_size"]?.intValue, 16)
        XCTAssertEqual(c["tie_word_embeddings"]?.boolValue, false)
    }

    /// HF rotate-half RoPE rotates pairs (i, i + D/2); ggml's rotates pairs (2i, 2i + 1).
    /// Projecting x with the stored rows and rotating interleaved must give the same numbers
    /// as projecting with the loaded rows and rotating halves, in the order of the mapping.
    func testInterleavedRoPEOnStoredRowsEqualsRotateHalfOnLoadedRows() throws {
        let w = try GGUFWeights(url: FormatsFixtures.url("permute.gguf"))
        for (name, gguf, heads) in [("model.layers.0.self_attn.q_proj.weight", "blk.0.attn_q.weight", 4),
                                    ("model.layers.0.self_attn.k_proj.weight", "blk.0.attn_k.weight", 2)] {
            let loaded = try w.loadF32(name)
            let stored = try w.file.dequantize(w.file.tensor(named: gguf)!)
            let shape = w.shape(of: name)!
            let (rows, C) = (shape[0], shape[1]), D = rows / heads
            let x = (0 ..< C).map { Double(sin(Double($0) * 1.7 + 0.3)) }
            func project(_ m: [Float]) -> [Double] {
                (0 ..< rows).map { r in (0 ..< C).reduce(0.0) { $0 + Double(m[r * C + $1]) * x[$1] } }
            }
            let pos = 5.0
            let theta = (0 ..< D / 2).map { pos * pow(10000.0, -2.0 * Double($0) / Double(D)) }
            var half = project(loaded), inter = project(stored)
            for h in 0 ..< heads {
                for i in 0 ..< D / 2 {
                    let (c, s) = (cos(theta[i]), sin(theta[i]))
                    let (a, b) = (half[h * D + i], half[h * D + i + D / 2])
                    half[h * D + i] = a * c - b * s; half[h * D + i + D / 2] = b * c + a * s
                    let (p, q) = (inter[h * D + 2 * i], inter[h * D + 2 * i + 1])
                    inter[h * D + 2 * i] = p * c - q * s; inter[h * D + 2 * i + 1] = q * c + p * s
                }
            }
            for h in 0 ..< heads {
                for i in 0 ..< D / 2 {
                    XCTAssertEqual(half[h * D + i], inter[h * D + 2 * i], accuracy: 1e-9, name)
                    XCTAssertEqual(half[h * D + i + D / 2], inter[h * D + 2 * i + 1], accuracy: 1e-9, name)
                }
            }
        }
    }

    func testSmolLM2MapsToHFNamesWithTiedEmbeddings() throws {
        guard FileManager.default.fileExists(atPath: Assets.smolLM2.path) else { throw XCTSkip("SmolLM2 GGUF not fetched") }
        let w = try GGUFWeights(url: Assets.smolLM2)
        XCTAssertEqual(w.names.count, 272)
        XCTAssertEqual(w.shape(of: "model.embed_tokens.weight"), [49152, 576])
        XCTAssertEqual(w.shape(of: "model.layers.29.mlp.down_proj.weight"), [576, 1536])
        XCTAssertEqual(w.shape(of: "model.layers.0.self_attn.k_proj.weight"), [192, 576])
        XCTAssertNil(w.shape(of: "lm_head.weight"))
        XCTAssertFalse(w.names.contains { $0.hasPrefix("blk.") })
        let c = w.config
        XCTAssertEqual(c["tie_word_embeddings"]?.boolValue, true)
        XCTAssertEqual(c["num_hidden_layers"]?.intValue, 30)
        XCTAssertEqual(c["intermediate_size"]?.intValue, 1536)
        XCTAssertEqual(c["vocab_size"]?.intValue, 49152)
        XCTAssertEqual(c["rope_theta"]?.doubleValue, 100000)
        XCTAssertEqual(w.parameterCount, 134_515_008)
        // k rows: loaded row h*64 + 32 + i is stored row h*64 + 2i + 1
        let k = try w.loadF32("model.layers.0.self_attn.k_proj.weight")
        let stored = try w.file.dequantize(w.file.tensor(named: "blk.0.attn_k.weight")!)
        for (h, i) in [(0, 0), (1, 5), (2, 31)] {
            XCTAssertEqual(Array(k[(h * 64 + 32 + i) * 576 ..< (h * 64 + 33 + i) * 576]),
                           Array(stored[(h * 64 + 2 * i + 1) * 576 ..< (h * 64 + 2 * i + 2) * 576]))
        }
    }
}
