// The GGML tensor element types (GGUF's quantization formats): the type id of the `.gguf`
// weight form (PackedBlocks) and of the host block kernels (GGMLBlockKernels.swift). Lives in
// the kernel layer because the backends decode these blocks; the GGUF reader uses it.

import CSFTKernels

/// A GGML tensor element type (quantization format), identified by its numeric id in GGUF.
/// Known ids carry their block geometry; `canDequantize` says whether sft can decode it.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let f32 = GGMLType(rawValue: 0)
    public static let f16 = GGMLType(rawValue: 1)
    public static let q4_0 = GGMLType(rawValue: 2)
    public static let q4_1 = GGMLType(rawValue: 3)
    public static let q5_0 = GGMLType(rawValue: 6)
    public static let q5_1 = GGMLType(rawValue: 7)
    public static let q8_0 = GGMLType(rawValue: 8)
    public static let q2_K = GGMLType(rawValue: 10)
    public static let q3_K = GGMLType(rawValue: 11)
    public static let q4_K = GGMLType(rawValue: 12)
    public static let q5_K = GGMLType(rawValue: 13)
    public static let q6_K = GGMLType(rawValue: 14)
    public static let q8_K = GGMLType(rawValue: 15)
    public static let iq4_nl = GGMLType(rawValue: 20)
    public static let i8 = GGMLType(rawValue: 24)
    public static let i16 = GGMLType(rawValue: 25)
    public static let i32 = GGMLType(rawValue: 26)
    public static let i64 = GGMLType(rawValue: 27)
    public static let f64 = GGMLType(rawValue: 28)
    public static let bf16 = GGMLType(rawValue: 30)

    /// (name, elements per block, bytes per block) for every id whose layout is known.
    /// Sizes are from the GGML type table; sft dequantizes the subset in `canDequantize`.
    private static let table: [UInt32: (String, Int, Int)] = [
        0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
        6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34),
        10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110), 12: ("Q4_K", 256, 144),
        13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
        16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98),
        19: ("IQ1_S", 256, 50), 20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110),
        22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136), 24: ("I8", 1, 1), 25: ("I16", 1, 2),
        26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8), 29: ("IQ1_M", 256, 56),
        30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66), 39: ("MXFP4", 32, 17),
    ]

    /// Whether the id is a known GGML type (its block size is known).
    public var isKnown: Bool { Self.table[rawValue] != nil }
    /// GGML's name ("Q4_1"), or "type N" for an unknown id.
    public var name: String { Self.table[rawValue]?.0 ?? "type \(rawValue)" }
    public var description: String { name }
    /// Elements per block (1 for plain types); nil when unknown.
    public var blockSize: Int? { Self.table[rawValue]?.1 }
    /// Bytes per block; nil when unknown.
    public var typeSize: Int? { Self.table[rawValue]?.2 }
    /// Whether `GGUFFile.dequantize` supports this type.
    public var canDequantize: Bool { sft_gguf_can_dequantize(Int32(bitPattern: rawValue)) != 0 }

    /// Bytes for `elements` values laid out in rows of `rowLength`, or nil when the row length
    /// is not a multiple of the block size, the type is unknown, or the size overflows.
    public func byteCount(elements: Int, rowLength: Int) -> Int? {
        guard let bs = blockSize, let ts = typeSize, elements >= 0, rowLength >= 0 else { return nil }
        guard rowLength % bs == 0 else { return nil }
        let (bytes, overflow) = (elements / bs).multipliedReportingOverflow(by: ts)
        return overflow ? nil : bytes
    }
}
