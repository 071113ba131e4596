// The BPE merge loop on token ids, shared by byte-level and SentencePiece models: adjacent
// symbols merge by rank, lowest rank first, leftmost first among equal ranks (HF tokenizers'
// order; SentencePiece's order when ranks come from scores). Short words use a linear scan;
// long ones (SentencePiece models merge whole sentences) a heap with lazy invalidation.
// Also GPT-2's byte↔unicode map, which byte-level vocabularies are written in.
import SFTKernels

/// Scratch space and the merge loop. Not thread-safe: one per encoding call at a time.
struct BPEMerger {
    /// Symbols of the word being merged: token id and start byte (within the word).
    var ids: [Int32] = []
    var starts: [Int32] = []
    private var ranks: [Int32] = []
    private var results: [Int32] = []
    private var prev: [Int32] = []
    private var next: [Int32] = []
    private var heap: [UInt64] = []

    /// Words up to this many symbols use the O(n²) scan, which beats the heap on short words.
    static let linearLimit = 48

    mutating func reset() { ids.removeAll(keepingCapacity: true); starts.removeAll(keepingCapacity: true) }

    mutating func append(id: Int32, start: Int) { ids.append(id); starts.append(Int32(start)) }

    /// Merges `ids`/`starts` in place.
    mutating func merge(_ merges: PairMap) {
        if ids.count < 2 { return }
        if ids.count <= Self.linearLimit { mergeLinear(merges) } else { mergeHeap(merges) }
    }

    private mutating func mergeLinear(_ merges: PairMap) {
        var n = ids.count
        ranks.removeAll(keepingCapacity: true)
        results.removeAll(keepingCapacity: true)
        for k in 0..<(n - 1) {
            if let m = merges.lookup(ids[k], ids[k + 1]) { ranks.append(m.rank); results.append(m.result) } else {
                ranks.append(Int32.max); results.append(-1)
            }
        }
        ids.withUnsafeMutableBufferPointer { ids in
        starts.withUnsafeMutableBufferPointer { starts in
        ranks.withUnsafeMutableBufferPointer { ranks in
        results.withUnsafeMutableBufferPointer { results in
            while n > 1 {
                var best = Int32.max, k = -1
                for j in 0..<(n - 1) where ranks[j] < best { best = ranks[j]; k = j }
                if k < 0 { break }
                ids[k] = results[k]
                // Drop symbol k+1 and pair k+1 (pair k is recomputed below).
                var j = k + 1
                while j < n - 1 { ids[j] = ids[j + 1]; starts[j] = starts[j + 1]; j += 1 }
                j = k + 1
                while j < n - 2 { ranks[j] = ranks[j + 1]; results[j] = results[j + 1]; j += 1 }
                n -= 1
                if k > 0 {
                    if let m = merges.lookup(ids[k - 1], ids[k]) { ranks[k - 1] = m.rank; results[k - 1] = m.result } else {
                        ranks[k - 1] = Int32.max
                    }
                }
                if k < n - 1 {
                    if let m = merges.lookup(ids[k], ids[k + 1]) { ranks[k] = m.rank; results[k] = m.result } else {
                        ranks[k] = Int32.max
                    }
                }
            }
        }}}}
        ids.removeLast(ids.count - n)
        starts.removeLast(starts.count - n)
    }

    /// Heap entries: rank in the high 32 bits, left symbol index in the low 32, so the minimum is
    /// the lowest rank, then the leftmost pair. An entry is checked when popped: if the pair now
    /// at that index merges with that same rank, merging it is what the exact order would do
    /// (any such pair was pushed with the same key when it formed); otherwise it is stale.
    private mutating func mergeHeap(_ merges: PairMap) {
        let n = ids.count
        prev = (0..<n).map { Int32($0) - 1 }
        next = (0..<n).map { $0 + 1 < n ? Int32($0 + 1) : -1 }
        heap.removeAll(keepingCapacity: true)
        for k in 0..<(n - 1) {
            if let m = merges.lookup(ids[k], ids[k + 1]) { push(rank: m.rank, left: k) }
        }
        while let top = popMin() {
            let l = Int(UInt32(truncatingIfNeeded: top))
            let rank = Int32(bitPattern: UInt32(truncatingIfNeeded: top >> 32))
            let r = Int(next[l])
            guard ids[l] >= 0, r >= 0, let m = merges.lookup(ids[l], ids[r]), m.rank == rank else { continue }
            ids[l] = m.result
            ids[r] = -1
            let rn = Int(next[r])
            next[l] = Int32(rn)
            if rn >= 0 { prev[rn] = Int32(l) }
            let pl = Int(prev[l])
            if pl >= 0, let m2 = merges.lookup(ids[pl], ids[l]) { push(rank: m2.rank, left: pl) }
            if rn >= 0, let m2 = merges.lookup(ids[l], ids[rn]) { push(rank: m2.rank, left: l) }
        }
        var w = 0
        for k in 0..<n where ids[k] >= 0 { ids[w] = ids[k]; starts[w] = starts[k]; w += 1 }
        ids.removeLast(n - w)
        starts.removeLast(n - w)
    }

    private mutating func push(rank: Int32, left: Int) {
        heap.append(UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(left))
        siftUp(heap.count - 1)
    }

    private mutating func siftUp(_ i0: Int) {
        var i = i0
        let v = heap[i]
        while i > 0 {
            let p = (i - 1) / 2
            if heap[p] <= v { break }
            heap[i] = heap[p]; i = p
        }
        heap[i] = v
    }

    private mutating func popMin() -> UInt64? {
        guard let last = heap.popLast() else { return nil }
        if heap.isEmpty { return last }
        let top = heap[0]
        var i = 0
        let n = heap.count
        while true {
            let l = 2 * i + 1
            if l >= n { break }
            var c = l
            if l + 1 < n && heap[l + 1] < heap[l] { c = l + 1 }
            if heap[c] >= last { break }
            heap[i] = heap[c]; i = c
        }
        heap[i] = last
        return top
    }
}

/// GPT-2's reversible map from bytes to printable unicode characters: printable Latin-1 bytes
/// map to themselves, the other 68 bytes to U+0100 onwards in byte order (space → "Ġ").
enum ByteLevelMap {
    /// byte → scalar
    static let encode: [Unicode.Scalar] = {
        var table = [Unicode.Scalar](repeating: " ", count: 256)
        var extra: UInt32 = 256
        for b in 0..<256 {
            let printable = (0x21...0x7E).contains(b) || (0xA1...0xAC).contains(b) || (0xAE...0xFF).contains(b)
            if printable { table[b] = Unicode.Scalar(UInt32(b))! } else { table[b] = Unicode.Scalar(extra)!; extra += 1 }
        }
        return table
    }()

    /// scalar value → byte, for the 256 mapped scalars.
    static let decode: [UInt32: UInt8] = {
        var d: [UInt32: UInt8] = [:]
        for (b, s) in encode.enumerated() { d[s.value] = UInt8(b) }
        return d
    }()

    /// The raw bytes a byte-level token string stands for; nil when it holds a character outside
    /// the map (then it is not a byte-level token, e.g. an added token written in plain text).
    static func bytes(of token: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(token.unicodeScalars.count)
        for s in token.unicodeScalars {
            guard let b = decode[s.value] else { return nil }
            out.append(b)
        }
        return out
    }

    /// The byte-level token string for raw bytes.
    static func string(of bytes: [UInt8]) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(encode[Int(b)]) }
        return String(s)
    }
}
