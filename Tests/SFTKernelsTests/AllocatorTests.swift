// The CPU caching allocator and the backend accessor: alignment, current/peak/cached bytes,
// reuse of released blocks, resetPeakMemory, emptyCache; backend(for:) answers for cpu and
// explains why cuda is unavailable.

import SFTKernels
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
        XCTAssertThrowsError(try backend(for: .cuda(0))) { error in
            guard case KernelError.backendUnavailable(.cuda(0), let reason) = error else { return XCTFail("\(error)") }
            XCTAssertFalse(reason.isEmpty)
        }
        XCTAssertEqual(try Device(parsing: "cuda:1"), .cuda(1))
        XCTAssertThrowsError(try Device(parsing: "tpu"))
        XCTAssertTrue(CPUBackend.supportedInstructionSets.contains(CPUBackend.instructionSet))
        XCTAssertEqual(CPUBackend.supportedInstructionSets.last, "generic")
    }
}
