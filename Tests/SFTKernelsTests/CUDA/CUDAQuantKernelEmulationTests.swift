// The 4-bit CUDA kernels (CUDAKernels.quant) checked without a GPU: their source, as the
// backend compiles it, is built as C++ with tools/cuda-emulate/emu.h and run against the C
// kernels of quant_nf4.c by tools/cuda-emulate/check_quant.cpp — tile decoding and the
// double-quantized absmax bit for bit, the matrix-vector product to rounding. Needs clang++
// (the Swift toolchain has it); skipped with the reason where missing.

import Foundation
import SFTKernels
import XCTest

final class CUDAQuantKernelEmulationTests: XCTestCase {
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

    func testQuantKernelSourcesComputeWhatTheCKernelsCompute() throws {
        let fm = FileManager.default
        let work = fm.temporaryDirectory.appendingPathComponent("sft-cuda-quant-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try fm.createDirectory(at: work, withIntermediateDirectories: true)
        defer { try? fm.removeItem(at: work) }
        guard let (status, _) = try? run(["clang++", "--version"], in: work), status == 0 else {
            throw XCTSkip("clang++ not found on PATH")
        }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        let csrc = root.appendingPathComponent("Sources/CSFTKernels")
        let tool = root.appendingPathComponent("tools/cuda-emulate")
        for file in ["check_quant.cpp", "emu.h"] where !fm.fileExists(atPath: tool.appendingPathComponent(file).path) {
            throw XCTSkip("tools/cuda-emulate/\(file) not found next to the tests (\(tool.path))")
        }
        try CUDAKernels.quant.source.replacingOccurrences(of: "extern \"C\" ", with: "")
            .write(to: work.appendingPathComponent("quant.cu"), atomically: true, encoding: .utf8)
        var objects: [String] = []
        for c in ["quant_nf4", "status"] {
            let (s, out) = try run(["clang", "-O2", "-c", "-I", csrc.appendingPathComponent("include").path, "-I", csrc.path,
                                    csrc.appendingPathComponent("\(c).c").path, "-o", "\(c).o"], in: work)
            XCTAssertEqual(s, 0, "compiling \(c).c: \(out)")
            objects.append("\(c).o")
        }
        let (cs, cout) = try run(["clang++", "-std=c++20", "-O1", "-pthread", "-w", "-I", work.path, "-I", tool.path, "-I",
                                  csrc.appendingPathComponent("include").path, tool.appendingPathComponent("check_quant.cpp").path]
                                 + objects + ["-lm", "-o", "check_quant"], in: work)
        guard cs == 0 else { return XCTFail("the emulated 4-bit kernels do not build:\n\(cout)") }
        let (rs, rout) = try run(["./check_quant"], in: work)
        print(rout)
        XCTAssertTrue(rout.contains("all checks passed"), rout)
        XCTAssertEqual(rs, 0, "emulated 4-bit CUDA kernels differ from the C kernels:\n"
                       + rout.split(separator: "\n").filter { $0.contains("FAIL") }.joined(separator: "\n"))
    }
}
