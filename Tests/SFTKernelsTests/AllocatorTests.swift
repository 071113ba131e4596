// The CPU caching allocator and the backend accessor: alignment, current/peak/cached bytes,
// reuse of released blocks, resetPeakMemory, emptyCache; backend(for:) answers for cpu and
// explains why cuda is unavailable.

import SFTKernels
import Synchronization
import XCTest

final class AllocatorTests: XCTestCase {
    func testStatsTrackPeakAndCacheReuse() throws {
        let cpu = CPUBackend()   // a fresh allocator, so the counts are only this test's
        XCTAssertEqual(cpu.memoryStats, MemoryStats())
        var a: Buffer? = try cpu.allocate(bytes: 1000)
        let address = a!.address
        XCTAssertEqual(Int(bitPattern: address) % 64, 0, "64-byte aligned")
        XCTAssertEqual(a!.bytes, 1000)
        XCTAssertEqual(cpu.memoryStats.currentBytes, 1024, "1000 bytes come from the 1024-byte class")
        var b: Buffer? = try cpu.allocate(bytes: 10_000)
        let both = cpu.memoryStats.currentBytes
        XCTAssertGreaterThanOrEqual(both, 1024 + 10_000)
        XCTAssertLessThanOrEqual(both, 1024 + 12_500, "at most 25% rounding")
        XCTAssertEqual(cpu.memoryStats.peakBytes, both)

        b = nil
        XCTAssertEqual(cpu.memoryStats.currentBytes, 1024)
        XCTAssertEqual(cpu.memoryStats.peakBytes, both, "peak remembers")
        XCTAssertEqual(cpu.memoryStats.cachedBytes, both - 1024)
        cpu.resetPeakMemory()
        XCTAssertEqual(cpu.memoryStats.peakBytes, 1024)

        a = nil
        let again = try cpu.allocate(bytes: 1010)   // same size class: the cached block comes back
        XCTAssertEqual(again.address, address)
        XCTAssertEqual(cpu.memoryStats.currentBytes, 1024)
        XCTAssertEqual(cpu.memoryStats.cachedBytes, both - 1024)
        cpu.emptyCache()
        XCTAssertEqual(cpu.memoryStats.cachedBytes, 0)
        XCTAssertEqual(cpu.memoryStats.currentBytes, 1024)
        _ = b
        XCTAssertThrowsError(try cpu.allocate(bytes: -1))
    }

    func testTransfersCheckBounds() throws {
        let cpu = CPUBackend.shared
        let buf = BufferView(try cpu.allocate(bytes: 16))
        var src: [UInt8] = Array(0..<32)
        XCTAssertThrowsError(try cpu.upload(&src, to: buf, bytes: 17)) { XCTAssertTrue("\($0)".hasPrefix("upload:"), "\($0)") }
        try cpu.upload(&src, to: buf.advanced(byBytes: 8), bytes: 8)
        var dst = [UInt8](repeating: 0, count: 8)
        try cpu.download(buf.advanced(byBytes: 8), to: &dst, bytes: 8)
        XCTAssertEqual(dst, Array(0..<8))
        let other = BufferView(try cpu.allocate(bytes: 8))
        try cpu.copy(buf.advanced(byBytes: 8), to: other, bytes: 8)
        try cpu.download(other, to: &dst, bytes: 8)
        XCTAssertEqual(dst, Array(0..<8))
        try cpu.synchronize()
    }

    func testBackendForDevice() throws {
        XCTAssertTrue(try backend(for: .cpu) === CPUBackend.shared)
        // One past the last GPU (cuda:0 without one; CI has the emulated GPU as cuda:0).
        let missing = Device.cuda(CUDAStatus.current.gpus.count)
        XCTAssertThrowsError(try backend(for: missing)) { error in
            guard case KernelError.backendUnavailable(missing, let reason) = error else { return XCTFail("\(error)") }
            XCTAssertFalse(reason.isEmpty)
        }
        XCTAssertEqual(try Device(parsing: "cuda:1"), .cuda(1))
        XCTAssertThrowsError(try Device(parsing: "tpu"))
        XCTAssertTrue(CPUBackend.supportedInstructionSets.contains(CPUBackend.instructionSet))
        XCTAssertEqual(CPUBackend.supportedInstructionSets.last, "generic")
    }
}

/// The kernels' thread pool, through the backend: ops issued from several threads at once
/// (only one uses the pool at a time; the others run their parts on their own thread) all
/// give the right answer.
final class ThreadPoolTests: XCTestCase {
    func testConcurrentOpsFromManyThreads() throws {
        let cpu = CPUBackend.shared
        let n = 300_000
        var rng = RNG(90)
        let g = rng.floats(n, scale: 4), u = rng.floats(n)
        let want = Ref.swiglu(g.doubles, u.doubles)
        let vg = try Dev.upload(g), vu = try Dev.upload(u)
        let outs = try (0..<6).map { _ in try Dev.zeros(n) }
        let failed = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 6) { t in
            for _ in 0..<20 {
                do { try cpu.swigluForward(gate: vg, up: vu, h: outs[t], count: n) } catch {
                    failed.withLock { $0.append("\(error)") }
                }
            }
        }
        XCTAssertEqual(failed.withLock { $0 }, [])
        for t in 0..<6 { assertClose(try Dev.floats(outs[t], n), want, rtol: 2e-6, atol: 1e-7, "thread \(t)") }
    }
}
