// `sftctl bench bf16`: the bf16 GEMM (mixed precision) at SmolLM2-135M training shapes
// (T = 512 tokens; the weight operand stored bf16, the activation f32 and rounded as it is
// packed, as `precision: bf16` runs them) on every micro-kernel this CPU runs, next to the f32
// GEMM of the same shape, and the vdpbf16ps peak of a register-only loop on one core and on
// all of them. Medians of several runs (best in parentheses).
import Foundation
import SFTKernels
import SFTCore

func runBF16Bench(_ args: Arguments) throws {
    let threads = try args.int("threads")
    let runs = try args.int("runs") ?? 5
    let json = args.flag("json")
    try args.finish()
    guard runs >= 1 else { throw UsageError(description: "--runs must be at least 1") }
    let cpu = CPUBackend.shared
    if let threads { cpu.setThreads(threads) }
    let bench = KernelBench(cpu: cpu, runs: runs, json: json)
    let single = cpu.dpbf16PeakGFLOPS(threads: 1), all = cpu.dpbf16PeakGFLOPS(threads: cpu.threads)
    if json {
        printJSON(["name": "vdpbf16ps peak", "threads": cpu.threads, "gflops_1_thread": single ?? 0, "gflops": all ?? 0,
                   "variant": CPUBackend.gemmBF16Variant])
    } else {
        print("bf16 GEMM: micro-kernel \(CPUBackend.gemmBF16Variant), \(cpu.threads) threads, median of \(runs) runs (best in parentheses)")
        print("vdpbf16ps peak (register-only loop): " + (single.map { fixed($0, 1) + " GFLOP/s on 1 core, " } ?? "no AVX512_BF16")
              + (all.map { fixed($0, 1) + " GFLOP/s on \(cpu.threads)" } ?? ""))
    }
    // (name, M, K, N, B stored N×K): y = x Wᵀ forward, dx = dy W backward, and the LM head.
    let shapes: [(String, Int, Int, Int, Bool)] = [
        ("square", 1024, 1024, 1024, false),
        ("q/o proj", 512, 576, 576, true),
        ("mlp up/gate", 512, 576, 1536, true),
        ("mlp down", 512, 1536, 576, true),
        ("mlp up dx", 512, 1536, 576, false),
        ("lm head", 512, 576, 49152, true),
        ("lm head dx", 512, 49152, 576, false),
    ]
    var variants = ["avx512bf16", "avx512", "avx2"].filter { (try? CPUBackend.setGEMMBF16Variant($0)) != nil }
    try CPUBackend.setGEMMBF16Variant("auto")
    if variants.isEmpty { variants = ["generic"] }
    defer { try? CPUBackend.setGEMMBF16Variant("auto") }
    for (name, M, K, N, transB) in shapes {
        let a = try bench.buffer(M * K), b32 = try bench.buffer(K * N, seed: 2), c = try bench.buffer(M * N, seed: 3)
        let b16 = BufferView(try cpu.allocate(bytes: K * N * 2))
        try cpu.cast(b32, from: .f32, into: b16, to: .bf16, count: K * N)
        let ldb = transB ? K : N
        let flop = 2.0 * Double(M) * Double(N) * Double(K) * 1e-9
        var bodies: [() throws -> Void] = [{
            try cpu.gemm(transA: false, transB: transB, M: M, N: N, K: K, alpha: 1, A: a, lda: K, strideA: 0,
                         B: b32, ldb: ldb, strideB: 0, beta: 0, C: c, ldc: N, strideC: 0, batch: 1)
        }]
        for v in variants {
            bodies.append {
                try CPUBackend.setGEMMBF16Variant(v)
                try cpu.gemmBF16(transA: false, transB: transB, M: M, N: N, K: K, alpha: 1, A: a, aType: .f32, lda: K,
                                 B: b16, bType: .bf16, ldb: ldb, beta: 0, C: c, ldc: N)
            }
        }
        let t = try bench.medians(bodies)
        let shape = "\(M)×\(K)×\(N)" + (transB ? " Wᵀ" : "")
        bench.report("sgemm \(name)", shape, t[0], gflop: flop)
        for (i, v) in variants.enumerated() {
            let gflops = flop / t[i + 1].median
            var extra: [String: Any] = ["variant": v, "vs_sgemm": t[0].median / t[i + 1].median]
            var note = ", " + fixed(t[0].median / t[i + 1].median, 2) + "× sgemm"
            if v == "avx512bf16", let all {
                extra["of_peak"] = gflops / all
                note += ", " + fixed(100 * gflops / all, 0) + "% of peak"
            }
            bench.report("bf16 \(v) \(name)", shape, t[i + 1], gflop: flop, extra: extra, note: note)
        }
    }
}
