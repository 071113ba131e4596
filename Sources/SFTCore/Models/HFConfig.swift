// Decoding an HF config.json into a family's typed config, strictly: every key is either read
// by the family's `Decodable` config, or listed here as not changing what the model computes.
// Anything else is an error naming the key, because a setting that changes the math and is
// silently ignored gives wrong results without a word (transformers 5 moved `rope_theta` into
// `rope_parameters`, and a permissive reader fell back to θ = 10000).

import Foundation
import SFTKernels

/// Strict decoding of HF config.json objects into the family configs: every key must be read by
/// the family or be listed in `harmless`, otherwise decoding throws naming the key.
public enum HFConfig {
    /// Keys that never change the forward or backward pass of a decoder-only model: metadata,
    /// token ids, generation and framework switches. (Dropout rates are not here: the family
    /// configs read them and refuse non-zero ones.)
    public static let harmless: Set<String> = [
        "architectures", "model_type", "torch_dtype", "dtype", "transformers_version", "_name_or_path",
        "use_cache", "initializer_range", "pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id",
        "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class", "id2label", "label2id",
        "problem_type", "task_specific_params", "finetuning_task", "prefix", "chunk_size_feed_forward",
        "is_decoder", "is_encoder_decoder", "add_cross_attention", "tie_encoder_decoder", "auto_map",
        "max_position_embeddings", "transformers.js_config", "is_llama_config", "_attn_implementation",
        "attn_implementation", "use_return_dict", "torchscript", "pruned_heads", "bad_words_ids",
        // transformers itself ignores these (tensor-parallel split of a pretraining detail;
        // SmolLM's marker that its RoPE is *not* interleaved)
        "pretraining_tp", "rope_interleaved",
        // generation defaults some checkpoints keep in config.json
        "max_length", "min_length", "do_sample", "early_stopping", "num_beams", "temperature", "top_k",
        "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
        "num_return_sequences", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "decoder_start_token_id", "suppress_tokens", "begin_suppress_tokens",
    ]

    /// A Foundation config as JSON values, re-read without loss.
    static func values(_ config: [String: Any]) throws -> [String: JSONValue] {
        let data = try JSONSerialization.data(withJSONObject: config)
        guard case .object(let pairs) = try JSONValue(parsing: data, path: "config.json") else {
            throw SFTError.config(field: "config.json", message: "not a JSON object")
        }
        return Dictionary(pairs, uniquingKeysWith: { _, b in b })
    }

    /// Decodes `config` as `T`, after checking that each key is one `T` reads (`understood`)
    /// or a harmless one. Decoding errors name the key.
    public static func decode<T: Decodable>(_ type: T.Type, from config: [String: JSONValue], family: String,
                                            understood: [String]) throws -> T {
        try ModelConfigLimits.check(config)
        let known = harmless.union(understood)
        for key in config.keys.sorted() where !known.contains(key) {
            throw SFTError.config(field: key, message: "not implemented for \(family) (a setting sft does not know may change the math; if it does not, add it to HFConfig.harmless)")
        }
        do {
            let object = JSONValue.object(config.keys.sorted().map { ($0, config[$0]!) })
            return try JSONDecoder().decode(T.self, from: Data(object.serialized().utf8))
        } catch let e as DecodingError {
            switch e {
            case .keyNotFound(let key, let ctx):
                throw SFTError.config(field: (ctx.codingPath + [key]).map(\.stringValue).joined(separator: "."), message: "missing from the \(family) config")
            case .typeMismatch(_, let ctx), .valueNotFound(_, let ctx), .dataCorrupted(let ctx):
                throw SFTError.config(field: ctx.codingPath.map(\.stringValue).joined(separator: "."), message: ctx.debugDescription)
            @unknown default:
                throw SFTError.config(field: "config.json", message: "\(e)")
            }
        }
    }

    /// Throws unless a dropout-like rate is 0 (sft does not implement it).
    public static func requireZero(_ value: Double?, _ key: String) throws {
        if let value, value != 0 {
            throw SFTError.config(field: key, message: "\(value): this dropout is not implemented (only 0)")
        }
    }

    /// Throws unless the activation is one of `allowed`.
    public static func requireActivation(_ value: String?, _ key: String, _ allowed: [String]) throws {
        if let value, !allowed.contains(value) {
            throw SFTError.config(field: key, message: "'\(value)' is not implemented here (\(allowed.joined(separator: ", ")))")
        }
    }
}
