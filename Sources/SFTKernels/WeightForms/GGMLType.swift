// The GGML tensor element types (GGUF's quantization formats): the type id of the `.gguf`
// weight form (PackedBlocks) and of the host block kernels (GGMLBlockKernels.swift). Lives in
// the kernel layer because the backends decode these blocks; the GGUF reader uses it.

import CSFTKernels

/// A GGML tensor element type (quantization format), identified by its numeric id in GGUF.
/// Known ids carry their block geometry; `canDequantize` says whether sft can decode it.
public struct GGMLType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// GGML's numeric type id, as stored in a GGUF tensor's header.
    public let rawValue: UInt32
    /// The type with id `rawValue` (known or not; see `isKnown`).
    /// - Parameter rawValue: The GGML type id.
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    /// id 0: 32-bit floats.
    public static let f32 = GGMLType(rawValue: 0)
    /// id 1: IEEE half floats.
    public static let f16 = GGMLType(rawValue: 1)
    /// id 2: blocks of 32 4-bit codes with one f16 scale (18 bytes).
    public static let q4_0 = GGMLType(rawValue: 2)
    /// id 3: blocks of 32 4-bit codes with an f16 scale and minimum (20 bytes).
    public static let q4_1 = GGMLType(rawValue: 3)
    /// id 6: blocks of 32 5-bit codes with one f16 scale (22 bytes).
    public static let q5_0 = GGMLType(rawValue: 6)
    /// id 7: blocks of 32 5-bit codes with an f16 scale and minimum (24 bytes).
    public static let q5_1 = GGMLType(rawValue: 7)
    /// id 8: blocks of 32 8-bit codes with one f16 scale (34 bytes).
    public static let q8_0 = GGMLType(rawValue: 8)
    /// id 10: k-quant super-blocks of 256 2-bit values (84 bytes).
    public static let q2_K = GGMLType(rawValue: 10)
    /// id 11: k-quant super-blocks of 256 3-bit values (110 bytes).
    public static let q3_K = GGMLType(rawValue: 11)
    /// id 12: k-quant super-blocks of 256 4-bit values (144 bytes).
    public static let q4_K = GGMLType(rawValue: 12)
    /// id 13: k-quant super-blocks of 256 5-bit values (176 bytes).
    public static let q5_K = GGMLType(rawValue: 13)
    /// id 14: k-quant super-blocks of 256 6-bit values (210 bytes).
    public static let q6_K = GGMLType(rawValue: 14)
    /// id 15: k-quant super-blocks of 256 8-bit values (292 bytes; llama.cpp's intermediate type).
    public static let q8_K = GGMLType(rawValue: 15)
    /// id 20: blocks of 32 4-bit non-linear codes with one f16 scale (18 bytes).
    public static let iq4_nl = GGMLType(rawValue: 20)
    /// id 24: 8-bit integers.
    public static let i8 = GGMLType(rawValue: 24)
    /// id 25: 16-bit integers.
    public static let i16 = GGMLType(rawValue: 25)
    /// id 26: 32-bit integers.
    public static let i32 = GGMLType(rawValue: 26)
    /// id 27: 64-bit integers.
    public static let i64 = GGMLType(rawValue: 27)
    /// id 28: 64-bit floats.
    public static let f64 = GGMLType(rawValue: 28)
    /// id 30: bfloat16.
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
    /// GGML's name of the type, as `name`.
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
