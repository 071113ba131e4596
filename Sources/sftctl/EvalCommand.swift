// `sftctl eval`: mean next-token loss and perplexity of a model on text or chat data.
import Foundation
import SFTCore
import SFTKernels

let evalCommand = Command(
    name: "eval",
    summary: "mean loss and perplexity on a text file or a dataset",
    help: """
    usage: sftctl eval --model PATH (--text-file F | --data F.jsonl) [--adapter DIR] [--json]

      --text-file F     plain text: loss over all its tokens (in windows of --max-seq-length)
      --data F          a dataset (any supported format): loss over all tokens and over the
                        trained (assistant) tokens of the chat-formatted examples
      --max-seq-length N   window / truncation length (default 2048)
      --limit N         only the first N records of --data
      --quantize nf4|fp4 [--double-quant]   evaluate the 4-bit-quantized model
      --precision f32|bf16   matmuls in bf16 with f32 accumulation, weights stored bf16 (default f32)
    """,
    booleanFlags: ["exact", "double-quant"],
    run: { args in
        let lm = try loadModel(args)
        let json = args.flag("json")
        let textFile = args.string("text-file"), dataFile = args.string("data")
        let maxLen = try args.int("max-seq-length") ?? 2048
        let limit = try args.int("limit")
        try args.finish()
        let report: EvalReport
        if let textFile {
            let text = try String(contentsOfFile: textFile, encoding: .utf8)
            report = try Evaluation.text(lm, text, window: maxLen)
        } else if let dataFile {
            var dc = DataConfig()
            dc.maxSeqLength = maxLen
            dc.limit = limit
            report = try Evaluation.dataset(lm, URL(fileURLWithPath: dataFile), config: dc)
        } else {
            throw UsageError(description: "give --text-file or --data")
        }
        if json { printJSON(report.json.foundationValue) } else { print(report) }
    }
)
