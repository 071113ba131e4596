// A model's own chat template and the bos / eos token texts its tokenizer declares, read from
// a Hugging Face folder (tokenizer_config.json) or a GGUF file (tokenizer.chat_template, and
// tokenizer.ggml.bos_token_id / eos_token_id looked up in tokenizer.ggml.tokens).
import Foundation
import SFTKernels

/// What rendering with a model's own template needs.
public struct ModelChatTemplate: Sendable {
    /// The model's own template (`chat_template` in tokenizer_config.json or
    /// `tokenizer.chat_template` in the GGUF).
    public var template: ChatTemplate
    /// The text of the tokenizer's BOS token, what templates read as `bos_token` ("" when none).
    public var bosToken: String
    /// The text of the tokenizer's EOS token, what templates read as `eos_token` ("" when none).
    public var eosToken: String

    /// Reads the template of the model at `url`: a folder with tokenizer_config.json, or a
    /// .gguf file. Throws when the model ships no template (use `ChatTemplate.named` then).
    public init(model url: URL) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) else {
            throw SFTError.io(path: url.path, message: "no such file or folder")
        }
        if isDir.boolValue {
            let config = url.appendingPathComponent("tokenizer_config.json")
            template = try ChatTemplate(tokenizerConfig: config)
            let cfg = try JSONValue(parsing: Data(contentsOf: config), path: config.path)
            func token(_ key: String) -> String {
                cfg[key]?.stringValue ?? cfg[key]?["content"]?.stringValue ?? ""  // plain or AddedToken form
            }
            bosToken = token("bos_token")
            eosToken = token("eos_token")
        } else {
            let gguf = try GGUFFile(url: url)
            guard let source = gguf.metadata["tokenizer.chat_template"]?.string else {
                throw SFTError.format(path: url.path, offset: nil,
                                      message: "no tokenizer.chat_template in this GGUF file (pick a built-in template: \(ChatTemplate.builtinNames.joined(separator: ", ")))")
            }
            template = try ChatTemplate(source: source)
            let tokens = gguf.metadata["tokenizer.ggml.tokens"]?.strings ?? []
            func token(_ key: String) -> String {
                guard let id = gguf.metadata[key]?.int, tokens.indices.contains(id) else { return "" }
                return tokens[id]
            }
            bosToken = token("tokenizer.ggml.bos_token_id")
            eosToken = token("tokenizer.ggml.eos_token_id")
        }
    }
}
