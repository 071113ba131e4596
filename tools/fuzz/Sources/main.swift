// sft-fuzz: mutational fuzzing of sft's parsers, in-process. Each input is made from a seed file
// of the corpus by a few byte- or token-level mutations, written to OUT/current.<target>, and
// handed to the same entry point a user reaches (GGUFFile, SafetensorsFile, Tokenizer,
// DatasetLoader, ChatTemplate, FinetuneConfig). A typed error is the expected outcome for bad
// input; a crash ends the process (tools/fuzz/run keeps the input that caused it), and an input
// that runs longer than --hang-seconds is written to OUT/hang.<target> and ends it with code 3.
// Prints one JSON line: runs, accepted inputs, rejected inputs, slowest input, peak RSS.
//
// Usage: sft-fuzz --target gguf|safetensors|tokenizer|dataset|template|config --corpus DIR
//                 --out DIR [--runs N] [--seed S] [--hang-seconds T]
import Foundation
import SFTCore
import SFTKernels

struct Options {
    var target = "", corpus = "", out = "", runs = 1000, seed: UInt64 = 1, hangSeconds = 10.0
    init(_ args: [String]) {
        var i = 1
        func next() -> String { i += 1; return i < args.count ? args[i] : "" }
        while i < args.count {
            switch args[i] {
            case "--target": target = next()
            case "--corpus": corpus = next()
            case "--out": out = next()
            case "--runs": runs = Int(next()) ?? runs
            case "--seed": seed = UInt64(next()) ?? seed
            case "--hang-seconds": hangSeconds = Double(next()) ?? hangSeconds
            default: FileHandle.standardError.write(Data("sft-fuzz: unknown argument \(args[i])\n".utf8)); exit(2)
            }
            i += 1
        }
    }
}

let options = Options(CommandLine.arguments)
let fm = FileManager.default
let seeds: [(name: String, bytes: [UInt8])] = ((try? fm.contentsOfDirectory(atPath: options.corpus)) ?? []).sorted().compactMap { n in
    fm.contents(atPath: options.corpus + "/" + n).map { (n, [UInt8]($0)) }
}
guard !seeds.isEmpty else { FileHandle.standardError.write(Data("sft-fuzz: empty corpus \(options.corpus)\n".utf8)); exit(2) }
try? fm.createDirectory(atPath: options.out, withIntermediateDirectories: true)

/// Tokens that matter to the text formats, spliced in by the text mutations.
let dictionary: [String] = [
    "{%", "%}", "{{", "}}", "{#", "#}", "-%}", "{%-", " for x in ", " endfor ", " if ", " endif ", " set ", " macro ", " endmacro ",
    " call ", "range(", "99999999", "-1", "|tojson", "|join", "|length", "*", "**", "~", "[", "]", "{", "}", "\"", "'", ":", ",",
    "\\u0000", "\\ud800", "1e308", "-1e308", "NaN", "null", "true", "[[[[[[[[[[", "{\"a\":", "\n", "\r\n", "\u{feff}", "\u{10ffff}",
    "messages", "role", "content", "tools", "tool_calls", "instruction", "input", "output", "conversations", "from", "value",
    "learning_rate", "lora_r", "max_seq_length", "dtype", "shape", "data_offsets", "F32", "BF16", "__metadata__",
    // template work that the budget must see: huge values, self reference, deep chains
    "namespace(", "ns.x = ns", "|slice(", "|batch(", "int(base=", "|sort", "|unique", " == ", " + 1", "|first", "10**12",
    "%*d", "[ns.x, ns.x]",
]
let interesting: [UInt64] = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF,
                             0x7FFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 1 << 32, 1 << 40, 4096, 65536]

var rng = SeededRandom(seed: options.seed)
@MainActor func below(_ n: Int) -> Int { n <= 1 ? 0 : Int(rng.next() % UInt64(n)) }

@MainActor func mutate(_ input: [UInt8]) -> [UInt8] {
    var b = input
    for _ in 0...below(6) {
        let at = below(b.count + 1)
        switch below(9) {
        case 0 where !b.isEmpty: b[min(at, b.count - 1)] ^= UInt8(1 << below(8))
        case 1 where !b.isEmpty: b[min(at, b.count - 1)] = UInt8(truncatingIfNeeded: interesting[below(interesting.count)])
        case 2 where b.count >= 8:
            var v = interesting[below(interesting.count)]
            let width = [1, 2, 4, 8][below(4)], p = min(at, b.count - width)
            for k in 0..<width { b[p + k] = UInt8(truncatingIfNeeded: v); v >>= 8 }
        case 3: b.insert(contentsOf: (0..<(1 + below(16))).map { _ in UInt8(below(256)) }, at: at)
        case 4 where !b.isEmpty: b.removeSubrange(min(at, b.count - 1)..<min(b.count, at + 1 + below(64)))
        case 5 where !b.isEmpty:  // duplicate a range
            let s = min(at, b.count - 1), e = min(b.count, s + 1 + below(256))
            b.insert(contentsOf: b[s..<e], at: below(b.count + 1))
        case 6:  // splice another seed
            let other = seeds[below(seeds.count)].bytes
            if !other.isEmpty {
                let s = below(other.count), e = min(other.count, s + 1 + below(512))
                b.insert(contentsOf: other[s..<e], at: at)
            }
        case 7: b.insert(contentsOf: Array(dictionary[below(dictionary.count)].utf8), at: at)
        default:  // repeat a dictionary token many times (deep nesting, long runs)
            let t = Array(dictionary[below(dictionary.count)].utf8)
            b.insert(contentsOf: Array([[UInt8]](repeating: t, count: 1 + below(200)).joined()), at: at)
        }
    }
    return b
}

let sampleMessages = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi"),
                      ChatMessage(role: "assistant", content: "Hello!"), ChatMessage(role: "user", content: "Again")]

/// Runs the target's entry point on the file; returns whether the input was accepted.
func exercise(_ url: URL) throws {
    switch options.target {
    case "gguf":
        let g = try GGUFFile(url: url)
        _ = g.metadata.count
        for t in g.tensors.prefix(64) { _ = t.name }
        // What is read from the metadata next: the weight map (q/k head counts), the model
        // config (sizes checked before any family decodes them) and the tokenizer.
        if let w = try? GGUFWeights(file: g) { _ = try? LlamaConfig(hf: w.config) }
        if let spec = try? TokenizerSpec(gguf: g) { _ = try? Tokenizer(spec: spec) }
    case "safetensors":
        let f = try SafetensorsFile(url: url)
        for n in f.names.prefix(16) where (f.tensor(named: n)?.shape.reduce(1, *) ?? 0) <= 1 << 20 { _ = try f.loadF32(n) }
    case "tokenizer":
        let t = try Tokenizer(url: url)
        let ids = t.encode("Hello, world! ünïcödé 123 <|im_start|>")
        _ = t.decode(ids)
    case "dataset":
        _ = try Dataset.load(url, options: DatasetOptions())
    case "template":
        let source = String(decoding: try Data(contentsOf: url), as: UTF8.self)
        let limits = TemplateLimits(maxSteps: 200_000, maxCallDepth: 64, maxOutputBytes: 1 << 20)
        let t = try ChatTemplate(source: source, limits: limits)
        _ = try t.render(messages: sampleMessages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    case "config":
        try FinetuneConfig.from(jsonData: try Data(contentsOf: url), source: url.path).validate()
    default:
        FileHandle.standardError.write(Data("sft-fuzz: unknown target \(options.target)\n".utf8)); exit(2)
    }
}

// A watchdog: an input that runs past the limit is kept as a hang reproducer.
let current = URL(fileURLWithPath: options.out).appendingPathComponent("current.\(options.target)" + (options.target == "dataset" ? "" : ""))
nonisolated(unsafe) var startedAt = Date.distantFuture
nonisolated(unsafe) var currentPath = ""
Thread.detachNewThread {
    while true {
        Thread.sleep(forTimeInterval: 0.5)
        if Date().timeIntervalSince(startedAt) > options.hangSeconds {
            let hang = options.out + "/hang.\(options.target)"
            try? fm.removeItem(atPath: hang)
            try? fm.copyItem(atPath: currentPath, toPath: hang)
            FileHandle.standardError.write(Data("sft-fuzz: input ran over \(options.hangSeconds) s: kept as \(hang)\n".utf8))
            exit(3)
        }
    }
}

var accepted = 0, rejected = 0, slowest = 0.0
for run in 0..<options.runs {
    let seed = seeds[below(seeds.count)]
    let input = run < seeds.count ? seeds[run].bytes : mutate(seed.bytes)
    // Datasets are read by extension: keep the seed's.
    let ext = (seed.name as NSString).pathExtension
    let url = ext.isEmpty || options.target != "dataset" ? current : current.appendingPathExtension(ext)
    currentPath = url.path
    try? Data(input).write(to: url)
    let t0 = Date()
    startedAt = t0
    do { try exercise(url); accepted += 1 } catch { rejected += 1 }
    startedAt = .distantFuture
    slowest = max(slowest, Date().timeIntervalSince(t0))
}
var usage = rusage()
getrusage(RUSAGE_SELF.rawValue, &usage)
print("{\"target\": \"\(options.target)\", \"runs\": \(options.runs), \"accepted\": \(accepted), \"rejected\": \(rejected), "
      + "\"slowest_seconds\": \(String(format: "%.3f", slowest)), \"peak_rss_mib\": \(usage.ru_maxrss / 1024)}")
