// `sftctl bench train` and `sftctl bench decode` (see BenchCommand.swift for the help text).
import Foundation
import SFTCore
import SFTKernels

/// Reads the options every model bench takes (--json, returned; --device, returned; --threads,
/// applied), after the bench's own; throws on any option left over.
func finishBenchArguments(_ args: Arguments) throws -> (json: Bool, device: Device) {
    let json = args.flag("json")
    let threads = try args.int("threads")
    let device = try args.device()
    try args.finish()
    if let threads { setCPUThreads(threads) }
    return (json, device)
}

func runTrainBench(_ args: Arguments) throws {
    let path = args.string("model")
    let shape = args.string("shape")
    let layers = try args.int("layers")
    let method = args.string("method") ?? "lora"
    let seq = try args.int("seq") ?? 512
    let docs = try args.int("docs") ?? 1
    let r = try args.int("lora-r") ?? 16
    let steps = try args.int("steps") ?? 3
    let ckpt = args.flag("checkpointing")
    let profile = args.flag("profile")
    let doubleQuant = args.flag("double-quant")
    let precision = try Precision(parsing: args.string("precision") ?? "f32")
    let (json, device) = try finishBenchArguments(args)
    guard (path == nil) != (shape == nil) else { throw UsageError(description: "give --model PATH or --shape NAME (one of them)") }
    if layers != nil && shape == nil { throw UsageError(description: "--layers applies to --shape only") }
    let quantization: QuantizationConfig? = method == "qlora" ? QuantizationConfig(type: .nf4, blockSize: 64, doubleQuant: doubleQuant,
                                                                                       computeDType: precision == .bf16 ? .bf16 : .f32) : nil
    if doubleQuant && quantization == nil { throw UsageError(description: "--double-quant applies to --method qlora only") }
    let backend = try SFTKernels.backend(for: device)
    // bf16: the frozen Linears (a LoRA base: all of them) load straight into bf16.
    let bf16Linears: ((String) -> Bool)? = precision == .bf16 && method != "full" ? { _ in true } : nil
    let model: CausalLM, source: WeightSource
    if let shape {
        source = try SyntheticWeights(shape: shape, layers: layers)
        if let quantization {
            model = try ModelLoader.load(source, on: backend, quantization: quantization, bf16Linears: bf16Linears ?? { _ in false })
        } else {
            model = try bf16Linears.map { try ModelLoader.load(source, on: backend, bf16Linears: $0) } ?? ModelLoader.load(source, on: backend)
        }
    } else {
        let lm = try LanguageModel.load(URL(fileURLWithPath: path!), on: backend, quantization: quantization, bf16Linears: bf16Linears)
        model = lm.model; source = lm.source
    }
    switch method {
    case "lora", "qlora": try model.applyLoRA(LoRAConfig(r: r, alpha: Double(2 * r), dropout: 0), seed: 1)
    case "full": model.setTrainable(true)
    default: throw UsageError(description: "--method must be lora, qlora or full")
    }
    try model.setPrecision(precision)
    backend.emptyCache()   // the f32 copies of weights now stored bf16 go back to the system
    OpProfile.enabled = profile
    let res = try TrainingBenchmark.run(model: model, seq: seq, steps: steps, checkpointing: ckpt, documents: docs)
    OpProfile.enabled = false
    let m = res.median
    if profile { printOpProfile(steps: steps, stepSeconds: res.steps.reduce(0) { $0 + $1.total } / Double(steps)) }
    if json {
        // Model FLOPs per token (the MFU convention): 2 per matmul weight forward, 2 more for the
        // input gradient, 2 more for the weight gradient when the weights train; the embedding
        // lookup and the attention scores are not counted.
        let embedding = model.tiedEmbeddings ? 0 : (source.shape(of: "model.embed_tokens.weight")?.reduce(1, *) ?? 0)
        let flopsPerToken = (method == "full" ? 6 : 4) * (source.parameterCount - embedding)
        printJSON(["method": method, "shape": shape ?? "-", "model": path ?? "-", "layers": layers ?? 0, "docs": docs,
                   "double_quant": doubleQuant, "flops_per_token": flopsPerToken, "precision": precision.rawValue,
                   "seq": seq, "lora_r": r, "checkpointing": ckpt, "tokens_per_second": res.tokensPerSecond,
                   "step_seconds": m.total, "forward_seconds": m.forward, "backward_seconds": m.backward,
                   "optimizer_seconds": m.optimizer, "peak_memory_bytes": res.peakMemoryBytes, "peak_rss_bytes": res.peakRSSBytes,
                   "threads": cpuThreads, "device": device.description])
    } else {
        print("\(method) step (\(precision)), 1 × \(seq) tokens, median of \(steps): \(m.total) s (forward \(m.forward), backward \(m.backward), optimizer \(m.optimizer))")
        print("tokens/s \(res.tokensPerSecond); peak tensor memory \(res.peakMemoryBytes >> 20) MiB; peak RSS \(res.peakRSSBytes >> 20) MiB")
    }
}

func runDecodeBench(_ args: Arguments) throws {
    let path = args.string("model")
    let shape = args.string("shape")
    let layers = try args.int("layers")
    let tokens = try args.int("tokens") ?? 64
    let exact = args.flag("exact")
    let runs = try args.int("runs") ?? 3
    let (json, device) = try finishBenchArguments(args)
    guard (path == nil) != (shape == nil) else { throw UsageError(description: "give --model PATH or --shape NAME (one of them)") }
    let model: CausalLM, prompt: [Int32]
    if let shape {
        model = try ModelLoader.load(try SyntheticWeights(shape: shape, layers: layers), on: try SFTKernels.backend(for: device))
        var rng = SeededRandom(seed: 7)
        prompt = (0..<16).map { _ in Int32(rng.next() % UInt64(model.vocabSize)) }
    } else {
        let lm = try LanguageModel.load(URL(fileURLWithPath: path!), on: device, packedDecode: !exact)
        model = lm.model
        prompt = lm.encodePrompt("The history of the Roman Empire begins")
    }
    let speeds = try (0..<runs).map { _ in try TrainingBenchmark.decode(model: model, prompt: prompt, tokens: tokens) }.sorted()
    let median = speeds[speeds.count / 2]
    if json {
        printJSON(["decode_tokens_per_second": median, "tokens": tokens, "runs": runs, "device": device.description,
                   "shape": shape ?? "-", "model": path ?? "-"])
    } else { print("batch-1 decode: \(median) tokens/s (median of \(runs))") }
}

func runForwardBench(_ args: Arguments) throws {
    let path = try args.require("model")
    let seq = try args.int("seq") ?? 512
    let runs = try args.int("runs") ?? 3
    let profile = args.flag("profile")
    let (json, device) = try finishBenchArguments(args)
    let lm = try LanguageModel.load(URL(fileURLWithPath: path), on: device)
    var rng = SeededRandom(seed: 1)
    let ids = (0..<seq).map { _ in Int32(rng.next() % UInt64(lm.model.vocabSize)) }
    var times: [Double] = []
    for i in 0...runs {
        let t0 = Date()
        _ = try lm.model.logitsTensor(ids)
        if i > 0 { times.append(Date().timeIntervalSince(t0)) }
        if i == 0 { OpProfile.reset(); OpProfile.enabled = profile }
    }
    OpProfile.enabled = false
    if profile { printOpProfile(steps: runs, stepSeconds: times.reduce(0, +) / Double(runs)) }
    times.sort()
    let med = times[times.count / 2]
    if json { printJSON(["mode": "forward", "seq": seq, "seconds": med, "tokens_per_second": Double(seq) / med]) }
    else { print("forward \(seq) tokens: \(med) s, \(Double(seq) / med) tokens/s (median of \(runs))") }
}

/// The op table of `OpProfile` per step: calls, milliseconds, share of the step, GFLOP/s (GEMMs,
/// one row per shape; `crossEntropyLMHead` includes its own GEMMs), and the time between ops.
func printOpProfile(steps: Int, stepSeconds: Double) {
    let rows = OpProfile.entries
    let n = Double(steps)
    let total = rows.reduce(0) { $0 + $1.entry.seconds } / n
    let gemm = rows.filter { $0.name.hasPrefix("gemm") }
    let gemmSeconds = gemm.reduce(0) { $0 + $1.entry.seconds } / n, gemmFlops = gemm.reduce(0) { $0 + $1.entry.flops } / n
    func ms(_ s: Double) -> String { String(Int((s * 1e4).rounded()) / 10) + "." + String(Int((s * 1e4).rounded()) % 10) }
    func pct(_ s: Double) -> String { String(Int((100 * s / stepSeconds).rounded())) + "%" }
    print("op profile per step (step \(ms(stepSeconds)) ms):")
    print("  all GEMMs: \(ms(gemmSeconds)) ms, \(pct(gemmSeconds)), \(Int(gemmFlops / gemmSeconds / 1e9)) GFLOP/s")
    for (name, e) in rows where e.seconds / n >= 0.0005 {
        let rate = e.flops > 0 ? ", \(Int(e.flops / e.seconds / 1e9)) GFLOP/s" : ""
        print("  \(name): \(e.calls / steps) calls, \(ms(e.seconds / n)) ms, \(pct(e.seconds / n))\(rate)")
    }
    print("  between ops (Swift, allocation): \(ms(stepSeconds - total)) ms, \(pct(stepSeconds - total)) (nested ops counted twice)")
}
