// safetensors reader and writer (huggingface/safetensors format): an 8-byte little-endian
// header length N, N bytes of UTF-8 JSON mapping each tensor name to {dtype, shape,
// data_offsets: [begin, end]} (offsets relative to the data that follows the header) plus an
// optional "__metadata__" string map, then the data.
//
// The reader maps the file and validates everything before handing out a byte: header length
// (at most 100 MB, inside the file), UTF-8, JSON, known dtypes, shape x dtype size equal to
// end - begin, offsets inside the data, no overlaps, and no holes (the ranges cover the data
// exactly, as the reference implementation requires). Errors name the file and the problem.
// The writer pads the header with spaces so the data starts at a multiple of 8.
import Foundation
import SFTKernels

/// Element types of safetensors files.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    /// Floats: IEEE double, single and half precision, and bfloat16 (the raw value is the header's
    /// `dtype`).
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    /// Signed little-endian integers (two's complement).
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    /// Unsigned little-endian integers, and one-byte booleans (0 or 1).
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"
    /// 8-bit floats (OCP FP8 E4M3 and E5M2); read, but not converted to f32.
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    /// Bytes per element.
    public var size: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    /// The GGML type id with the same element encoding (the C converter handles these).
    var ggmlType: GGMLType? {
        switch self {
        case .f64: return .f64
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .i64: return .i64
        case .i32: return .i32
        case .i16: return .i16
        case .i8: return .i8
        default: return nil
        }
    }
}

/// One tensor's entry in a safetensors file.
public struct SafetensorsTensorInfo: Sendable, Equatable {
    /// The tensor's name in the header (`model.layers.0.self_attn.q_proj.weight`).
    public let name: String
    /// The stored element type.
    public let dtype: SafetensorsDType
    /// Row-major shape.
    public let shape: [Int]
    /// Absolute byte offset of the data in the file.
    public let offset: Int
    /// Bytes of data (elements × dtype size).
    public let byteCount: Int
    /// Number of elements (product of `shape`; 1 for a scalar).
    public var elementCount: Int { shape.reduce(1, *) }
}

/// A memory-mapped, fully validated safetensors file.
public final class SafetensorsFile: @unchecked Sendable {
    /// The file's location.
    public let url: URL
    /// The `__metadata__` map (empty when absent).
    public let metadata: [String: String]
    /// Tensors in data order.
    public let tensors: [SafetensorsTensorInfo]
    private let index: [String: Int]
    private let file: MappedFile

    /// Gives back the mapping's resident pages (see `MappedFile.releaseResidentPages`).
    public func releaseResidentPages() { file.releaseResidentPages() }

    /// Largest header accepted (the reference implementation's limit).
    public static let maxHeaderBytes = 100_000_000

    /// Maps and validates the file at `url`.
    /// - Throws: `SFTError.io` when it cannot be opened; `SFTError.format` naming the file and byte
    ///   offset for a header that is too long, not UTF-8, not a JSON object, or has an unknown dtype, a
    ///   shape that does not match its byte range, or data ranges that overlap, leave holes or run
    ///   past the end.
    public init(url: URL) throws {
        self.url = url
        file = try MappedFile(url: url)
        let path = url.path
        let fail = { (offset: Int?, m: String) in SFTError.format(path: path, offset: offset, message: m) }
        var c = ByteCursor(file.bytes, path: path)
        guard file.bytes.count >= 8 else { throw fail(0, "file too short for a safetensors header length (\(file.bytes.count) bytes)") }
        let n = try c.read(UInt64.self, "header length")
        guard n <= UInt64(Self.maxHeaderBytes) else { throw fail(0, "header length \(n) exceeds the \(Self.maxHeaderBytes)-byte limit") }
        guard n <= UInt64(c.remaining) else { throw fail(0, "header length \(n) runs past the end of the file (\(file.bytes.count) bytes)") }
        let header = try c.bytes(Int(n), "header")
        if let bad = firstInvalidUTF8(header) { throw fail(8 + bad, "header is not valid UTF-8") }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(header), options: [])
        } catch {
            throw fail(8, "header is not valid JSON (\(error.localizedDescription))")
        }
        guard let dict = json as? [String: Any] else { throw fail(8, "header is not a JSON object") }
        let dataStart = 8 + Int(n)
        let dataSize = file.bytes.count - dataStart

        var meta: [String: String] = [:]
        if let m = dict["__metadata__"] {
            guard let md = m as? [String: Any] else { throw fail(8, "__metadata__ is not an object") }
            for (k, v) in md {
                guard let s = v as? String else { throw fail(8, "__metadata__ value of '\(k)' is not a string") }
                meta[k] = s
            }
        }
        metadata = meta

        struct Entry { let name: String; let dtype: SafetensorsDType; let shape: [Int]; let begin: Int; let end: Int }
        var entries: [Entry] = []
        for (name, value) in dict where name != "__metadata__" {
            let bad = { (m: String) in fail(8, "tensor '\(name)': \(m)") }
            guard let e = value as? [String: Any] else { throw bad("entry is not an object") }
            guard let ds = e["dtype"] as? String else { throw bad("missing dtype") }
            guard let dtype = SafetensorsDType(rawValue: ds) else { throw bad("unknown dtype '\(ds)'") }
            guard let shapeAny = e["shape"] as? [Any] else { throw bad("missing shape") }
            var shape: [Int] = []
            for d in shapeAny {
                guard let i = Self.integer(d), i >= 0 else { throw bad("shape \(shapeAny) is not a list of non-negative integers") }
                shape.append(i)
            }
            guard let offs = e["data_offsets"] as? [Any], offs.count == 2,
                  let begin = Self.integer(offs[0]), let end = Self.integer(offs[1]) else {
                throw bad("data_offsets is not a pair of integers")
            }
            guard begin >= 0, begin <= end else { throw bad("data_offsets [\(begin), \(end)] are not ordered") }
            guard end <= dataSize else { throw bad("data_offsets [\(begin), \(end)] run past the end of the data (\(dataSize) bytes)") }
            var count = dtype.size
            for d in shape {
                let (p, o) = count.multipliedReportingOverflow(by: d)
                guard !o else { throw bad("shape \(shape) overflows") }
                count = p
            }
            guard count == end - begin else {
                throw bad("shape \(shape) of \(ds) needs \(count) bytes but data_offsets [\(begin), \(end)] hold \(end - begin)")
            }
            entries.append(Entry(name: name, dtype: dtype, shape: shape, begin: begin, end: end))
        }
        entries.sort { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var covered = 0
        var previous: String?
        for e in entries {
            if e.begin < covered {
                throw fail(dataStart + e.begin, "tensors '\(previous ?? "")' and '\(e.name)' overlap")
            }
            if e.begin > covered {
                throw fail(dataStart + covered, "data bytes [\(covered), \(e.begin)) belong to no tensor")
            }
            covered = e.end
            if e.end > e.begin { previous = e.name }
        }
        if covered != dataSize {
            throw fail(dataStart + covered, "data bytes [\(covered), \(dataSize)) after the last tensor belong to no tensor")
        }
        tensors = entries.map {
            SafetensorsTensorInfo(name: $0.name, dtype: $0.dtype, shape: $0.shape, offset: dataStart + $0.begin, byteCount: $0.end - $0.begin)
        }
        var idx: [String: Int] = [:]
        for (i, t) in tensors.enumerated() { idx[t.name] = i }
        index = idx
    }

    /// Tensor names in data order.
    public var names: [String] { tensors.map(\.name) }

    /// The entry for `name`, or nil when the file has no such tensor.
    public func tensor(named name: String) -> SafetensorsTensorInfo? { index[name].map { tensors[$0] } }

    /// The stored bytes of a tensor: a view into the mapping, valid while this object lives.
    public func rawBytes(of info: SafetensorsTensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[info.offset ..< info.offset + info.byteCount])
    }

    /// Converts a tensor to f32 into `out` (elementCount floats).
    public func loadF32(_ info: SafetensorsTensorInfo, into out: UnsafeMutablePointer<Float>) throws {
        let raw = rawBytes(of: info)
        let n = info.elementCount
        guard n > 0, let src = raw.baseAddress else { return }
        if let g = info.dtype.ggmlType {
            do { try dequantizeBlocks(g, from: src, into: out, count: n) } catch KernelError.invalidArgument(_, let message) {
                throw SFTError.weights(key: info.name, message: message)
            }
            return
        }
        switch info.dtype {
        case .u8, .bool: for i in 0 ..< n { out[i] = Float(raw[i]) }
        case .u16: for i in 0 ..< n { out[i] = Float(UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))) }
        case .u32: for i in 0 ..< n { out[i] = Float(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .u64: for i in 0 ..< n { out[i] = Float(UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))) }
        default:
            throw SFTError.weights(key: info.name, message: "conversion of \(info.dtype.rawValue) to f32 is not supported (\(url.path))")
        }
    }

    /// The tensor `name` converted to f32, row-major.
    /// - Throws: `SFTError.weights` naming the tensor when it is missing or its dtype has no f32 conversion.
    public func loadF32(_ name: String) throws -> [Float] {
        guard let info = tensor(named: name) else { throw SFTError.weights(key: name, message: "no such tensor in \(url.path)") }
        return try [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            if let p = buf.baseAddress { try loadF32(info, into: p) }
            n = info.elementCount
        }
    }

    /// A JSON number that is an integer (not a bool, not fractional).
    private static func integer(_ v: Any) -> Int? {
        // JSON numbers arrive as NSNumber; `is Bool` would also match 0 and 1, so the
        // Objective-C type code tells booleans ("c") and floats ("d", "f") apart.
        if let n = v as? NSNumber {
            let kind = String(cString: n.objCType)
            if kind == "c" { return nil }
            if kind == "d" || kind == "f" { let d = n.doubleValue; return d == d.rounded() && abs(d) < 9e15 ? Int(d) : nil }
            return Int(exactly: n.int64Value)
        }
        return v as? Int
    }
}

/// Byte offset of the first byte that is not part of valid UTF-8, or nil.
func firstInvalidUTF8(_ bytes: UnsafeRawBufferPointer) -> Int? {
    var it = bytes.makeIterator()
    var parser = Unicode.UTF8.ForwardParser()
    var offset = 0
    while true {
        switch parser.parseScalar(from: &it) {
        case .valid(let s): offset += s.count
        case .emptyInput: return nil
        case .error: return offset
        }
    }
}

// MARK: - Writing

/// A tensor to write: dtype, row-major shape and little-endian bytes.
public struct SafetensorsTensor: Sendable {
    /// The element type of `data`.
    public let dtype: SafetensorsDType
    /// Row-major shape.
    public let shape: [Int]
    /// The elements' little-endian bytes (shape product × dtype size).
    public let data: [UInt8]

    /// Raw bytes; their count must be shape x dtype size.
    public init(dtype: SafetensorsDType, shape: [Int], data: [UInt8]) throws {
        let need = shape.reduce(dtype.size, *)
        guard need == data.count else {
            throw SFTError.shape(op: "safetensors write", message: "shape \(shape) of \(dtype.rawValue) needs \(need) bytes, got \(data.count)")
        }
        self.dtype = dtype; self.shape = shape; self.data = data
    }

    /// f32 values stored as f32, f16 or bf16 (round to nearest even).
    public init(_ values: [Float], shape: [Int], as dtype: SafetensorsDType = .f32) throws {
        var bytes: [UInt8]
        switch dtype {
        case .f32: bytes = values.withUnsafeBytes { Array($0) }
        case .f16: bytes = values.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }
        case .bf16: bytes = values.map(bf16Bits).withUnsafeBytes { Array($0) }
        default: throw SFTError.unsupported("writing f32 values as \(dtype.rawValue)")
        }
        try self.init(dtype: dtype, shape: shape, data: bytes)
    }

    /// `values` stored as I64. Throws `SFTError.shape` when their count does not match `shape`.
    public init(_ values: [Int64], shape: [Int]) throws {
        try self.init(dtype: .i64, shape: shape, data: values.withUnsafeBytes { Array($0) })
    }
    /// `values` stored as I32. Throws `SFTError.shape` when their count does not match `shape`.
    public init(_ values: [Int32], shape: [Int]) throws {
        try self.init(dtype: .i32, shape: shape, data: values.withUnsafeBytes { Array($0) })
    }
    /// `values` stored as U8. Throws `SFTError.shape` when their count does not match `shape`.
    public init(_ values: [UInt8], shape: [Int]) throws {
        try self.init(dtype: .u8, shape: shape, data: values)
    }
}

/// bf16 bits of x, rounded to nearest even (NaN stays NaN).
func bf16Bits(_ x: Float) -> UInt16 {
    if x.isNaN { return 0x7FC0 }
    let b = x.bitPattern
    return UInt16(truncatingIfNeeded: (b &+ 0x7FFF &+ ((b >> 16) & 1)) >> 16)
}

/// Writing safetensors files (reading is ``SafetensorsFile``).
public enum Safetensors {
    /// Writes `tensors` (in the given order) with optional `__metadata__` to `url`, via a
    /// temporary file renamed into place. The header is padded with spaces to a multiple of 8.
    public static func write(_ tensors: [(name: String, tensor: SafetensorsTensor)], metadata: [String: String] = [:], to url: URL) throws {
        var seen = Set<String>()
        var json = "{"
        var first = true
        if !metadata.isEmpty {
            json += "\"__metadata__\":{" + metadata.sorted { $0.key < $1.key }.map { "\(jsonString($0.key)):\(jsonString($0.value))" }.joined(separator: ",") + "}"
            first = false
        }
        var offset = 0
        for (name, t) in tensors {
            guard name != "__metadata__", seen.insert(name).inserted else {
                throw SFTError.weights(key: name, message: "duplicate or reserved tensor name in \(url.path)")
            }
            if !first { json += "," }
            first = false
            json += "\(jsonString(name)):{\"dtype\":\"\(t.dtype.rawValue)\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + t.data.count)]}"
            offset += t.data.count
        }
        json += "}"
        var header = Array(json.utf8)
        while (8 + header.count) % 8 != 0 { header.append(0x20) }

        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw SFTError.io(path: tmp.path, message: "cannot create file")
        }
        do {
            let h = try FileHandle(forWritingTo: tmp)
            defer { try? h.close() }
            var n = UInt64(header.count).littleEndian
            try h.write(contentsOf: Data(bytes: &n, count: 8))
            try h.write(contentsOf: header)
            for (_, t) in tensors where !t.data.isEmpty { try h.write(contentsOf: t.data) }
            try h.synchronize()
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw SFTError.io(path: url.path, message: "write failed: \(error)")
        }
        if rename(tmp.path, url.path) != 0 {
            try? FileManager.default.removeItem(at: tmp)
            throw SFTError.io(path: url.path, message: "cannot move the written file into place (\(String(cString: strerror(errno))))")
        }
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}
