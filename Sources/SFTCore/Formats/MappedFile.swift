// A read-only memory mapping of a whole file (mmap via Glibc), and a bounds-checked cursor over
// it. The weight readers (GGUF, safetensors) keep one MappedFile alive for as long as they hand
// out pointers into it; every read goes through `ByteCursor`, which checks each offset and
// length against the end of the mapping with overflow-safe arithmetic, so a malformed file
// throws `SFTError.format` (naming the file and byte offset) instead of reading past the end.
import Foundation
import SFTKernels
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A file mapped read-only into memory. The mapping lives as long as this object.
final class MappedFile: @unchecked Sendable {
    /// The file's path (for error messages).
    public let path: String
    /// The mapped bytes (empty for an empty file).
    public let bytes: UnsafeRawBufferPointer

    /// Maps `url` read-only. Throws `SFTError.io` naming the file when it cannot be opened.
    public init(url: URL) throws {
        path = url.path
        let fd = open(path, O_RDONLY)
        guard fd >= 0 else {
            throw SFTError.io(path: path, message: "cannot open (\(String(cString: strerror(errno))))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else {
            throw SFTError.io(path: path, message: "cannot stat (\(String(cString: strerror(errno))))")
        }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw SFTError.io(path: path, message: "not a regular file")
        }
        let size = Int(st.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let p = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), p != MAP_FAILED else {
            throw SFTError.io(path: path, message: "cannot map \(size) bytes (\(String(cString: strerror(errno))))")
        }
        bytes = UnsafeRawBufferPointer(start: p, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Gives back the resident pages of the mapping (they stop counting in the process's RSS);
    /// the mapping stays valid and a later read faults them in again from the file.
    public func releaseResidentPages() {
        if let base = bytes.baseAddress { _ = madvise(UnsafeMutableRawPointer(mutating: base), bytes.count, Int32(MADV_DONTNEED)) }
    }

    /// The bytes in `offset ..< offset + count`, after checking they lie inside the file.
    public func slice(offset: Int, count: Int) throws -> UnsafeRawBufferPointer {
        guard offset >= 0, count >= 0, offset <= bytes.count, count <= bytes.count - offset else {
            throw SFTError.format(path: path, offset: offset,
                                  message: "range of \(count) bytes runs past the end of the file (\(bytes.count) bytes)")
        }
        return UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + count])
    }
}

/// A little-endian reader over a byte range that checks every access.
struct ByteCursor {
    let bytes: UnsafeRawBufferPointer
    let path: String
    /// Absolute offset of the next read.
    var offset: Int

    init(_ bytes: UnsafeRawBufferPointer, path: String, offset: Int = 0) {
        self.bytes = bytes; self.path = path; self.offset = offset
    }

    var remaining: Int { bytes.count - offset }

    func error(_ message: String, at: Int? = nil) -> SFTError {
        .format(path: path, offset: at ?? offset, message: message)
    }

    /// Checks that `count` bytes (a UInt64 from the file) can be read here; returns it as Int.
    mutating func need(_ count: UInt64, _ what: @autoclosure () -> String) throws -> Int {
        guard count <= UInt64(remaining) else {
            throw error("\(what()): needs \(count) bytes but only \(remaining) remain (file truncated?)")
        }
        return Int(count)
    }

    mutating func read<T: FixedWidthInteger>(_: T.Type, _ what: @autoclosure () -> String) throws -> T {
        let n = try need(UInt64(MemoryLayout<T>.size), what())
        let v = bytes.loadUnaligned(fromByteOffset: offset, as: T.self)
        offset += n
        return T(littleEndian: v)
    }

    mutating func bytes(_ count: Int, _ what: @autoclosure () -> String) throws -> UnsafeRawBufferPointer {
        let n = try need(UInt64(count), what())
        let r = UnsafeRawBufferPointer(rebasing: bytes[offset ..< offset + n])
        offset += n
        return r
    }
}
