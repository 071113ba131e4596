// `sftctl inspect`: what a model file or folder holds (format, architecture, parameters,
// tensor types, config, tokenizer, chat template). The summary comes from SFTCore's
// ModelSummary; this file only parses options and prints.
import Foundation
import SFTCore

let inspectCommand = Command(
    name: "inspect",
    summary: "show what a model file or folder holds",
    help: """
    usage: sftctl inspect --model PATH [--json]

    Shows the format, architecture, parameter count, stored tensor types, config values,
    tokenizer kind, special tokens and whether a chat template is present.

      --model PATH   a .gguf file, a .safetensors file or an HF model folder
      --json         print one JSON object instead of text
    """,
    booleanFlags: [],
    run: { args in
        let path = try args.require("model")
        let json = args.flag("json")
        try args.finish()
        let summary = try ModelSummary(url: URL(fileURLWithPath: path))
        if json {
            var o = summary.jsonObject
            o["path"] = path
            printJSON(o)
        } else {
            print("model:         \(path)")
            for line in summary.lines { print(line) }
        }
    }
)
