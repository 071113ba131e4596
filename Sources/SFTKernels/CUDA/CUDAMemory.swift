// Device memory for the CUDA backend: the caching allocator (CachingAllocator.swift) over
// cuMemAlloc (plain device memory, never managed memory), and pinned host buffers that stage
// transfers so uploads return before the copy finishes.
//
// Reuse is safe without waiting: every op of a backend runs on its one stream, so work that
// gets a reused block is ordered after all work that used it before.

import CSFTKernels
import Foundation

extension CachingAllocator {
    /// Device memory from cuMemAlloc in `context`, made current first (ops may come from any thread).
    static func cuda(_ device: Device, context: sft_CUcontext) -> CachingAllocator {
        CachingAllocator(device: device, allocate: { size in
            var r = sft_cuCtxSetCurrent(context)
            if r != 0 { throw KernelError.native(op: "cuCtxSetCurrent", message: cudaErrorText(r)) }
            var p: sft_CUdeviceptr = 0
            r = sft_cuMemAlloc(&p, size)
            if r == Int32(SFT_CUDA_ERROR_OUT_OF_MEMORY) { return nil }
            if r != 0 { throw KernelError.native(op: "cuMemAlloc(\(size) bytes)", message: cudaErrorText(r)) }
            return UnsafeMutableRawPointer(bitPattern: UInt(p))!
        }, free: { _ = sft_cuMemFree(sft_CUdeviceptr(UInt(bitPattern: $0))) })
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
