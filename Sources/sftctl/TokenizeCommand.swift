// sftctl tokenize: token ids and strings of a text under a model's tokenizer, and (--bench)
// the tokenizer's speed on ShareGPT text.
import Foundation
import SFTCore
import SFTKernels

let tokenizeCommand = Command(
    name: "tokenize",
    summary: "show the token ids of a text (or time the tokenizer)",
    help: """
    usage: sftctl tokenize --model PATH [--json] [--no-special] (TEXT | --file F)
           sftctl tokenize --model PATH --bench [--data F] [--bytes N] [--runs R] [--json]

    Prints the token ids and token strings of TEXT (or of file F). Special-token strings in the
    text (<|im_start|>, <|eot_id|>, ...) become special tokens; BOS/EOS are added when the
    tokenizer adds them, unless --no-special.

      --model PATH   a GGUF file, an HF model folder (tokenizer.json + tokenizer_config.json),
                     or a tokenizer.json file
      --file F       read the text from F instead of the argument
      --no-special   do not add BOS/EOS
      --json         print {"ids": [...], "tokens": [...]}

    --bench times encoding (one call per text, one thread) of the first N bytes of ShareGPT
    message text (default: the ShareGPT asset, 2000000 bytes, 5 runs, median reported); with
    --json it prints {"texts", "bytes", "tokens", "seconds", "tokens_per_second", "checksum"}.
    tools/bench_tokenizer.py runs this next to HF tokenizers.
    """,
    booleanFlags: ["no-special", "bench"],
    run: runTokenize
)

func runTokenize(_ args: Arguments) throws {
    let model = try args.require("model")
    let json = args.flag("json")
    if args.flag("bench") {
        let data = args.string("data").map { URL(fileURLWithPath: $0) } ?? Assets.shareGPT
        let bytes = try args.int("bytes") ?? 2_000_000
        let runs = try args.int("runs") ?? 5
        try args.finish()
        let t0 = Date()
        let tokenizer = try Tokenizer(url: URL(fileURLWithPath: model))
        let loadSeconds = Date().timeIntervalSince(t0)
        let texts = try TokenizerBenchmark.shareGPTTexts(url: try Assets.require(data), minBytes: bytes)
        let r = TokenizerBenchmark.run(tokenizer, texts: texts, runs: runs)
        if json {
            printJSON(["texts": r.texts, "bytes": r.bytes, "tokens": r.tokens, "seconds": r.seconds,
                       "median_seconds": r.medianSeconds, "tokens_per_second": r.tokensPerSecond,
                       "checksum": String(r.checksum), "load_seconds": loadSeconds])
        } else {
            print("\(r.texts) texts, \(r.bytes) bytes, \(r.tokens) tokens; tokenizer loaded in \(formatSeconds(loadSeconds))")
            print("runs: " + r.seconds.map(formatSeconds).joined(separator: " "))
            print("median \(formatSeconds(r.medianSeconds)): \(Int(r.tokensPerSecond)) tokens/s, "
                  + "\(Int(Double(r.bytes) / r.medianSeconds / 1e6 * 10) / 10) MB/s")
        }
        return
    }
    let noSpecial = args.flag("no-special")
    let file = args.string("file")
    try args.finish()
    let text: String
    if let file {
        guard let data = FileManager.default.contents(atPath: file) else { throw SFTError.io(path: file, message: "cannot read") }
        guard let s = String(data: data, encoding: .utf8) else { throw SFTError.format(path: file, offset: nil, message: "not valid UTF-8") }
        text = s
    } else {
        guard args.positionals.count == 1 else {
            throw UsageError(description: args.positionals.isEmpty ? "give a TEXT or --file F" : "give one TEXT (quote it)")
        }
        text = args.positionals[0]
    }
    let tokenizer = try Tokenizer(url: URL(fileURLWithPath: model))
    let ids = tokenizer.encode(text, addSpecialTokens: !noSpecial)
    let tokens = ids.map { tokenizer.tokenString($0) ?? "" }
    if json {
        printJSON(["ids": ids.map { Int($0) }, "tokens": tokens])
    } else {
        for (id, t) in zip(ids, tokens) { print("\(id)\t\(t.debugDescription)") }
        print("\(ids.count) tokens")
    }
}

private func formatSeconds(_ s: Double) -> String { "\(Int(s * 1000 + 0.5)) ms" }
