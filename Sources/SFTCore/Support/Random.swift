// A small seeded generator (SplitMix64) for reproducible initialization, shuffling and
// sampling. Its whole state is one UInt64, so checkpoints save and restore it exactly.
/// A small seeded generator (SplitMix64) for reproducible initialization, shuffling, dropout and
/// sampling. Its whole state is one UInt64, so checkpoints save and restore it exactly.
public struct SeededRandom: RandomNumberGenerator, Codable, Equatable, Sendable {
    /// The generator's whole state; advances by a fixed odd constant per `next()`.
    public var state: UInt64
    /// A generator whose sequence is fixed by `seed` (equal seeds give equal sequences).
    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Standard normal (Box–Muller).
    public mutating func nextNormal() -> Double {
        let u1 = max(nextUnit(), 1e-300), u2 = nextUnit()
        return (-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2)
    }
}

import Foundation
import SFTKernels
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }
