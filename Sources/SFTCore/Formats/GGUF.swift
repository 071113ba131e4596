// GGUF reader (versions 2 and 3, little-endian), following the GGUF specification in the ggml
// repository (docs/gguf.md): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
// then typed key/value pairs, then tensor infos (name, dims with ne0 first, GGML type, offset
// relative to the data section), then the data section at the next multiple of
// `general.alignment` (default 32).
//
// The file is memory-mapped and stays mapped while the GGUFFile lives; `rawBytes(of:)` hands
// out views into it. Every count, length and offset is checked against the end of the file
// with overflow-safe arithmetic before use, so a malformed file throws `SFTError.format`
// naming the file, the byte offset and the problem.
import Foundation
import SFTKernels
import Synchronization

/// A GGUF metadata value. Integers keep their stored width; use the accessors to read them.
public indirect enum GGUFValue: Sendable, Equatable, CustomStringConvertible {
    /// An integer of GGUF's stored width and signedness (type ids 0–5).
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    /// A 64-bit integer (ids 10, 11), a float (ids 6, 12) or a bool (id 7), as stored.
    case uint64(UInt64), int64(Int64), float32(Float), float64(Double), bool(Bool)
    /// A UTF-8 string (type id 8).
    case string(String)
    /// An array with its declared element type id (elements all have that type).
    case array(elementType: UInt32, [GGUFValue])

    /// Any integer value that fits in Int (bools are not integers).
    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }
    /// A float value, or an integer value converted to Double.
    public var float: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }
    /// The value when it is `.bool`, else nil.
    public var bool: Bool? { if case .bool(let v) = self { return v }; return nil }
    /// The value when it is `.string`, else nil.
    public var string: String? { if case .string(let v) = self { return v }; return nil }
    /// The elements when it is `.array`, else nil.
    public var array: [GGUFValue]? { if case .array(_, let v) = self { return v }; return nil }
    /// The array as strings (nil unless every element is a string).
    public var strings: [String]? {
        guard let a = array else { return nil }
        var out: [String] = []; out.reserveCapacity(a.count)
        for v in a { guard let s = v.string else { return nil }; out.append(s) }
        return out
    }
    /// The array as integers (nil unless every element is an integer).
    public var ints: [Int]? {
        guard let a = array else { return nil }
        var out: [Int] = []; out.reserveCapacity(a.count)
        for v in a { guard let s = v.int else { return nil }; out.append(s) }
        return out
    }
    /// The array as floats (nil unless every element is a number).
    public var floats: [Float]? {
        guard let a = array else { return nil }
        var out: [Float] = []; out.reserveCapacity(a.count)
        for v in a { guard let s = v.float else { return nil }; out.append(Float(s)) }
        return out
    }

    /// GGUF's name of the value type ("uint32", "string", "array[string]").
    public var typeName: String {
        switch self {
        case .uint8: return "uint8"
        case .int8: return "int8"
        case .uint16: return "uint16"
        case .int16: return "int16"
        case .uint32: return "uint32"
        case .int32: return "int32"
        case .uint64: return "uint64"
        case .int64: return "int64"
        case .float32: return "float32"
        case .float64: return "float64"
        case .bool: return "bool"
        case .string: return "string"
        case .array(let t, _): return "array[\(GGUFValue.typeName(id: t))]"
        }
    }

    static func typeName(id: UInt32) -> String {
        let names = ["uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
                     "string", "array", "uint64", "int64", "float64"]
        return id < names.count ? names[Int(id)] : "type \(id)"
    }

    public var description: String {
        switch self {
        case .string(let s): return s.debugDescription
        case .array(_, let a):
            let head = a.prefix(8).map(\.description).joined(separator: ", ")
            return a.count > 8 ? "[\(head), ... (\(a.count) items)]" : "[\(head)]"
        case .bool(let b): return String(b)
        case .float32(let v): return String(v)
        case .float64(let v): return String(v)
        default: return String(int ?? 0)
        }
    }
}

/// One tensor's entry in a GGUF file.
public struct GGUFTensorInfo: Sendable, Equatable {
    /// The GGUF name (`blk.0.attn_q.weight`).
    public let name: String
    /// Dimensions in GGUF order: ne0 (the contiguous, fastest-varying one) first.
    public let dims: [Int]
    /// Row-major (HF/PyTorch) shape: `dims` reversed, e.g. [out_features, in_features].
    public var shape: [Int] { dims.reversed() }
    /// The storage type (F32, F16, BF16, Q4_0, Q4_1, Q8_0, ...).
    public let type: GGMLType
    /// Byte offset of the data from the start of the file.
    public let offset: Int
    /// Bytes of data.
    public let byteCount: Int
    /// Number of elements (product of dims).
    public let elementCount: Int
}

/// A memory-mapped GGUF file: metadata, tensor infos and access to tensor data.
///
/// ```swift
/// let gguf = try GGUFFile(url: Assets.smolLM2)
/// let layers = gguf.metadata["llama.block_count"]?.int      // 30
/// let embed = try gguf.dequantize(gguf.tensor(named: "token_embd.weight")!)
/// ```
public final class GGUFFile: @unchecked Sendable {
    /// The file's location.
    public let url: URL
    /// The format version (2 or 3).
    public let version: Int
    /// Every metadata key/value pair (`general.architecture`, `llama.block_count`,
    /// `tokenizer.ggml.tokens`...).
    public let metadata: [String: GGUFValue]
    /// Metadata keys in file order.
    public let metadataKeys: [String]
    /// Tensor infos in file order.
    public let tensors: [GGUFTensorInfo]
    /// `general.alignment`, or 32.
    public let alignment: Int
    /// Absolute byte offset of the data section.
    public let dataOffset: Int
    private let file: MappedFile
    private let index: [String: Int]

    /// Gives back the mapping's resident pages (see `MappedFile.releaseResidentPages`).
    public func releaseResidentPages() { file.releaseResidentPages() }

    /// Deepest nesting of arrays accepted (guards the parser's recursion).
    static let maxArrayDepth = 16

    /// Maps and parses `url`. Throws `SFTError.io` when it cannot be read and
    /// `SFTError.format` (file, byte offset, problem) when it is not a valid GGUF file.
    public init(url: URL) throws {
        self.url = url
        file = try MappedFile(url: url)
        let path = url.path
        var c = ByteCursor(file.bytes, path: path)
        guard file.bytes.count >= 4 else { throw c.error("file too short to be GGUF (\(file.bytes.count) bytes)", at: 0) }
        let magic = try c.bytes(4, "magic")
        guard Array(magic) == Array("GGUF".utf8) else {
            let shown = magic.map { $0 >= 32 && $0 < 127 ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
            throw c.error("bad magic '\(shown)', expected 'GGUF'", at: 0)
        }
        let v = try c.read(UInt32.self, "version")
        if v & 0xFFFF == 0 && v >> 16 != 0 {
            throw c.error("big-endian GGUF (version field \(v.byteSwapped) byte-swapped) is not supported", at: 4)
        }
        guard v == 2 || v == 3 else { throw c.error("unsupported GGUF version \(v) (sft reads 2 and 3)", at: 4) }
        version = Int(v)
        let nTensors = try c.read(UInt64.self, "tensor count")
        let nKV = try c.read(UInt64.self, "metadata count")
        // Each key/value takes at least 12 bytes and each tensor info at least 24: reject
        // absurd counts before reserving anything.
        guard nKV <= UInt64(c.remaining / 12) else {
            throw c.error("metadata count \(nKV) cannot fit in the remaining \(c.remaining) bytes", at: 16)
        }

        var meta: [String: GGUFValue] = [:]
        var keys: [String] = []
        keys.reserveCapacity(Int(nKV))
        for _ in 0 ..< Int(nKV) {
            let keyAt = c.offset
            let key = try Self.readString(&c, "metadata key", strict: true)
            let type = try c.read(UInt32.self, "value type of '\(key)'")
            let value = try Self.readValue(&c, type: type, key: key, depth: 0)
            guard meta[key] == nil else { throw c.error("duplicate metadata key '\(key)'", at: keyAt) }
            meta[key] = value
            keys.append(key)
        }
        metadata = meta
        metadataKeys = keys

        var align = 32
        if let a = meta["general.alignment"] {
            guard let n = a.int, n > 0, n & (n - 1) == 0, n <= 1 << 20 else {
                throw SFTError.format(path: path, offset: nil, message: "general.alignment \(a) is not a power of two")
            }
            align = n
        }
        alignment = align

        guard nTensors <= UInt64(c.remaining / 24) else {
            throw c.error("tensor count \(nTensors) cannot fit in the remaining \(c.remaining) bytes")
        }
        struct Raw { let name: String; let dims: [Int]; let type: GGMLType; let rel: UInt64; let at: Int }
        var raws: [Raw] = []
        raws.reserveCapacity(Int(nTensors))
        for i in 0 ..< Int(nTensors) {
            let at = c.offset
            let name = try Self.readString(&c, "name of tensor \(i)", strict: true)
            let nd = try c.read(UInt32.self, "dimension count of '\(name)'")
            guard nd >= 1 && nd <= 4 else {
                throw c.error("tensor '\(name)': \(nd) dimensions (GGML allows 1 to 4)", at: c.offset - 4)
            }
            var dims: [Int] = []
            for d in 0 ..< Int(nd) {
                let n = try c.read(UInt64.self, "dimension \(d) of '\(name)'")
                guard n <= UInt64(Int32.max) * 64 else {
                    throw c.error("tensor '\(name)': dimension \(d) is \(n), too large", at: c.offset - 8)
                }
                dims.append(Int(n))
            }
            let type = GGMLType(rawValue: try c.read(UInt32.self, "type of '\(name)'"))
            let rel = try c.read(UInt64.self, "offset of '\(name)'")
            raws.append(Raw(name: name, dims: dims, type: type, rel: rel, at: at))
        }
        let infoEnd = c.offset
        let (padded, o1) = infoEnd.addingReportingOverflow(align - 1)
        precondition(!o1)
        let dataStart = padded / align * align
        dataOffset = dataStart
        let dataSize = max(0, file.bytes.count - dataStart)
        if !raws.isEmpty && dataStart > file.bytes.count {
            throw c.error("data section would start at \(dataStart), past the end of the file (\(file.bytes.count) bytes)", at: infoEnd)
        }

        var infos: [GGUFTensorInfo] = []
        infos.reserveCapacity(raws.count)
        var idx: [String: Int] = [:]
        for r in raws {
            let fail = { (m: String) in SFTError.format(path: path, offset: r.at, message: "tensor '\(r.name)': \(m)") }
            guard r.type.isKnown else { throw fail("unknown GGML type id \(r.type.rawValue)") }
            var count = 1
            for d in r.dims {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw fail("element count of dims \(r.dims) overflows") }
                count = p
            }
            guard let bytes = r.type.byteCount(elements: count, rowLength: r.dims[0]) else {
                throw fail("row length \(r.dims[0]) is not a multiple of the \(r.type) block size \(r.type.blockSize ?? 0)")
            }
            guard r.rel % UInt64(align) == 0 else {
                throw fail("data offset \(r.rel) is not a multiple of the alignment \(align)")
            }
            guard r.rel <= UInt64(dataSize), UInt64(bytes) <= UInt64(dataSize) - r.rel else {
                throw fail("data (\(bytes) bytes at data offset \(r.rel)) runs past the end of the file (data section holds \(dataSize) bytes)")
            }
            guard idx[r.name] == nil else { throw fail("duplicate tensor name") }
            idx[r.name] = infos.count
            infos.append(GGUFTensorInfo(name: r.name, dims: r.dims, type: r.type, offset: dataStart + Int(r.rel),
                                        byteCount: bytes, elementCount: count))
        }
        // Tensors must not share bytes: a file that overlaps them is corrupt (or hostile).
        let sorted = infos.filter { $0.byteCount > 0 }.sorted { $0.offset < $1.offset }
        for (a, b) in zip(sorted, sorted.dropFirst()) where a.offset + a.byteCount > b.offset {
            throw SFTError.format(path: path, offset: b.offset, message: "tensors '\(a.name)' and '\(b.name)' overlap")
        }
        tensors = infos
        index = idx
    }

    /// The tensor info named `name` (GGUF name), or nil.
    public func tensor(named name: String) -> GGUFTensorInfo? { index[name].map { tensors[$0] } }

    /// The stored bytes of a tensor: a view into the mapping, valid while this object lives.
    /// `info` must come from this file's `tensors`.
    public func rawBytes(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[info.offset ..< info.offset + info.byteCount])
    }

    /// Decodes a tensor into `info.elementCount` floats at `into` (GGUF element order, which is
    /// row-major for `info.shape`). Throws naming the tensor when its type is not supported.
    public func dequantize(_ info: GGUFTensorInfo, into out: UnsafeMutablePointer<Float>) throws {
        guard tensor(named: info.name) == info else {
            throw SFTError.weights(key: info.name, message: "tensor info does not belong to \(url.path)")
        }
        guard info.type.canDequantize else {
            throw SFTError.weights(key: info.name, message: "cannot dequantize GGML type \(info.type) (id \(info.type.rawValue)) in \(url.path)")
        }
        let raw = rawBytes(of: info)
        guard let base = raw.baseAddress ?? (info.elementCount == 0 ? UnsafeRawPointer(out) : nil) else { return }
        // Large tensors decode in row-aligned chunks on all cores.
        let rows = info.elementCount / max(info.dims[0], 1)
        let rowBytes = rows > 0 ? info.byteCount / rows : 0
        let chunks = info.elementCount >= 1 << 20 ? min(rows, ProcessInfo.processInfo.activeProcessorCount * 4) : 1
        let failure = Mutex<KernelError?>(nil)
        // Each part reads and writes its own rows of the two buffers.
        nonisolated(unsafe) let source = base, destination = out
        DispatchQueue.concurrentPerform(iterations: max(chunks, 1)) { part in
            let r0 = rows * part / max(chunks, 1), r1 = rows * (part + 1) / max(chunks, 1)
            let n = chunks <= 1 ? info.elementCount : (r1 - r0) * info.dims[0]
            let src = chunks <= 1 ? source : source + r0 * rowBytes
            let dst = chunks <= 1 ? destination : destination + r0 * info.dims[0]
            do { try dequantizeBlocks(info.type, from: src, into: dst, count: n) } catch {
                failure.withLock { $0 = error as? KernelError }
            }
        }
        if let failure = failure.withLock({ $0 }), case .invalidArgument(_, let message) = failure {
            throw SFTError.weights(key: info.name, message: message)
        }
    }

    /// Decodes a tensor into a new array of `info.elementCount` floats.
    public func dequantize(_ info: GGUFTensorInfo) throws -> [Float] {
        try [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            if let p = buf.baseAddress { try dequantize(info, into: p) }
            n = info.elementCount
        }
    }

    // MARK: parsing

    private static func readString(_ c: inout ByteCursor, _ what: String, strict: Bool) throws -> String {
        let at = c.offset
        let len = try c.read(UInt64.self, "length of \(what)")
        let n = try c.need(len, "\(what) (string of \(len) bytes)")
        let b = try c.bytes(n, what)
        if strict {
            guard let s = String(validating: b, as: UTF8.self) else {
                throw c.error("\(what) is not valid UTF-8", at: at)
            }
            return s
        }
        return String(decoding: b, as: UTF8.self)
    }

    private static func readValue(_ c: inout ByteCursor, type: UInt32, key: String, depth: Int) throws -> GGUFValue {
        let what = "value of '\(key)'"
        switch type {
        case 0: return .uint8(try c.read(UInt8.self, what))
        case 1: return .int8(try c.read(Int8.self, what))
        case 2: return .uint16(try c.read(UInt16.self, what))
        case 3: return .int16(try c.read(Int16.self, what))
        case 4: return .uint32(try c.read(UInt32.self, what))
        case 5: return .int32(try c.read(Int32.self, what))
        case 6: return .float32(Float(bitPattern: try c.read(UInt32.self, what)))
        case 7:
            let b = try c.read(UInt8.self, what)
            guard b <= 1 else { throw c.error("\(what): bool byte is \(b), expected 0 or 1", at: c.offset - 1) }
            return .bool(b == 1)
        case 8: return .string(try readString(&c, what, strict: false))
        case 9:
            guard depth < maxArrayDepth else { throw c.error("\(what): arrays nested deeper than \(maxArrayDepth)") }
            let et = try c.read(UInt32.self, "element type of \(what)")
            let count = try c.read(UInt64.self, "element count of \(what)")
            let minSize: Int
            switch et {
            case 0, 1, 7: minSize = 1
            case 2, 3: minSize = 2
            case 4, 5, 6: minSize = 4
            case 8, 10, 11, 12: minSize = 8
            case 9: minSize = 12
            default: throw c.error("\(what): unknown array element type \(et)", at: c.offset - 12)
            }
            guard count <= UInt64(c.remaining / minSize) else {
                throw c.error("\(what): array of \(count) \(GGUFValue.typeName(id: et)) elements runs past the end of the file")
            }
            var items: [GGUFValue] = []
            items.reserveCapacity(Int(count))
            for _ in 0 ..< Int(count) { items.append(try readValue(&c, type: et, key: key, depth: depth + 1)) }
            return .array(elementType: et, items)
        case 10: return .uint64(try c.read(UInt64.self, what))
        case 11: return .int64(try c.read(Int64.self, what))
        case 12: return .float64(Double(bitPattern: try c.read(UInt64.self, what)))
        default: throw c.error("\(what): unknown value type \(type)", at: c.offset - 4)
        }
    }
}
