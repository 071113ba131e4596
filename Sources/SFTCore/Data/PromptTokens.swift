// The one prompt path: how rendered text becomes token ids, for training and for generation
// alike, so that a model is trained on exactly the prompt prefix it later sees.
//
// BOS follows the tokenizer: when it adds BOS (`add_bos_token`, Llama-2 style) the text gets
// exactly one — the template's `bos_token` if the text already starts with it (after any
// leading whitespace), else one added in front; when it does not (GPT-2, Qwen, SmolLM2), templates are given `bos_token = ""` and
// nothing is added, so a template that writes `{{ bos_token }}` cannot smuggle one in either.
// EOS is never added here: training appends it where a turn ends (ExampleFormatter), generation
// must not see one.
import Foundation
import SFTKernels

/// The one path from rendered text to token ids, for training and generation alike, so a model
/// trains on exactly the prompt prefix it later sees. When the tokenizer adds BOS the text gets
/// exactly one (the template's own, or one put in front); when it does not, templates get
/// `bos_token = ""`. EOS is never added here.
public struct PromptTokens {
    /// The tokenizer the text is encoded with.
    public let tokenizer: any TextTokenizer

    /// The prompt path for `tokenizer`.
    public init(tokenizer: any TextTokenizer) { self.tokenizer = tokenizer }

    /// The `bos_token` string templates are rendered with: the BOS text when the tokenizer adds
    /// BOS, else "".
    public var templateBOS: String {
        guard tokenizer.addsBOS, tokenizer.bosTokenId != nil, let s = tokenizer.bosTokenText else { return "" }
        return s
    }

    /// Whether `encode(text)` puts a BOS in front of the text's own tokens: when the tokenizer
    /// adds BOS and the text does not already begin with it — leading whitespace aside, since
    /// templates written without whitespace control emit a newline before their `bos_token`
    /// (transformers then tokenizes that text as it is, with that one BOS).
    public func addsBOS(to text: String) -> Bool {
        guard tokenizer.addsBOS, tokenizer.bosTokenId != nil else { return false }
        let bos = templateBOS
        if bos.isEmpty { return true }
        let start = text.utf8.firstIndex { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) } ?? text.utf8.endIndex
        return !text.utf8[start...].starts(with: bos.utf8)
    }

    /// Token ids with their UTF-8 byte ranges in `text`; an added BOS has the empty range 0..<0.
    public func encode(_ text: String) throws -> (ids: [Int32], offsets: [Range<Int>]) {
        var (ids, offsets) = try tokenizer.encodeWithOffsets(text, addSpecialTokens: false)
        if addsBOS(to: text), let bos = tokenizer.bosTokenId {
            ids.insert(bos, at: 0)
            offsets.insert(0..<0, at: 0)
        }
        return (ids, offsets)
    }

    /// Token ids only (generation): the same ids as `encode`, without offsets.
    public static func ids(_ text: String, tokenizer: Tokenizer) -> [Int32] {
        var ids = tokenizer.encode(text, addSpecialTokens: false)
        if PromptTokens(tokenizer: tokenizer).addsBOS(to: text), let bos = tokenizer.bosTokenId { ids.insert(bos, at: 0) }
        return ids
    }
}
