// The CUDA kernels' logic checked without a GPU: their sources (from CUDAKernels, as the backend
// compiles them) are built as C++ with tools/cuda-emulate/emu.h — a std::thread per CUDA thread,
// barriers for __syncthreads and warp shuffles — and run on small shapes against the C kernels
// of CSFTKernels (tools/cuda-emulate/check.cpp): attention forward/backward with documents,
// ALiBi, GQA, fused qkv strides and every head-dim class, cached attention, norms with their
// column sums, RoPE, cross-entropy rows, embedding, dropout, casts, sum of squares, multi-tensor
// AdamW. Needs clang++ (the Swift toolchain has it); skipped with the reason where missing.

import Foundation
import SFTKernels
import XCTest

final class CUDAKernelEmulationTests: XCTestCase {
    /// Runs a program; returns (exit status, stdout + stderr).
    private func run(_ args: [String], in dir: URL) throws -> (Int32, String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        p.currentDirectoryURL = dir
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testKernelSourcesComputeWhatTheCKernelsCompute() throws {
        let fm = FileManager.default
        let work = fm.temporaryDirectory.appendingPathComponent("sft-cuda-emulate-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: work) }
        guard let (status, _) = try? run(["clang++", "--version"], in: work), status == 0 else {
            print("CUDAKernelEmulationTests skipped: clang++ not found on PATH")
            throw XCTSkip("clang++ not found on PATH")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let csrc = root.appendingPathComponent("Sources/CSFTKernels")
        let tool = root.appendingPathComponent("tools/cuda-emulate")
        guard fm.fileExists(atPath: tool.appendingPathComponent("check.cpp").path) else {
            throw XCTSkip("tools/cuda-emulate/check.cpp not found next to the tests (\(tool.path))")
        }
        for module in CUDAKernels.all {
            try module.source.replacingOccurrences(of: "extern \"C\" ", with: "")
                .write(to: work.appendingPathComponent("\(module.name).cu"), atomically: true, encoding: .utf8)
        }
        var objects: [String] = []
        for c in ["attention", "attention_cached", "norm", "rope", "elementwise", "embedding", "xent", "adamw", "swiglu", "gelu", "clamp", "status"] {
            let (s, out) = try run(["clang", "-O2", "-c", "-I", csrc.appendingPathComponent("include").path, "-I", csrc.path,
                                    csrc.appendingPathComponent("\(c).c").path, "-o", "\(c).o"], in: work)
            XCTAssertEqual(s, 0, "compiling \(c).c: \(out)")
            objects.append("\(c).o")
        }
        let (cs, cout) = try run(["clang++", "-std=c++20", "-O1", "-pthread", "-w", "-I", work.path, "-I", tool.path, "-I",
                                  csrc.appendingPathComponent("include").path, tool.appendingPathComponent("check.cpp").path]
                                 + objects + ["-lm", "-o", "check"], in: work)
        guard cs == 0 else { return XCTFail("the emulated kernels do not build:\n\(cout)") }
        let (rs, rout) = try run(["./check"], in: work)
        print(rout)
        XCTAssertEqual(rs, 0, "emulated CUDA kernels differ from the C kernels:\n" + rout.split(separator: "\n").filter { $0.contains("FAIL") }.joined(separator: "\n"))
    }
}
