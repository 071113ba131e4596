// Text from the fixed-size char buffers the C shim fills (NUL-terminated inside the array).

extension String {
    /// The characters of `buffer` before its first NUL, decoded as UTF-8 (invalid bytes repaired).
    init(nulTerminated buffer: [CChar]) {
        self = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
