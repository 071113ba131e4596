// Deterministic shuffling for data order. The generator (SplitMix64) and the Fisher–Yates walk
// are fixed here on purpose: a run's data order — and so exact resume from a saved DataCursor —
// depends on them producing the same permutation on every machine and every release.
// Changing either changes every seeded data order; do not.
import SFTKernels

/// Seeded permutations and samples of 0..<count.
enum DataShuffle {
    /// SplitMix64 (Steele, Lea, Flood 2014): the project's one seeded generator.
    public typealias Generator = SeededRandom

    /// A permutation of 0..<count that depends only on `count` and `seed`.
    public static func permutation(count: Int, seed: UInt64) -> [Int] {
        var p = Array(0..<count)
        var rng = Generator(seed: seed)
        // Fisher–Yates from the back.
        var i = count - 1
        while i > 0 {
            p.swapAt(i, rng.below(i + 1))
            i -= 1
        }
        return p
    }

    /// `k` distinct indices of 0..<count chosen uniformly by `seed`, in increasing order.
    public static func sample(_ k: Int, of count: Int, seed: UInt64) -> [Int] {
        if k >= count { return Array(0..<count) }
        // Partial Fisher–Yates over a sparse map: O(k) memory whatever the file size.
        var moved: [Int: Int] = [:]
        var rng = Generator(seed: seed)
        var out: [Int] = []
        out.reserveCapacity(k)
        for i in 0..<k {
            let j = i + rng.below(count - i)
            out.append(moved[j] ?? j)
            moved[j] = moved[i] ?? i
        }
        return out.sorted()
    }

    /// The seed of epoch `epoch` in a run seeded `seed`: distinct and well mixed per epoch.
    public static func epochSeed(_ seed: UInt64, epoch: Int) -> UInt64 {
        var g = Generator(seed: seed ^ (UInt64(truncatingIfNeeded: epoch) &* 0xD1B5_4A32_D192_ED03))
        return g.next()
    }
}

extension SeededRandom {
    /// Uniform in 0..<bound without modulo bias (Lemire's multiply-shift with rejection).
    mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0)
        let b = UInt64(bound)
        while true {
            let (hi, lo) = next().multipliedFullWidth(by: b)
            if lo >= (0 &- b) % b { return Int(hi) }
        }
    }
}
