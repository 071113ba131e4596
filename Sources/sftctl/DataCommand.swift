// `sftctl data`: what a finetune run would train on, before any training — the dataset report
// (records kept and skipped, with lines), the first formatted samples with their trained text
// highlighted, and the packing/truncation report. Reads the same config file and keys as
// `sftctl finetune`; loads only the tokenizer and chat template, not the weights.
import Foundation
import SFTCore
import SFTKernels

let dataCommand = Command(
    name: "data",
    summary: "show formatted samples with their loss masks, and the data reports",
    help: """
    usage: sftctl data --model PATH --data F [--config FILE.json] [--KEY VALUE ...]
                       [--samples N] [--field CANONICAL=KEY,...] [--strict] [--doctor] [--json]

    Loads F as `sftctl finetune` would, formats it with the model's tokenizer and chat template
    (or --template), and prints:
      - the dataset report: file kind, format, records, examples, skipped records with their
        lines and reasons;
      - the first N samples (default 3) with the trained tokens' text highlighted: in colour on
        a terminal, between [[ and ]] otherwise (<eos> marks an appended EOS);
      - the packing/truncation report and the number of optimizer steps.

      --model PATH       GGUF file or HF model folder (only its tokenizer and template are read)
      --data F           .json (array), .jsonl or .csv
      --config FILE      a finetune config (JSON); flags override its keys
      --samples N        samples to show (default 3)
      --field A=B,...    rename keys: canonical name A is read from key B (e.g. instruction=question)
      --strict           fail on the first bad record
      --doctor           check every example and report each problem with its line and tokens:
                         BOS missing or doubled against generation, EOS / end of turn never
                         trained, pad == EOS with EOS masked, trained tokens cut by truncation,
                         examples with nothing trained, another family's special tokens,
                         duplicates; and the share of tokens trained
      --json             print one JSON object instead

    Every finetune key is read (as a flag or in the config; see sftctl finetune --help); these
    matter here: the data keys (format, fields, strict, limit, subset_seed, mask_policy,
    train_end_of_turn, max_seq_length, packing, padding_free, cross_document_attention,
    truncation, prompt_template, span_end, tools), template, seed, per_device_train_batch_size,
    gradient_accumulation_steps and num_train_epochs.
    """,
    booleanFlags: ["strict", "doctor"],
    run: runData
)

func runData(_ args: Arguments) throws {
    let fieldSpecs = args.strings("field")
    let strict = args.flag("strict")
    let samples = try args.int("samples") ?? 3
    let json = args.flag("json")
    let doctor = args.flag("doctor")
    var config = try finetuneConfig(args)
    try args.finish()
    for spec in fieldSpecs {
        for (k, v) in try FieldMapping(parsing: spec).renames { config.dataConfig.fields[k] = v }
    }
    if strict { config.dataConfig.strict = true }
    guard !config.model.isEmpty else { throw UsageError(description: "missing required option --model") }
    guard !config.data.isEmpty else { throw UsageError(description: "missing required option --data") }

    let t0 = Date()
    let tokenizer = try Tokenizer(url: URL(fileURLWithPath: config.model))
    let template: ChatTemplate?
    if let t = config.template {
        template = try LanguageModel.loadTemplate(t)
    } else {
        template = try tokenizer.chatTemplate.map { try ChatTemplate(source: $0) }
    }
    let renderer = template.map { TemplateRenderer(template: $0, tokenizer: tokenizer) }
    let padId = tokenizer.padTokenId ?? tokenizer.eosTokenId ?? 0
    let prepared = try prepareDataset(URL(fileURLWithPath: config.data), config: config.dataConfig, tokenizer: tokenizer,
                                      renderer: renderer, keepTextFor: max(0, samples), doctor: doctor, padId: padId)
    let options = try config.dataConfig.batchingOptions(
        microBatchSize: config.perDeviceTrainBatchSize, gradientAccumulation: config.gradientAccumulationSteps,
        epochs: config.numTrainEpochs, seed: config.seed, padId: padId)
    let plan = try BatchPlan(examples: prepared.examples, options: options)
    let seconds = Date().timeIntervalSince(t0)
    let shown = Array(prepared.examples.prefix(max(0, samples)))
    var templateName = renderer == nil ? "none (Alpaca prompt / prompt+completion / ### Human-Assistant turns)"
                                       : (config.template ?? "the model's own")
    if config.dataConfig.promptTemplate != nil { templateName = "prompt_template from the config (instruction and prompt/completion records); " + templateName }

    if json {
        // Streamed: linear in the samples' size, whatever it is.
        let writer = JSONStreamWriter.standardOutput()
        try prepared.writeJSON(plan: plan, samples: shown, template: templateName, seconds: seconds, to: writer)
        FileHandle.standardOutput.write(Data("\n".utf8))
        return
    }

    let tty = isatty(STDOUT_FILENO) != 0
    let (open, close) = tty ? ("\u{1B}[1;32m", "\u{1B}[0m") : ("[[", "]]")
    print(prepared.datasetReport)
    print(prepared.formattingReport)
    print("template: " + templateName)
    for t in shown {
        let trained = t.trained.filter { $0 }.count
        print("\n── sample at \(t.source): \(t.ids.count) tokens, \(trained) trained " + (tty ? "(trained text in green)" : "(trained text in [[ ]])"))
        let marked = t.markedText(open: open, close: close, eos: "<eos>") ?? ""
        print(marked.hasSuffix("\n") ? String(marked.dropLast()) : marked)
    }
    print("\npacking: \(plan.report)")
    print("steps: \(plan.microBatchesPerEpoch) micro-batches of \(options.microBatchSize) per epoch, "
          + "\(plan.stepsPerEpoch) optimizer steps per epoch, \(plan.totalSteps) in all (\(config.numTrainEpochs) epochs)")
    if let d = prepared.doctorReport { print("\n" + d.description) }
    print("prepared in \(Int(seconds * 1000)) ms")
}
