// `sftctl bench kernels`: speed of the CPU kernel layer. GEMM through the Backend next to a
// direct cblas_sgemm call on the same shapes (the wrapper must cost nothing), then attention,
// RMSNorm, SwiGLU and the chunked LM-head cross-entropy at SmolLM2-135M sizes (C=576, F=1536,
// H=9, KV=3, D=64, V=49152) for T=512 tokens. Medians of several runs; results go to
// BENCHMARKS.md by hand.
import COpenBLAS
import Foundation
import SFTCore
import SFTKernels

let benchCommand = Command(
    name: "bench",
    summary: "measure speed: kernels, training step, forward, decode",
    help: """
    usage: sftctl bench kernels [--threads N] [--runs R] [--isa NAME] [--json]
           sftctl bench train (--model PATH | --shape tiny|1b|7b|13b|70b [--layers L])
                              [--method lora|qlora|full] [--double-quant] [--seq T] [--docs N]
                              [--lora-r R] [--steps S] [--checkpointing] [--precision f32|bf16]
                              [--device D] [--threads N]
                              [--profile] [--json]
           sftctl bench decode (--model PATH | --shape NAME [--layers L]) [--tokens N] [--runs R] [--exact] [--device D] [--threads N] [--json]
           sftctl bench bf16 [--threads N] [--runs R] [--json]
           sftctl bench forward --model PATH [--seq T] [--runs R] [--device D] [--threads N] [--profile] [--json]

    train: one optimizer step of batch 1 × T tokens (LoRA on all linear layers, QLoRA over an
    NF4 base, or full), of a model file or of random weights of a named Llama shape (--shape;
    --layers keeps the first L decoder layers; --docs packs N documents into the row),
    median step time over S steps after a warm-up, tokens/s, forward/backward split and
    peak memory. decode: batch-1 greedy decode tokens/s after a short prompt (from the GGUF's
    quantized blocks unless --exact). forward: inference forward of T tokens with the logits of
    every position (what transformers' model(ids) computes). bf16: the bf16 GEMM's GFLOP/s at
    SmolLM2-135M training shapes on every micro-kernel this CPU runs, next to sgemm, and the
    vdpbf16ps peak (a register-only loop) on one core and on all. --profile (train, forward) prints where
    the step's time goes, op by op (GEMMs by shape, with their GFLOP/s).

    Times the CPU kernels at SmolLM2-135M sizes (T=512 tokens) and prints the median of R runs
    (default 5): GEMM GFLOP/s through the backend and through cblas_sgemm directly (their ratio
    should be >= 0.95), attention forward/backward, RMSNorm, SwiGLU and the fused LM-head
    cross-entropy.

      --device D    train/decode/forward: cpu (default), cuda or cuda:N
      --threads N   cores (default: all); OpenBLAS gets as many in the direct GEMM calls
      --runs R      timed runs per measurement (default 5); the median is printed, and the
                    best run in parentheses
      --isa NAME    run the C kernels on avx512, avx2 or generic (default: the best)
      --json        one JSON object per measurement
    """,
    booleanFlags: ["checkpointing", "exact", "profile", "double-quant"],
    run: { args in
        switch args.positionals.first {
        case "train": try runTrainBench(args); return
        case "decode": try runDecodeBench(args); return
        case "forward": try runForwardBench(args); return
        case "bf16": try runBF16Bench(args); return
        case "kernels": break
        default: throw UsageError(description: "expected `sftctl bench kernels|train|decode`")
        }
        let threads = try args.int("threads")
        let runs = try args.int("runs") ?? 5
        let isa = args.string("isa")
        let json = args.flag("json")
        try args.finish()
        guard runs >= 1 else { throw UsageError(description: "--runs must be at least 1") }
        let cpu = CPUBackend.shared
        if let threads { cpu.setThreads(threads) }
        if let isa { try CPUBackend.setInstructionSet(isa) }
        try KernelBench(cpu: cpu, runs: runs, json: json).run()
    }
)

/// The measurements of `sftctl bench kernels`.
struct KernelBench {
    let cpu: CPUBackend
    let runs: Int
    let json: Bool

    func run() throws {
        let header = "cpu kernels: isa \(CPUBackend.instructionSet), \(cpu.threads) threads, OpenBLAS \(String(cString: openblas_get_corename())), median of \(runs) runs (best run in parentheses)"
        if json { printJSON(["isa": CPUBackend.instructionSet, "threads": cpu.threads, "runs": runs]) } else { print(header) }
        try gemms()
        try attention()
        try afterGemm()
        try rmsnorm()
        try swiglu()
        try crossEntropy()
    }

    // MARK: timing

    /// Seconds per call: the median of the runs, and the best (machine load only adds time, so
    /// the best run is the estimate least disturbed by other processes).
    struct Timing {
        var median: Double, best: Double
        static func + (a: Timing, b: Timing) -> Timing { Timing(median: a.median + b.median, best: a.best + b.best) }
    }

    /// Timing of `runs` calls after one warm-up call.
    func median(_ body: () throws -> Void) throws -> Timing {
        try withoutActuallyEscaping(body) { try medians([$0])[0] }
    }

    /// Timings of several bodies run in turn (a, b, a, b, ...), so a change in machine load
    /// during the measurement hits all of them alike.
    /// Timings of several bodies. Interleaved (a, b, a, b, ...) a change in machine load hits
    /// them alike; in blocks (a, a, ..., b, b, ...) each runs in its own steady state — the
    /// GEMM comparison needs that, since OpenBLAS's threads keep spinning after its calls.
    func medians(_ bodies: [() throws -> Void], interleave: Bool = true) throws -> [Timing] {
        var times = [[Double]](repeating: [], count: bodies.count)
        func timed(_ i: Int) throws {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try bodies[i]()
            times[i].append(Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9)
        }
        if interleave {
            for body in bodies { try body() }
            for _ in 0..<runs { for i in bodies.indices { try timed(i) } }
        } else {
            for i in bodies.indices {
                try bodies[i]()
                for _ in 0..<runs { try timed(i) }
            }
        }
        return times.map { t in Timing(median: t.sorted()[t.count / 2], best: t.min()!) }
    }

    func report(_ name: String, _ shape: String, _ t: Timing, gflop: Double? = nil, gbytes: Double? = nil,
                extra: [String: Any] = [:], note: String = "") {
        if json {
            var o: [String: Any] = ["name": name, "shape": shape, "ms": t.median * 1e3, "best_ms": t.best * 1e3]
            if let gflop { o["gflops"] = gflop / t.median; o["best_gflops"] = gflop / t.best }
            if let gbytes { o["gbs"] = gbytes / t.median; o["best_gbs"] = gbytes / t.best }
            o.merge(extra) { a, _ in a }
            printJSON(o)
            return
        }
        var line = pad(name, 20) + pad(shape, 20) + pad(fixed(t.median * 1e3, 3) + " ms", 13) + pad("(" + fixed(t.best * 1e3, 3) + ")", 11)
        if let gflop { line += pad(fixed(gflop / t.median, 1) + " GFLOP/s", 15) + pad("(" + fixed(gflop / t.best, 1) + ")", 9) }
        if let gbytes { line += pad(fixed(gbytes / t.median, 1) + " GB/s", 15) + pad("(" + fixed(gbytes / t.best, 1) + ")", 9) }
        print(line + note)
    }

    func buffer(_ count: Int, seed: UInt64 = 1) throws -> BufferView {
        let v = BufferView(try cpu.allocate(bytes: count * 4))
        var s = seed
        let p = v.f32()
        for i in 0..<count {
            s = s &* 6364136223846793005 &+ 1442695040888963407
            p[i] = Float(Int64(bitPattern: s >> 11) % 2001 - 1000) / 1000
        }
        return v
    }

    // MARK: GEMM

    func gemms() throws {
        // (name, M, K, N, W stored N×K i.e. transB)
        let shapes: [(String, Int, Int, Int, Bool)] = [
            ("square", 1024, 1024, 1024, false),
            ("mlp up, W K×N", 512, 576, 1536, false),
            ("q/o proj", 512, 576, 576, true),
            ("mlp up/gate", 512, 576, 1536, true),
            ("mlp down", 512, 1536, 576, true),
            ("lm head", 512, 576, 49152, true),
        ]
        if !json { print("\nGEMM (M×K×N; the backend splits it over its pool, direct cblas_sgemm uses OpenBLAS's threads)") }
        // A fresh process's first few GEMMs on the pool run slowly (threads and OpenBLAS's
        // per-thread buffers start cold): warm up before timing anything.
        let wa = try buffer(512 * 1024), wb = try buffer(1024 * 1024), wc = try buffer(512 * 1024)
        for _ in 0..<10 {
            try cpu.gemm(transA: false, transB: false, M: 512, N: 1024, K: 1024, alpha: 1, A: wa, lda: 1024, strideA: 0,
                         B: wb, ldb: 1024, strideB: 0, beta: 0, C: wc, ldc: 1024, strideC: 0, batch: 1)
        }
        for (name, M, K, N, transB) in shapes {
            let a = try buffer(M * K), b = try buffer(K * N, seed: 2), c = try buffer(M * N, seed: 3)
            let ldb = transB ? K : N
            let flop = 2.0 * Double(M) * Double(N) * Double(K) * 1e-9
            let t = try medians([
                {
                    try cpu.gemm(transA: false, transB: transB, M: M, N: N, K: K, alpha: 1, A: a, lda: K, strideA: 0,
                                 B: b, ldb: ldb, strideB: 0, beta: 0, C: c, ldc: N, strideC: 0, batch: 1)
                },
                {
                    // OpenBLAS's own threading, as a program calling it directly would use it
                    CPUBackend.setBLASThreads(cpu.threads)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, transB ? CblasTrans : CblasNoTrans, blasint(M), blasint(N),
                                blasint(K), 1, a.f32(), blasint(K), b.f32(), blasint(ldb), 0, c.f32(), blasint(N))
                },
            ], interleave: false)
            CPUBackend.setBLASThreads(1)
            Thread.sleep(forTimeInterval: 0.15)   // until OpenBLAS's threads stop spinning
            let (viaBackend, direct) = (t[0], t[1])
            let ratio = direct.median / viaBackend.median
            let shape = "\(M)×\(K)×\(N)" + (transB ? " Wᵀ" : "")
            report("gemm \(name)", shape, viaBackend, gflop: flop,
                   extra: ["direct_gflops": flop / direct.median, "direct_best_gflops": flop / direct.best, "ratio": ratio],
                   note: "direct " + fixed(flop / direct.median, 1) + " (" + fixed(flop / direct.best, 1) + "), ratio "
                       + fixed(ratio, 3) + (ratio >= 0.95 ? "" : "  below 0.95"))
        }
    }

    // MARK: attention

    func attention() throws {
        for T in [512, 2048] {
            let (B, H, KV, D) = (1, 9, 3, 64)
            let s = AttentionShape(B: B, T: T, H: H, KV: KV, D: D, ldq: (H + 2 * KV) * D, ldk: (H + 2 * KV) * D,
                                   ldv: (H + 2 * KV) * D)
            let qkv = try buffer(B * T * s.ldq), o = try buffer(B * T * H * D), lse = try buffer(B * H * T)
            let dout = try buffer(B * T * H * D, seed: 4), dqkv = try buffer(B * T * s.ldq)
            let (k, v) = (qkv.advanced(byBytes: H * D * 4), qkv.advanced(byBytes: (H + KV) * D * 4))
            let (dk, dv) = (dqkv.advanced(byBytes: H * D * 4), dqkv.advanced(byBytes: (H + KV) * D * 4))
            // Causal pairs; forward is 2 matmuls (QKᵀ, PV), backward counted as 5 (the usual
            // FlashAttention convention), 2 flops per multiply-add.
            let pairs = Double(B * H) * Double(T) * Double(T + 1) / 2
            let fwdFlop = 4 * pairs * Double(D) * 1e-9
            if !json && T == 512 { print("\nattention (B=\(B) H=\(H) KV=\(KV) D=\(D), causal; GFLOP/s counts fwd 2, bwd 5 matmuls)") }
            let fwd = try median {
                try cpu.attentionForward(q: qkv, k: k, v: v, o: o, lse: lse, docIds: nil, alibi: nil, shape: s)
            }
            let bwd = try median {
                try cpu.attentionBackward(q: qkv, k: k, v: v, o: o, dout: dout, lse: lse, docIds: nil, alibi: nil,
                                          dq: dqkv, dk: dk, dv: dv, shape: s)
            }
            let shape = "T=\(T)"
            report("attention fwd", shape, fwd, gflop: fwdFlop)
            report("attention bwd", shape, bwd, gflop: 2.5 * fwdFlop)
            report("attention fwd+bwd", shape, fwd + bwd, gflop: 3.5 * fwdFlop)
        }
    }

    /// An attention forward timed right after a GEMM, as in a decoder layer: after the
    /// backend's GEMM (split over the kernels' pool, OpenBLAS single-threaded), and after the same
    /// GEMM on OpenBLAS's own threads, which keep spinning for about 0.1 s after a call and
    /// compete with the attention's parts for the cores.
    func afterGemm() throws {
        let (M, K, N) = (512, 576, 1536)
        let (T, H, KV, D) = (512, 9, 3, 64)
        let a = try buffer(M * K), w = try buffer(N * K, seed: 2), c = try buffer(M * N)
        let s = AttentionShape(B: 1, T: T, H: H, KV: KV, D: D)
        let q = try buffer(T * H * D), k = try buffer(T * KV * D, seed: 3), v = try buffer(T * KV * D, seed: 4)
        let o = try buffer(T * H * D), lse = try buffer(H * T)
        var viaBackend: [Double] = [], viaOpenBLAS: [Double] = []
        func attend() throws -> Double {
            let t0 = DispatchTime.now().uptimeNanoseconds
            try cpu.attentionForward(q: q, k: k, v: v, o: o, lse: lse, docIds: nil, alibi: nil, shape: s)
            return Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
        }
        for _ in 0..<runs {
            try cpu.gemm(transA: false, transB: true, M: M, N: N, K: K, alpha: 1, A: a, lda: K, strideA: 0, B: w,
                         ldb: K, strideB: 0, beta: 0, C: c, ldc: N, strideC: 0, batch: 1)
            viaBackend.append(try attend())
            Thread.sleep(forTimeInterval: 0.15)
            CPUBackend.setBLASThreads(cpu.threads)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, blasint(M), blasint(N), blasint(K), 1, a.f32(),
                        blasint(K), w.f32(), blasint(K), 0, c.f32(), blasint(N))
            CPUBackend.setBLASThreads(1)
            viaOpenBLAS.append(try attend())
            Thread.sleep(forTimeInterval: 0.15)
        }
        func timing(_ t: [Double]) -> Timing { Timing(median: t.sorted()[t.count / 2], best: t.min()!) }
        if !json { print("\nattention fwd T=\(T) right after a \(M)×\(K)×\(N) GEMM: the backend's, or on OpenBLAS's threads") }
        let fwdFlop = 4 * Double(H) * Double(T) * Double(T + 1) / 2 * Double(D) * 1e-9
        report("attn after backend", "T=\(T)", timing(viaBackend), gflop: fwdFlop)
        report("attn after OpenBLAS", "T=\(T)", timing(viaOpenBLAS), gflop: fwdFlop)
    }

    // MARK: norms, swiglu

    func rmsnorm() throws {
        let (N, C) = (512, 576)
        let x = try buffer(N * C), w = try buffer(C), y = try buffer(N * C), r = try buffer(N)
        let dy = try buffer(N * C, seed: 5), dx = try buffer(N * C), dw = try buffer(C)
        if !json { print("\nrmsnorm, swiglu (GB/s = bytes a kernel must read and write once)") }
        let fwd = try median { try cpu.rmsnormForward(x: x, weight: w, y: y, rstd: r, N: N, C: C, eps: 1e-5) }
        let bwd = try median {
            try cpu.rmsnormBackward(dy: dy, x: x, weight: w, rstd: r, dx: dx, dweight: dw, N: N, C: C)
        }
        let bytes = Double(N * C * 4) * 1e-9
        report("rmsnorm fwd", "\(N)×\(C)", fwd, gbytes: 2 * bytes)
        report("rmsnorm bwd", "\(N)×\(C)", bwd, gbytes: 3 * bytes)
    }

    func swiglu() throws {
        let n = 512 * 1536
        let g = try buffer(n), u = try buffer(n, seed: 2), h = try buffer(n), dh = try buffer(n, seed: 3)
        let dg = try buffer(n), du = try buffer(n)
        let fwd = try median { try cpu.swigluForward(gate: g, up: u, h: h, count: n) }
        let bwd = try median { try cpu.swigluBackward(dh: dh, gate: g, up: u, dgate: dg, dup: du, count: n) }
        let bytes = Double(n * 4) * 1e-9
        report("swiglu fwd", "512×1536", fwd, gbytes: 3 * bytes)
        report("swiglu bwd", "512×1536", bwd, gbytes: 5 * bytes)
    }

    // MARK: cross-entropy

    func crossEntropy() throws {
        let (N, C, V) = (512, 576, 49152)
        let x = try buffer(N * C), w = try buffer(V * C, seed: 2), dx = try buffer(N * C), dw = try buffer(V * C)
        let targets = BufferView(try cpu.allocate(bytes: N * 4))
        for i in 0..<N { targets.i32()[i] = Int32((i * 7919) % V) }
        if !json { print("\nLM head + cross-entropy (T=\(N) C=\(C) V=\(V); 3 GEMMs = 6·N·C·V flops)") }
        let flop = 6.0 * Double(N) * Double(C) * Double(V) * 1e-9
        for chunk in [64, 128, 512] {
            cpu.resetPeakMemory()
            let before = cpu.memoryStats.currentBytes
            let t = try median {
                _ = try cpu.crossEntropyLMHead(x: x, weight: w, targets: targets, N: N, C: C, V: V, ignoreIndex: -100,
                                               chunk: chunk, gradScale: 1, dx: dx, dweight: dw)
            }
            let scratch = Double(cpu.memoryStats.peakBytes - before) / 1048576
            report("xent fwd+bwd", "chunk=\(chunk)", t, gflop: flop, extra: ["scratch_mib": scratch],
                   note: "scratch " + fixed(scratch, 1) + " MiB")
        }
        // The same three GEMMs alone: what the softmax and the chunking add on top.
        let logits = try buffer(128 * V)
        let gemmOnly = try median {
            for r0 in stride(from: 0, to: N, by: 128) {
                let xs = x.advanced(byBytes: r0 * C * 4)
                try cpu.gemm(transA: false, transB: true, M: 128, N: V, K: C, alpha: 1, A: xs, lda: C, strideA: 0, B: w,
                             ldb: C, strideB: 0, beta: 0, C: logits, ldc: V, strideC: 0, batch: 1)
                try cpu.gemm(transA: false, transB: false, M: 128, N: C, K: V, alpha: 1, A: logits, lda: V, strideA: 0,
                             B: w, ldb: C, strideB: 0, beta: 0, C: dx.advanced(byBytes: r0 * C * 4), ldc: C, strideC: 0, batch: 1)
                try cpu.gemm(transA: true, transB: false, M: V, N: C, K: 128, alpha: 1, A: logits, lda: V, strideA: 0,
                             B: xs, ldb: C, strideB: 0, beta: 1, C: dw, ldc: C, strideC: 0, batch: 1)
            }
        }
        report("xent GEMMs only", "chunk=128", gemmOnly, gflop: flop)
    }
}

/// x with `digits` decimals (no String(format:), which pulls ICU into static builds).
func fixed(_ x: Double, _ digits: Int) -> String {
    guard x.isFinite else { return "\(x)" }
    let scale = (0..<digits).reduce(1.0) { a, _ in a * 10 }
    let r = (abs(x) * scale).rounded()
    let whole = Int(r / scale), frac = Int(r - Double(whole) * scale)
    var f = String(frac)
    while f.count < digits { f = "0" + f }
    return (x < 0 && r > 0 ? "-" : "") + String(whole) + (digits > 0 ? "." + f : "")
}

func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
