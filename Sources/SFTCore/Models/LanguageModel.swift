// A model with what it needs to talk: its tokenizer and chat template, loaded from one path
// (a GGUF file or an HF folder), optionally with a PEFT adapter on top. The CLI's generate,
// chat, eval and finetune commands all start here.

import Foundation
import SFTKernels

/// A model with its tokenizer and chat template: what a user holds to evaluate, generate,
/// merge and export. Load one with `load(_:on:adapter:template:packedDecode:quantization:)`.
public final class LanguageModel {
    /// The network, with its weights (and LoRA adapters, when one was attached).
    public let model: CausalLM
    /// The tokenizer read from the same GGUF file or HF folder.
    public let tokenizer: Tokenizer
    /// The chat template in use: the one asked for, else the model's own, else nil.
    public let chatTemplate: ChatTemplate?
    /// The opened GGUF file or HF folder the model was read from.
    public let source: WeightSource
    /// The path the model was loaded from.
    public let url: URL

    /// Puts together a model and what came with it (as `load` does after reading them).
    /// - Parameters:
    ///   - model: The network.
    ///   - tokenizer: Its tokenizer.
    ///   - chatTemplate: The chat template to use; nil when there is none.
    ///   - source: The weights the model was read from.
    ///   - url: Where they were read from.
    public init(model: CausalLM, tokenizer: Tokenizer, chatTemplate: ChatTemplate?, source: WeightSource, url: URL) {
        self.model = model; self.tokenizer = tokenizer; self.chatTemplate = chatTemplate
        self.source = source; self.url = url
    }

    /// Loads the model at `url` (GGUF file or HF folder) on `device` (`.cpu`, `.cuda(0)`, ...).
    ///
    /// ```swift
    /// let lm = try LanguageModel.load(URL(fileURLWithPath: "model.gguf"), adapter: adapterFolder)
    /// ```
    /// - Parameters:
    ///   - url: a GGUF file or a Hugging Face model folder.
    ///   - device: where the weights live and the ops run.
    ///   - adapter: a PEFT adapter folder to attach.
    ///   - template: a built-in template name or a Jinja file, overriding the model's own.
    ///   - quantization: quantize the Linear layers to 4 bits on load (QLoRA base).
    ///   - packedDecode: generate from the GGUF's quantized blocks (fast, like llama.cpp)
    ///     instead of the dequantized f32 weights (exact; what the golden tests compare).
    ///   - bf16Linears: the Linears (by module name) to store bf16 straight from the file —
    ///     those a `precision: bf16` run keeps frozen (`ModelLoader.load(_:on:bf16Linears:)`).
    public static func load(_ url: URL, on device: Device = .cpu, adapter: URL? = nil,
                            template: String? = nil, packedDecode: Bool = false,
                            quantization: QuantizationConfig? = nil, bf16Linears: ((String) -> Bool)? = nil) throws -> LanguageModel {
        try load(url, on: try backend(for: device), adapter: adapter, template: template, packedDecode: packedDecode,
                 quantization: quantization, bf16Linears: bf16Linears)
    }

    /// Loads the model at `url` onto `backend` (see `load(_:on:...)` with a `Device`).
    public static func load(_ url: URL, on backend: Backend, adapter: URL? = nil,
                            template: String? = nil, packedDecode: Bool = false,
                            quantization: QuantizationConfig? = nil, bf16Linears: ((String) -> Bool)? = nil) throws -> LanguageModel {
        let source = try openWeights(at: url)
        let tokenizer = try loadTokenizer(source: source, url: url)
        let model: CausalLM
        if let quantization {
            model = try ModelLoader.load(source, on: backend, quantization: quantization, bf16Linears: bf16Linears ?? { _ in false })
        } else if let bf16Linears {
            model = try ModelLoader.load(source, on: backend, bf16Linears: bf16Linears)
        } else {
            model = try ModelLoader.load(source, on: backend)
        }
        // Packed decode where the backend runs GGUF blocks; elsewhere (CUDA) the model decodes
        // on its exact weights (the documented fallback, see WeightForms.swift).
        if packedDecode, quantization == nil, backend.supports(.ggufBlocks), let g = source as? GGUFWeights {
            try model.attachPackedWeights(from: g)
            if let headName = model.lmHeadName, g.ggufTensor(for: headName) != nil {
                let raw = try g.loadRaw(headName)
                if PackedWeights.supported.contains(raw.type.name) {
                    model.packedLMHead = try PackedMatrix(type: raw.type, rows: raw.shape[0], cols: raw.shape[1], bytes: raw.bytes,
                                                          on: backend)
                }
            }
        }
        if let adapter { try PEFTAdapter.load(adapter, into: model) }
        let chat: ChatTemplate?
        if let template {
            chat = try loadTemplate(template)
        } else if let own = tokenizer.chatTemplate {
            chat = try ChatTemplate(source: own)
        } else {
            chat = nil
        }
        return LanguageModel(model: model, tokenizer: tokenizer, chatTemplate: chat, source: source, url: url)
    }

    /// The tokenizer stored with the weights: GGUF metadata, or tokenizer.json in the folder.
    public static func loadTokenizer(source: WeightSource, url: URL) throws -> Tokenizer {
        if let g = source as? GGUFWeights { return try Tokenizer(spec: TokenizerSpec(gguf: g.file)) }
        if let f = source as? HFModelFolder {
            guard f.tokenizerURL != nil else {
                throw SFTError.io(path: url.appendingPathComponent("tokenizer.json").path, message: "the model folder has no tokenizer.json")
            }
            return try Tokenizer(spec: TokenizerSpec(huggingFace: url))
        }
        throw SFTError.unsupported("\(url.path): no tokenizer can be found next to bare weights; use a GGUF file or an HF folder")
    }

    /// A built-in template by name, or a Jinja file.
    public static func loadTemplate(_ nameOrFile: String) throws -> ChatTemplate {
        if ChatTemplate.builtinNames.contains(nameOrFile) { return try ChatTemplate.named(nameOrFile) }
        guard let data = FileManager.default.contents(atPath: nameOrFile), let text = String(data: data, encoding: .utf8) else {
            throw SFTError.config(field: "template", message: "'\(nameOrFile)' is neither a built-in template (\(ChatTemplate.builtinNames.joined(separator: ", "))) nor a readable file")
        }
        return try ChatTemplate(source: text)
    }

    /// The text of the tokenizer's beginning-of-sequence token ("" when it has none); chat
    /// templates read it as `bos_token`.
    public var bosToken: String { tokenizer.bosTokenId.flatMap { tokenizer.tokenString($0) } ?? "" }
    /// The text of the tokenizer's end-of-sequence token ("" when it has none); chat templates
    /// read it as `eos_token`.
    public var eosToken: String { tokenizer.eosTokenId.flatMap { tokenizer.tokenString($0) } ?? "" }

    /// Renders a conversation with the chat template, ending in the assistant's generation
    /// prompt, and tokenizes it (special tokens in the text are parsed; BOS is added only when
    /// the template does not already write it).
    public func chatPrompt(_ messages: [ChatMessage]) throws -> [Int32] {
        guard let chatTemplate else {
            throw SFTError.config(field: "template", message: "the model has no chat template; pass one (\(ChatTemplate.builtinNames.joined(separator: ", ")))")
        }
        let text = try TemplateRenderer(template: chatTemplate, tokenizer: tokenizer).renderPrompt(messages, tools: nil)
        return encodePrompt(text)
    }

    /// Tokenizes a raw prompt the way training tokenizes its text (PromptTokens): BOS when the
    /// tokenizer adds one and the text does not already start with it; never EOS.
    public func encodePrompt(_ text: String) -> [Int32] {
        PromptTokens.ids(text, tokenizer: tokenizer)
    }

    /// A new generator over this model and tokenizer (greedy or sampled decoding with a KV cache).
    public var generator: Generator { Generator(model: model, tokenizer: tokenizer) }
}
