// `sftctl finetune`: reads a JSON config, applies flag overrides of the same names, runs
// SFTCore's Finetune.run, and shows progress (a bar on a terminal, plain lines otherwise).
import Foundation
import SFTCore
import SFTKernels

let finetuneCommand = Command(
    name: "finetune",
    summary: "finetune a model (LoRA, QLoRA or full) on instruction data",
    help: finetuneHelp(),
    booleanFlags: [],
    run: runFinetune
)

func finetuneHelp() -> String {
    var s = """
    usage: sftctl finetune [--config FILE.json] [--KEY VALUE ...]

    Every config key can be given in the JSON file or as a flag (--learning_rate 1e-4 or
    --learning-rate 1e-4); flags win. Lists take JSON (--lora_target_modules '["q_proj","v_proj"]')
    or a comma-separated string. Outputs go to output_dir: adapter/ (LoRA, PEFT format) or
    model/ (full), checkpoint-N/, metrics.jsonl, loss.svg, samples.jsonl, config.json.
    Ctrl-C stops at the next step and writes a checkpoint (resume with --resume_from_checkpoint latest).

    keys:

    """
    for (k, h) in FinetuneConfig.fields { s += "  \(k.padding(toLength: 30, withPad: " ", startingAt: 0)) \(h)\n" }
    return s
}

/// Parses a flag value: JSON when it parses (numbers, booleans, lists, objects), else a string;
/// comma lists for list-valued keys.
func configValue(_ key: String, _ raw: String) -> Any {
    if let d = raw.data(using: .utf8), let v = try? JSONSerialization.jsonObject(with: d, options: [.fragmentsAllowed]) {
        if ["lora_target_modules", "modules_to_save", "freeze", "sample_prompts"].contains(key), let s = v as? String {
            return s.split(separator: ",").map(String.init)
        }
        return v
    }
    if ["lora_target_modules", "modules_to_save", "freeze"].contains(key) { return raw.split(separator: ",").map(String.init) }
    if key == "sample_prompts" { return [raw] }
    return raw
}

final class ProgressPrinter {
    let tty = isatty(STDERR_FILENO) != 0
    let start = Date()

    func handle(_ e: TrainerEvent) {
        switch e {
        case .message(let m): line(m)
        case .checkpoint(let u): line("checkpoint: \(u.path)")
        case .eval(let step, let loss): line("step \(step): eval loss \(fmt(loss))")
        case .step(let m, let total):
            let tps = m.tokensPerSecond.map { "\(Int($0)) tok/s" } ?? ""
            let eta = m.step > 0 ? m.elapsedSeconds / Double(m.step) * Double(total - m.step) : 0
            let text = "step \(m.step)/\(total)  loss \(fmt(m.loss ?? 0))  lr \(String(format: "%.2e", m.lr ?? 0))  grad \(fmt(m.gradNorm ?? 0))  \(tps)  ETA \(Int(eta))s"
            if tty {
                let width = 24, done = total > 0 ? width * m.step / total : 0
                let bar = String(repeating: "█", count: done) + String(repeating: "·", count: width - done)
                FileHandle.standardError.write(Data("\r\u{1B}[K[\(bar)] \(text)".utf8))
                if m.step == total { FileHandle.standardError.write(Data("\n".utf8)) }
            } else {
                line(text)
            }
        }
    }

    func line(_ s: String) {
        if tty { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        FileHandle.standardError.write(Data((s + "\n").utf8))
    }

    func fmt(_ x: Double) -> String { String(format: "%.4f", x) }
}

/// Ctrl-C: the first stops the run after its current step (the result is still written), the
/// second aborts. Raised from the signal handler, read by the trainer: an atomic flag.
let interruptFlag = StopFlag()

func runFinetune(_ args: Arguments) throws {
    var object: [String: Any] = [:]
    if let path = args.string("config") {
        guard let data = FileManager.default.contents(atPath: path) else { throw UsageError(description: "cannot read \(path)") }
        guard let o = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw SFTError.format(path: path, offset: nil, message: "not a JSON object")
        }
        object = o
    }
    for (key, _) in FinetuneConfig.fields {
        let flag = [key, key.replacingOccurrences(of: "_", with: "-")].first { args.string($0) != nil }
        if let flag, let raw = args.string(flag) {
            // JSON has no NaN or infinity; a flag spelling one (nan, inf, 1e999) is refused by name.
            if let d = Double(raw.trimmingCharacters(in: .whitespaces)), !d.isFinite {
                throw SFTError.config(field: key, message: "\(raw): \(d.isNaN ? "NaN" : "an infinite value") is not allowed")
            }
            object[key] = configValue(key, raw)
        }
    }
    try args.finish()
    let config = try FinetuneConfig.from(json: object, source: args.string("config") ?? "flags")
    let progress = ProgressPrinter()
    let stop = interruptFlag
    signal(SIGINT) { _ in
        if !interruptFlag.isRaised {
            interruptFlag.raise()
            let note: StaticString = "\nstopping after this step (Ctrl-C again to abort)\n"
            _ = write(2, note.utf8Start, note.utf8CodeUnitCount)
        } else {
            _exit(130)
        }
    }
    let result = try Finetune.run(config, stop: stop) { event in progress.handle(event); return .continue }
    if let group = existingWorldCollective, group.rank != 0 { return }   // rank 0 reports a job's result
    let s = result.summary
    progress.line("done: \(s.steps) steps, \(s.trainedTokens) trained tokens in \(Int(s.seconds)) s, final loss \(progress.fmt(s.finalLoss ?? .nan))"
                  + (s.bestEvalLoss.map { ", best eval loss \(progress.fmt($0))" } ?? "")
                  + ", peak memory \(s.peakMemoryBytes >> 20) MiB")
    print(result.output.path)
}
