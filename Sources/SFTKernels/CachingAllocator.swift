// The caching allocator of every backend: blocks in size classes, kept in per-class bins when
// released so a training step that allocates the same shapes again reuses them instead of going
// back to the system (malloc, cuMemAlloc). Records current, peak and cached bytes. A backend
// gives it the system's allocate and free; `host()` is the CPU backend's: 64-byte aligned
// blocks (one cache line, the widest vector load).

import Foundation

final class CachingAllocator: @unchecked Sendable {
    static let alignment = 64

    let device: Device
    /// `size` bytes from the system, or nil when it is out of memory.
    private let systemAllocate: (_ size: Int) throws -> UnsafeMutableRawPointer?
    private let systemFree: (UnsafeMutableRawPointer) -> Void
    /// Waits for the device before cached blocks go back to the system (CUDA: the stream).
    var synchronize: () -> Void = {}
    private let lock = NSLock()
    private var bins: [Int: [UnsafeMutableRawPointer]] = [:]
    private var stats = MemoryStats()

    init(device: Device, allocate: @escaping (_ size: Int) throws -> UnsafeMutableRawPointer?,
         free: @escaping (UnsafeMutableRawPointer) -> Void) {
        self.device = device
        self.systemAllocate = allocate
        self.systemFree = free
    }

    /// Host memory from posix_memalign, 64-byte aligned.
    static func host() -> CachingAllocator {
        CachingAllocator(device: .cpu, allocate: { size in
            var p: UnsafeMutableRawPointer?
            return posix_memalign(&p, alignment, size) == 0 ? p : nil
        }, free: { Foundation.free($0) })
    }

    /// The block size a request is served from: multiples of 64 bytes up to 4 KiB, above that
    /// four classes per power of two, so at most 25% of a block is unused.
    static func sizeClass(_ bytes: Int) -> Int {
        let b = max(bytes, alignment)
        if b <= 4096 { return (b + alignment - 1) / alignment * alignment }
        let top = 1 << (Int.bitWidth - 1 - b.leadingZeroBitCount)   // largest power of 2 <= b
        let step = top / 4
        return (b + step - 1) / step * step
    }

    func allocate(bytes: Int) throws -> Buffer {
        guard bytes >= 0 else {
            throw KernelError.invalidArgument(op: "allocate", message: "negative size \(bytes) bytes")
        }
        let size = Self.sizeClass(bytes)
        let address = try take(size: size)
        return Buffer(device: device, bytes: bytes, address: address) { [self] address, bytes in
            give(address, size: Self.sizeClass(bytes))
        }
    }

    private func take(size: Int) throws -> UnsafeMutableRawPointer {
        lock.lock()
        if let p = bins[size]?.popLast() {
            stats.cachedBytes -= size
            account(size)
            lock.unlock()
            return p
        }
        lock.unlock()
        if let p = try systemAllocate(size) { lockedAccount(size); return p }
        // Out of memory with blocks parked in the cache: give them back and try once more.
        emptyCache()
        if let p = try systemAllocate(size) { lockedAccount(size); return p }
        throw KernelError.outOfMemory(device: device, bytes: size)
    }

    private func account(_ size: Int) {
        stats.currentBytes += size
        stats.peakBytes = max(stats.peakBytes, stats.currentBytes)
    }

    private func lockedAccount(_ size: Int) {
        lock.lock()
        account(size)
        lock.unlock()
    }

    private func give(_ address: UnsafeMutableRawPointer, size: Int) {
        lock.lock()
        bins[size, default: []].append(address)
        stats.currentBytes -= size
        stats.cachedBytes += size
        lock.unlock()
    }

    /// Frees every cached block (after the device has finished with them).
    func emptyCache() {
        synchronize()
        lock.lock()
        let all = bins
        bins = [:]
        stats.cachedBytes = 0
        lock.unlock()
        for (_, blocks) in all { for p in blocks { systemFree(p) } }
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
