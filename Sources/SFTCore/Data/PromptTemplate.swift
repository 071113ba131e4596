// A config-given prompt for instruction-style and prompt/completion data: text with `{field}`
// placeholders (Python str.format style: `{{` and `}}` are literal braces), e.g. the reversed
// Dolly prompt of the Llama-2 QLoRA recipe:
//
//   "### Instruction:\nUse the Input below to create an instruction, ...\n\n### Input:\n{response}\n\n### Response:\n{instruction}\n"
//
// Fields: `instruction`, `input` (alias `context`) and `output` (alias `response`) for
// instruction records; `prompt` and `completion` for prompt/completion records. The last
// placeholder is the completion: with the `completion` mask policy the loss covers the text
// from its value to the end (and the EOS); with `all`, every token.
import Foundation
import SFTKernels

/// A config-given prompt (`prompt_template`) for instruction and prompt/completion records: text
/// with `{field}` placeholders in Python str.format style (`{{` and `}}` are literal braces).
/// Fields: `instruction`, `input` (alias `context`) and `output` (alias `response`) for instruction
/// records; `prompt` and `completion` for prompt/completion records. The last placeholder is the
/// completion: the `completion` mask policy trains from its value to the end.
public struct PromptTemplate: Equatable, Sendable {
    enum Piece: Equatable, Sendable { case literal(String), field(String) }
    let pieces: [Piece]
    /// The template text as given.
    public let source: String

    static let known: Set<String> = ["instruction", "input", "context", "output", "response", "prompt", "completion"]

    /// Parses `source`; an unknown or unclosed placeholder is a config error naming it.
    public init(_ source: String) throws {
        self.source = source
        var pieces: [Piece] = []
        var literal = ""
        var chars = Array(source)[...]
        while let c = chars.popFirst() {
            if c == "{" {
                if chars.first == "{" { chars.removeFirst(); literal.append("{"); continue }
                guard let close = chars.firstIndex(of: "}") else {
                    throw SFTError.config(field: "prompt_template", message: "unclosed '{' in \(source.debugDescription)")
                }
                let name = String(chars[chars.startIndex..<close]).trimmingCharacters(in: .whitespaces)
                guard Self.known.contains(name) else {
                    throw SFTError.config(field: "prompt_template", message: "unknown placeholder {\(name)}; one of \(Self.known.sorted().map { "{\($0)}" }.joined(separator: ", "))")
                }
                if !literal.isEmpty { pieces.append(.literal(literal)); literal = "" }
                pieces.append(.field(name))
                chars = chars[(close + 1)...]
            } else if c == "}" {
                guard chars.first == "}" else {
                    throw SFTError.config(field: "prompt_template", message: "single '}' in \(source.debugDescription) (write '}}' for a brace)")
                }
                chars.removeFirst()
                literal.append("}")
            } else {
                literal.append(c)
            }
        }
        if !literal.isEmpty { pieces.append(.literal(literal)) }
        guard pieces.contains(where: { if case .field = $0 { return true }; return false }) else {
            throw SFTError.config(field: "prompt_template", message: "has no {field} placeholder")
        }
        self.pieces = pieces
    }

    /// The rendered text and the UTF-8 offset where the last placeholder's value starts.
    /// Throws (a String reason) when the content has no such field.
    func render(_ content: SFTContent) throws -> (text: String, completionStart: Int) {
        var fields: [String: String] = [:]
        switch content {
        case .instruction(let instruction, let input, let output):
            fields = ["instruction": instruction, "input": input, "context": input, "output": output, "response": output]
        case .completion(let prompt, let completion):
            fields = ["prompt": prompt, "completion": completion]
        default:
            throw SFTError.config(field: "prompt_template", message: "applies to instruction and prompt/completion records only")
        }
        var text = ""
        var start = 0
        for p in pieces {
            switch p {
            case .literal(let s): text += s
            case .field(let name):
                guard let v = fields[name] else {
                    throw SFTError.config(field: "prompt_template", message: "{\(name)} is not a field of this record (has \(fields.keys.sorted().joined(separator: ", ")))")
                }
                start = text.utf8.count
                text += v
            }
        }
        return (text, start)
    }
}
