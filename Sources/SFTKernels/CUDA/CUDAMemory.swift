// Device memory for the CUDA backend: a caching allocator over cuMemAlloc (plain device
// memory, never managed memory) with the CPU allocator's size classes and statistics, and
// pinned host buffers that stage transfers so uploads return before the copy finishes.
//
// Reuse is safe without waiting: every op of a backend runs on its one stream, so work that
// gets a reused block is ordered after all work that used it before.

import CSFTKernels
import Foundation

final class CUDAAllocator: @unchecked Sendable {
    private let lock = NSLock()
    private var bins: [Int: [sft_CUdeviceptr]] = [:]
    private var stats = MemoryStats()
    let device: Device
    /// Waits for the stream before memory goes back to the driver.
    var synchronize: () -> Void = {}

    init(device: Device) { self.device = device }

    func allocate(bytes: Int, bind: () throws -> Void) throws -> Buffer {
        guard bytes >= 0 else {
            throw KernelError.invalidArgument(op: "allocate", message: "negative size \(bytes) bytes")
        }
        let size = CPUAllocator.sizeClass(bytes)
        let ptr = try take(size: size, bind: bind)
        return Buffer(device: device, bytes: bytes, address: UnsafeMutableRawPointer(bitPattern: UInt(ptr))!) {
            [self] address, bytes in
            give(sft_CUdeviceptr(UInt(bitPattern: address)), size: CPUAllocator.sizeClass(bytes))
        }
    }

    private func take(size: Int, bind: () throws -> Void) throws -> sft_CUdeviceptr {
        lock.lock()
        if let p = bins[size]?.popLast() {
            stats.cachedBytes -= size
            account(size)
            lock.unlock()
            return p
        }
        lock.unlock()
        try bind()
        var p: sft_CUdeviceptr = 0
        var r = sft_cuMemAlloc(&p, size)
        if r == Int32(SFT_CUDA_ERROR_OUT_OF_MEMORY) {
            // Blocks parked in the cache may be what is missing: give them back, try once more.
            emptyCache()
            r = sft_cuMemAlloc(&p, size)
        }
        if r == Int32(SFT_CUDA_ERROR_OUT_OF_MEMORY) { throw KernelError.outOfMemory(device: device, bytes: size) }
        if r != 0 { throw KernelError.native(op: "cuMemAlloc(\(size) bytes)", message: cudaErrorText(r)) }
        lock.lock()
        account(size)
        lock.unlock()
        return p
    }

    private func account(_ size: Int) {
        stats.currentBytes += size
        stats.peakBytes = max(stats.peakBytes, stats.currentBytes)
    }

    private func give(_ p: sft_CUdeviceptr, size: Int) {
        lock.lock()
        bins[size, default: []].append(p)
        stats.currentBytes -= size
        stats.cachedBytes += size
        lock.unlock()
    }

    /// Frees every cached block (after the stream has finished with them).
    func emptyCache() {
        synchronize()
        lock.lock()
        let all = bins
        bins = [:]
        stats.cachedBytes = 0
        lock.unlock()
        for (_, blocks) in all { for p in blocks { _ = sft_cuMemFree(p) } }
    }

    var memoryStats: MemoryStats {
        lock.lock()
        defer { lock.unlock() }
        return stats
    }

    func resetPeak() {
        lock.lock()
        stats.peakBytes = stats.currentBytes
        lock.unlock()
    }
}

/// Pinned host buffers (cuMemAllocHost) that transfers go through in chunks. Each slot has an
/// event recorded after the copy that reads or writes it; a slot is reused only once its event
/// has completed. Two slots let the CPU fill one while the GPU copies the other.
final class PinnedStaging: @unchecked Sendable {
    static let slotBytes = 8 << 20
    private struct Slot {
        var host: UnsafeMutableRawPointer
        var event: sft_CUevent?
        var pending = false
    }
    private var slots: [Slot] = []
    private var next = 0
    private let lock = NSLock()

    init() throws {
        for _ in 0..<2 {
            var host: UnsafeMutableRawPointer?
            try check(sft_cuMemAllocHost(&host, Self.slotBytes), "cuMemAllocHost")
            var event: sft_CUevent?
            try check(sft_cuEventCreate(&event, UInt32(SFT_CU_EVENT_DISABLE_TIMING)), "cuEventCreate")
            slots.append(Slot(host: host!, event: event))
        }
    }

    private func check(_ r: sft_CUresult, _ what: String) throws {
        if r != 0 { throw KernelError.native(op: what, message: cudaErrorText(r)) }
    }

    private func wait(_ i: Int) throws {
        if slots[i].pending {
            try check(sft_cuEventSynchronize(slots[i].event), "cuEventSynchronize")
            slots[i].pending = false
        }
    }

    /// Copies host memory to the device on `stream`; returns once the data is staged.
    func upload(_ src: UnsafeRawPointer, to dst: sft_CUdeviceptr, bytes: Int, stream: sft_CUstream?) throws {
        lock.lock()
        defer { lock.unlock() }
        var done = 0
        while done < bytes {
            let n = min(Self.slotBytes, bytes - done), i = next
            next = (next + 1) % slots.count
            try wait(i)
            slots[i].host.copyMemory(from: src + done, byteCount: n)
            try check(sft_cuMemcpyHtoDAsync(dst + sft_CUdeviceptr(done), slots[i].host, n, stream), "cuMemcpyHtoDAsync")
            try check(sft_cuEventRecord(slots[i].event, stream), "cuEventRecord")
            slots[i].pending = true
            done += n
        }
    }

    /// Copies device memory to the host after all work enqueued on `stream`; returns with the
    /// data in `dst`. Chunk k+1's copy runs while chunk k is copied out of its slot.
    func download(_ src: sft_CUdeviceptr, to dst: UnsafeMutableRawPointer, bytes: Int, stream: sft_CUstream?) throws {
        lock.lock()
        defer { lock.unlock() }
        var queued: [(slot: Int, offset: Int, count: Int)] = []
        var offset = 0
        func enqueue() throws {
            let n = min(Self.slotBytes, bytes - offset), i = next
            next = (next + 1) % slots.count
            try wait(i)
            try check(sft_cuMemcpyDtoHAsync(slots[i].host, src + sft_CUdeviceptr(offset), n, stream), "cuMemcpyDtoHAsync")
            try check(sft_cuEventRecord(slots[i].event, stream), "cuEventRecord")
            slots[i].pending = true
            queued.append((i, offset, n))
            offset += n
        }
        while offset < bytes && queued.count < slots.count { try enqueue() }
        while !queued.isEmpty {
            let c = queued.removeFirst()
            try wait(c.slot)
            (dst + c.offset).copyMemory(from: slots[c.slot].host, byteCount: c.count)
            if offset < bytes { try enqueue() }
        }
    }
}
