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
    let s = """
    usage: sftctl finetune [--config FILE.json] [--KEY VALUE ...]

    Every config key can be given in the JSON file or as a flag (--learning_rate 1e-4 or
    --learning-rate 1e-4); flags win. Lists take JSON (--lora_target_modules '["q_proj","v_proj"]'),
    a comma-separated string of names, or the flag repeated; maps take JSON. Outputs go to
    output_dir: adapter/ (LoRA, PEFT format) or model/ (full), checkpoint-N/, metrics.jsonl,
    loss.svg, samples.jsonl, config.json.
    Ctrl-C stops at the next step and writes a checkpoint (resume with --resume_from_checkpoint latest).

    keys:

    """
    return s + FinetuneConfig.keysHelp
}

/// The config file (if any) with the remaining options over it, as `sftctl finetune` and
/// `sftctl data` read them.
func finetuneConfig(_ args: Arguments) throws -> FinetuneConfig {
    var object: JSONValue = [:]
    let path = args.string("config")
    if let path {
        guard let data = FileManager.default.contents(atPath: path) else { throw UsageError(description: "cannot read \(path)") }
        object = try JSONValue(parsing: data, path: path)
    }
    return try FinetuneConfig.from(json: object, flags: args.remainingOptions(), source: path ?? "flags")
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
    let config = try finetuneConfig(args)
    try args.finish()
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
