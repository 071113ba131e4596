// GGUF writer (version 3, little-endian), the inverse of GGUFFile, following the GGUF
// specification in the ggml repository (docs/gguf.md): magic "GGUF", u32 version, u64 tensor
// count, u64 metadata count, typed key/value pairs, tensor infos (name, dims with ne0 first,
// GGML type, offset relative to the data section), zero padding to `general.alignment`
// (default 32), then each tensor's data at an aligned offset.
//
// Tensor data is produced on demand while writing, one tensor at a time, so exporting a model
// holds one converted tensor in memory, not the whole file. The file is written to a temporary
// name and renamed into place. Element encodings: F32, F16 and BF16 (round to nearest even),
// and Q8_0 (blocks of 32 values: an f16 scale d = max|x| / 127 and 32 int8 q = round(x / d),
// as ggml's reference quantizer).
import Foundation
import SFTKernels

/// Builds a GGUF file: metadata in insertion order, then tensors in insertion order.
///
/// ```swift
/// var w = GGUFWriter()
/// try w.set("general.architecture", .string("llama"))
/// try w.addTensor(name: "output_norm.weight", shape: [576], type: .f32) { normValues }
/// try w.write(to: URL(fileURLWithPath: "model.gguf"))
/// ```
public struct GGUFWriter {
    /// Data alignment; written as `general.alignment` when not the default 32.
    public let alignment: Int
    /// Metadata in the order it will be written.
    public private(set) var metadata: [(key: String, value: GGUFValue)] = []

    struct PendingTensor {
        let name: String
        let dims: [Int]          // ne0 first
        let type: GGMLType
        let byteCount: Int
        let bytes: () throws -> [UInt8]
    }
    private var tensors: [PendingTensor] = []
    private var tensorIndex: Set<String> = []

    /// An empty file description.
    /// - Parameter alignment: the data alignment in bytes (written as `general.alignment` when not 32).
    /// - Throws: `SFTError.config` when `alignment` is not a positive power of two.
    public init(alignment: Int = 32) throws {
        guard alignment > 0, alignment & (alignment - 1) == 0 else {
            throw SFTError.config(field: "general.alignment", message: "\(alignment) is not a power of two")
        }
        self.alignment = alignment
        if alignment != 32 { metadata.append(("general.alignment", .uint32(UInt32(alignment)))) }
    }

    /// Sets a metadata value (replacing an earlier value of the same key in place). Arrays must
    /// hold elements of their declared type.
    public mutating func set(_ key: String, _ value: GGUFValue) throws {
        guard !key.isEmpty else { throw SFTError.config(field: "gguf metadata", message: "empty key") }
        try Self.validate(value, key: key)
        if key == "general.alignment" {
            guard value.int == alignment else {
                throw SFTError.config(field: key, message: "set the alignment with GGUFWriter(alignment:), not as metadata")
            }
        }
        if let i = metadata.firstIndex(where: { $0.key == key }) { metadata[i].value = value } else { metadata.append((key, value)) }
    }

    /// Names of the tensors added so far, in order.
    public var tensorNames: [String] { tensors.map(\.name) }

    /// Adds a tensor whose stored bytes `bytes` produces at write time.
    /// - Parameters:
    ///   - name: the GGUF tensor name (unique in the file).
    ///   - shape: row-major shape (HF order: [out, in]); GGUF stores it reversed.
    ///   - type: the GGML type of the stored bytes.
    ///   - bytes: produces the tensor's bytes when the file is written.
    public mutating func addRawTensor(name: String, shape: [Int], type: GGMLType, bytes: @escaping () throws -> [UInt8]) throws {
        guard !name.isEmpty, tensorIndex.insert(name).inserted else {
            throw SFTError.weights(key: name, message: "empty or duplicate GGUF tensor name")
        }
        guard (1...4).contains(shape.count), shape.allSatisfy({ $0 >= 0 }) else {
            throw SFTError.weights(key: name, message: "shape \(shape): GGUF tensors have 1 to 4 non-negative dimensions")
        }
        let dims = Array(shape.reversed())
        let count = shape.reduce(1, *)
        guard let byteCount = type.byteCount(elements: count, rowLength: dims[0]) else {
            throw SFTError.weights(key: name, message: "row length \(dims[0]) is not a multiple of the \(type) block size \(type.blockSize ?? 0)")
        }
        tensors.append(PendingTensor(name: name, dims: dims, type: type, byteCount: byteCount, bytes: bytes))
    }

    /// Adds a tensor of f32 values (produced at write time) stored as `type`: F32, F16, BF16 or Q8_0.
    public mutating func addTensor(name: String, shape: [Int], type: GGMLType, values: @escaping () throws -> [Float]) throws {
        guard Self.encodableTypes.contains(type) else {
            throw SFTError.unsupported("writing GGUF tensors as \(type) (F32, F16, BF16, Q8_0 are supported)")
        }
        let count = shape.reduce(1, *)
        try addRawTensor(name: name, shape: shape, type: type) {
            let v = try values()
            guard v.count == count else {
                throw SFTError.weights(key: name, message: "\(v.count) values for shape \(shape)")
            }
            return try GGUFWriter.encode(v, as: type)
        }
    }

    /// Types `encode` can produce.
    public static let encodableTypes: Set<GGMLType> = [.f32, .f16, .bf16, .q8_0]

    /// The stored bytes of `values` as `type` (rows must be whole blocks for Q8_0).
    public static func encode(_ values: [Float], as type: GGMLType) throws -> [UInt8] {
        switch type {
        case .f32: return values.withUnsafeBytes { Array($0) }
        case .f16: return values.map { Float16($0).bitPattern }.withUnsafeBytes { Array($0) }
        case .bf16: return values.map(bf16Bits).withUnsafeBytes { Array($0) }
        case .q8_0: return try quantizeQ8_0(values)
        default: throw SFTError.unsupported("writing GGUF tensors as \(type)")
        }
    }

    /// Q8_0 blocks of 32: f16 d = max|x| / 127, then int8 q = round(x / d) (half away from zero).
    public static func quantizeQ8_0(_ x: [Float]) throws -> [UInt8] {
        guard x.count % 32 == 0 else {
            throw SFTError.shape(op: "quantize Q8_0", message: "\(x.count) values are not whole blocks of 32")
        }
        var out = [UInt8](repeating: 0, count: x.count / 32 * 34)
        x.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for b in 0 ..< x.count / 32 {
                    let v = src.baseAddress! + b * 32
                    var amax: Float = 0
                    for j in 0 ..< 32 { amax = max(amax, abs(v[j])) }
                    let d = amax / 127
                    let id: Float = d != 0 ? 1 / d : 0
                    let bits = Float16(d).bitPattern
                    let o = dst.baseAddress! + b * 34
                    o[0] = UInt8(truncatingIfNeeded: bits)
                    o[1] = UInt8(truncatingIfNeeded: bits >> 8)
                    for j in 0 ..< 32 {
                        // A subnormal d makes 1/d infinite; saturate instead of trapping.
                        var r = (v[j] * id).rounded(.toNearestOrAwayFromZero)
                        if !r.isFinite { r = v[j] > 0 ? 127 : v[j] < 0 ? -127 : 0 }
                        o[2 + j] = UInt8(bitPattern: Int8(max(-127, min(127, r))))
                    }
                }
            }
        }
        return out
    }

    /// Writes the file (via a temporary file renamed into place).
    public func write(to url: URL) throws {
        var header = ByteWriter()
        header.bytes += Array("GGUF".utf8)
        header.put(UInt32(3))
        header.put(UInt64(tensors.count))
        header.put(UInt64(metadata.count))
        for (key, value) in metadata {
            header.string(key)
            header.put(Self.typeId(value))
            Self.writeValue(value, into: &header)
        }
        var offsets: [Int] = []
        var offset = 0
        for t in tensors {
            offsets.append(offset)
            header.string(t.name)
            header.put(UInt32(t.dims.count))
            for d in t.dims { header.put(UInt64(d)) }
            header.put(t.type.rawValue)
            header.put(UInt64(offset))
            offset = Self.aligned(offset + t.byteCount, alignment)
        }
        header.bytes += [UInt8](repeating: 0, count: Self.aligned(header.bytes.count, alignment) - header.bytes.count)

        let tmp = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(ProcessInfo.processInfo.processIdentifier).tmp")
        guard FileManager.default.createFile(atPath: tmp.path, contents: nil) else {
            throw SFTError.io(path: tmp.path, message: "cannot create file")
        }
        do {
            let h = try FileHandle(forWritingTo: tmp)
            defer { try? h.close() }
            try h.write(contentsOf: header.bytes)
            var written = 0
            for (t, start) in zip(tensors, offsets) {
                if start > written { try h.write(contentsOf: [UInt8](repeating: 0, count: start - written)) }
                let data = try t.bytes()
                guard data.count == t.byteCount else {
                    throw SFTError.weights(key: t.name, message: "\(data.count) bytes produced, \(t.byteCount) expected for \(t.type) \(t.dims)")
                }
                try h.write(contentsOf: data)
                written = start + data.count
            }
            try h.synchronize()
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            if let e = error as? SFTError { throw e }
            throw SFTError.io(path: url.path, message: "write failed: \(error)")
        }
        if rename(tmp.path, url.path) != 0 {
            try? FileManager.default.removeItem(at: tmp)
            throw SFTError.io(path: url.path, message: "cannot move the written file into place (\(String(cString: strerror(errno))))")
        }
    }

    // MARK: encoding

    static func aligned(_ n: Int, _ a: Int) -> Int { (n + a - 1) / a * a }

    /// GGUF's value type id.
    static func typeId(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint8: return 0
        case .int8: return 1
        case .uint16: return 2
        case .int16: return 3
        case .uint32: return 4
        case .int32: return 5
        case .float32: return 6
        case .bool: return 7
        case .string: return 8
        case .array: return 9
        case .uint64: return 10
        case .int64: return 11
        case .float64: return 12
        }
    }

    static func validate(_ v: GGUFValue, key: String) throws {
        guard case .array(let t, let items) = v else { return }
        guard t <= 12 else { throw SFTError.config(field: key, message: "unknown array element type \(t)") }
        for item in items {
            guard typeId(item) == t else {
                throw SFTError.config(field: key, message: "array of \(GGUFValue.typeName(id: t)) holds a \(item.typeName)")
            }
            try validate(item, key: key)
        }
    }

    static func writeValue(_ v: GGUFValue, into w: inout ByteWriter) {
        switch v {
        case .uint8(let x): w.put(x)
        case .int8(let x): w.put(x)
        case .uint16(let x): w.put(x)
        case .int16(let x): w.put(x)
        case .uint32(let x): w.put(x)
        case .int32(let x): w.put(x)
        case .float32(let x): w.put(x.bitPattern)
        case .bool(let x): w.put(UInt8(x ? 1 : 0))
        case .string(let s): w.string(s)
        case .array(let t, let items):
            w.put(t)
            w.put(UInt64(items.count))
            for item in items { writeValue(item, into: &w) }
        case .uint64(let x): w.put(x)
        case .int64(let x): w.put(x)
        case .float64(let x): w.put(x.bitPattern)
        }
    }
}

/// Little-endian byte building for headers.
struct ByteWriter {
    var bytes: [UInt8] = []

    mutating func put<T: FixedWidthInteger>(_ x: T) {
        withUnsafeBytes(of: x.littleEndian) { bytes += $0 }
    }

    /// u64 length + UTF-8 bytes.
    mutating func string(_ s: String) {
        let u = Array(s.utf8)
        put(UInt64(u.count))
        bytes += u
    }
}
