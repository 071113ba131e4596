// Writing tokenizer.json + tokenizer_config.json from a TokenizerSpec, so models loaded from
// GGUF can be exported as HF folders.
import Foundation

extension TokenizerSpec {
    /// Writes `tokenizer.json` and `tokenizer_config.json` into `dir`.
    public func writeHuggingFace(to dir: URL, chatTemplate: String?) throws {
        throw SFTError.unsupported("writing tokenizer.json from a GGUF tokenizer is not implemented yet")
    }
}
