// Small hash tables for the tokenizer's hot paths: byte strings → Int32 (vocabulary, word cache)
// and token-id pairs → merge (rank, result). Open addressing with linear probing over flat
// arrays. Keys are raw bytes, never Swift Strings: String equality is Unicode canonical
// equivalence ("é" == "e\u{301}"), which would merge distinct tokens.
import SFTKernels

/// Maps byte strings to Int32 values. Keys live in one arena; slots hold (hash, entry index).
struct ByteKeyMap {
    private var arena: [UInt8] = []
    private var keyStart: [Int32] = []
    private var keyLength: [Int32] = []
    private(set) var values: [Int32] = []
    /// Per slot: high 32 bits the key's hash, low 32 bits entry index + 1 (0 = empty).
    private var slots: [UInt64]
    private var mask: Int

    init(capacity: Int = 16) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        slots = [UInt64](repeating: 0, count: n)
        mask = n - 1
    }

    var count: Int { values.count }

    /// FNV-1a over the bytes, then a final mix so the low bits (the slot index) are well spread.
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt32 {
        var h: UInt32 = 2_166_136_261
        for i in 0..<n { h = (h ^ UInt32(p[i])) &* 16_777_619 }
        h ^= h >> 15; h = h &* 0x2c1b_3c6d; h ^= h >> 12
        return h
    }

    /// The value stored for the key, or nil.
    @inline(__always)
    func get(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        let h = ByteKeyMap.hash(p, n)
        return slots.withUnsafeBufferPointer { s in
            arena.withUnsafeBufferPointer { a in
                var i = Int(h) & mask
                while true {
                    let slot = s[i]
                    if slot == 0 { return nil }
                    if UInt32(truncatingIfNeeded: slot >> 32) == h {
                        let e = Int(UInt32(truncatingIfNeeded: slot)) - 1
                        if Int(keyLength[e]) == n {
                            let base = a.baseAddress! + Int(keyStart[e])
                            if n == 0 || memcmpBytes(base, p, n) { return values[e] }
                        }
                    }
                    i = (i + 1) & mask
                }
            }
        }
    }

    func get(_ bytes: [UInt8]) -> Int32? { withBytes(bytes) { get($0, $1) } }

    /// Inserts the key unless present; returns the value now stored (the old one if present).
    @discardableResult
    mutating func insert(_ p: UnsafePointer<UInt8>, _ n: Int, value: Int32) -> Int32 {
        if let v = get(p, n) { return v }
        if (values.count + 1) * 2 > slots.count { grow() }
        let h = ByteKeyMap.hash(p, n)
        keyStart.append(Int32(arena.count))
        keyLength.append(Int32(n))
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
        values.append(value)
        place(hash: h, entry: values.count - 1)
        return value
    }

    @discardableResult
    mutating func insert(_ bytes: [UInt8], value: Int32) -> Int32 {
        withBytes(bytes) { insert($0, $1, value: value) }
    }

    /// Drops every entry (keeps the slot array's size).
    mutating func removeAll() {
        arena.removeAll(keepingCapacity: true)
        keyStart.removeAll(keepingCapacity: true)
        keyLength.removeAll(keepingCapacity: true)
        values.removeAll(keepingCapacity: true)
        for i in slots.indices { slots[i] = 0 }
    }

    private mutating func place(hash h: UInt32, entry e: Int) {
        var i = Int(h) & mask
        while slots[i] != 0 { i = (i + 1) & mask }
        slots[i] = UInt64(h) << 32 | UInt64(e + 1)
    }

    private mutating func grow() {
        let old = slots
        slots = [UInt64](repeating: 0, count: old.count * 2)
        mask = slots.count - 1
        for slot in old where slot != 0 {
            place(hash: UInt32(truncatingIfNeeded: slot >> 32), entry: Int(UInt32(truncatingIfNeeded: slot)) - 1)
        }
    }
}

/// Calls `body` with a pointer to the bytes (a valid pointer even when the array is empty).
@inline(__always)
func withBytes<R>(_ bytes: [UInt8], _ body: (UnsafePointer<UInt8>, Int) -> R) -> R {
    bytes.withUnsafeBufferPointer { b in
        if let base = b.baseAddress { return body(base, b.count) }
        var zero: UInt8 = 0
        return withUnsafePointer(to: &zero) { body($0, 0) }
    }
}

@inline(__always)
func memcmpBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) {
            return false
        }
        i += 8
    }
    while i < n { if a[i] != b[i] { return false }; i += 1 }
    return true
}

/// Maps a pair of token ids to the merge that joins them: its rank (lower merges first) and the
/// id of the merged token.
struct PairMap {
    private var keys: [UInt64]
    private var ranks: [Int32]
    private var results: [Int32]
    private var mask: Int
    private(set) var count = 0
    private static let empty = UInt64.max

    init(capacity: Int) {
        var n = 16
        while n < capacity * 2 { n <<= 1 }
        keys = [UInt64](repeating: PairMap.empty, count: n)
        ranks = [Int32](repeating: 0, count: n)
        results = [Int32](repeating: 0, count: n)
        mask = n - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64) -> Int {
        var x = key &* 0x9E37_79B9_7F4A_7C15
        x ^= x >> 29
        return Int(truncatingIfNeeded: x)
    }

    /// Keeps the existing merge when the pair is already present (the first, best-ranked wins).
    mutating func insert(left: Int32, right: Int32, rank: Int32, result: Int32) {
        if (count + 1) * 2 > keys.count { grow() }
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        var i = PairMap.slot(key) & mask
        while keys[i] != PairMap.empty {
            if keys[i] == key { return }
            i = (i + 1) & mask
        }
        keys[i] = key; ranks[i] = rank; results[i] = result
        count += 1
    }

    /// (rank, merged id) for the pair, or nil when the pair never merges.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> (rank: Int32, result: Int32)? {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        return keys.withUnsafeBufferPointer { k in
            var i = PairMap.slot(key) & mask
            while true {
                let stored = k[i]
                if stored == key { return (ranks[i], results[i]) }
                if stored == PairMap.empty { return nil }
                i = (i + 1) & mask
            }
        }
    }

    private mutating func grow() {
        let (ok, orank, ores) = (keys, ranks, results)
        let n = keys.count * 2
        keys = [UInt64](repeating: PairMap.empty, count: n)
        ranks = [Int32](repeating: 0, count: n)
        results = [Int32](repeating: 0, count: n)
        mask = n - 1
        count = 0
        for j in ok.indices where ok[j] != PairMap.empty {
            insert(left: Int32(bitPattern: UInt32(truncatingIfNeeded: ok[j] >> 32)),
                   right: Int32(bitPattern: UInt32(truncatingIfNeeded: ok[j])), rank: orank[j], result: ores[j])
        }
    }
}
