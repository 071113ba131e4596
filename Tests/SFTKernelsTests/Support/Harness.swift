// Test support for the kernel tests: a seeded random generator, moving arrays in and out of
// CPU buffers, comparisons that print the first differing values, central-difference gradients,
// and running a body once per instruction set the CPU supports.

import Foundation
import SFTKernels
import XCTest

/// SplitMix64: small, seeded, the same sequence on every machine.
struct RNG {
    var state: UInt64
    init(_ seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    mutating func uniform() -> Double { Double(next() >> 11) * 0x1p-53 }
    /// Uniform in [-scale, scale).
    mutating func float(_ scale: Double = 1) -> Float { Float((uniform() * 2 - 1) * scale) }
    mutating func floats(_ n: Int, scale: Double = 1) -> [Float] { (0..<n).map { _ in float(scale) } }
    mutating func int(_ range: Range<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func pick<T>(_ options: [T]) -> T { options[int(0..<options.count)] }
    /// `count` distinct indices in [0, n), sorted (all of them when count >= n).
    mutating func indices(_ count: Int, of n: Int) -> [Int] {
        if count >= n { return Array(0..<n) }
        var set = Set<Int>()
        while set.count < count { set.insert(int(0..<n)) }
        return set.sorted()
    }
}

/// Arrays in and out of CPU buffers.
enum Dev {
    static let cpu = CPUBackend.shared

    static func upload(_ a: [Float]) throws -> BufferView {
        let v = BufferView(try cpu.allocate(bytes: a.count * 4))
        try a.withUnsafeBytes { try cpu.upload($0.baseAddress!, to: v, bytes: $0.count) }
        return v
    }
    static func upload(_ a: [Int32]) throws -> BufferView {
        let v = BufferView(try cpu.allocate(bytes: a.count * 4))
        try a.withUnsafeBytes { try cpu.upload($0.baseAddress!, to: v, bytes: $0.count) }
        return v
    }
    static func upload(_ a: [UInt16]) throws -> BufferView {
        let v = BufferView(try cpu.allocate(bytes: a.count * 2))
        try a.withUnsafeBytes { try cpu.upload($0.baseAddress!, to: v, bytes: $0.count) }
        return v
    }
    static func zeros(_ n: Int) throws -> BufferView {
        let v = BufferView(try cpu.allocate(bytes: n * 4))
        try cpu.fill(v, value: 0, count: n)
        return v
    }
    static func bytes(_ n: Int) throws -> BufferView { BufferView(try cpu.allocate(bytes: n)) }

    static func floats(_ v: BufferView, _ n: Int) throws -> [Float] {
        var a = [Float](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { try cpu.download(v, to: $0.baseAddress!, bytes: $0.count) }
        return a
    }
    static func halves(_ v: BufferView, _ n: Int) throws -> [UInt16] {
        var a = [UInt16](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { try cpu.download(v, to: $0.baseAddress!, bytes: $0.count) }
        return a
    }
    static func bytes(_ v: BufferView, _ n: Int) throws -> [UInt8] {
        var a = [UInt8](repeating: 0, count: n)
        try a.withUnsafeMutableBytes { try cpu.download(v, to: $0.baseAddress!, bytes: $0.count) }
        return a
    }
}

extension Array where Element == Float {
    var doubles: [Double] { map(Double.init) }
}

/// Asserts |got - want| <= atol + rtol * |want| elementwise; on failure reports the worst error
/// and the first differing values.
func assertClose(_ got: [Float], _ want: [Double], rtol: Double = 1e-5, atol: Double = 1e-6,
                 _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    guard got.count == want.count else {
        XCTFail("\(what): \(got.count) values, expected \(want.count)", file: file, line: line)
        return
    }
    var bad: [String] = [], worst = 0.0, nbad = 0
    for i in 0..<got.count {
        let g = Double(got[i]), w = want[i]
        let err = abs(g - w)
        let ok = err <= atol + rtol * abs(w) || (g.isNaN && w.isNaN) || (g == w)
        if !ok {
            nbad += 1
            worst = Swift.max(worst, err)
            if bad.count < 5 { bad.append("[\(i)] got \(g) want \(w)") }
        }
    }
    if nbad > 0 {
        XCTFail("\(what): \(nbad)/\(got.count) values differ (worst abs error \(worst)); first: \(bad.joined(separator: ", "))",
                file: file, line: line)
    }
}

/// Asserts an analytic gradient matches a numeric one: |a - n| <= tol * max|n| (+ a tiny floor),
/// so a wrong formula (errors of the gradient's own size) fails and float rounding passes.
func assertGradient(_ analytic: [Double], _ numeric: [Double], tol: Double = 2e-3, _ what: String,
                    file: StaticString = #filePath, line: UInt = #line) {
    let scale = Swift.max(numeric.map(abs).max() ?? 0, 1e-6)
    var bad: [String] = [], nbad = 0
    for i in 0..<numeric.count where abs(analytic[i] - numeric[i]) > tol * scale {
        nbad += 1
        if bad.count < 5 { bad.append("[\(i)] analytic \(analytic[i]) numeric \(numeric[i])") }
    }
    if nbad > 0 {
        XCTFail("\(what): \(nbad)/\(numeric.count) gradient entries differ (max |grad| \(scale)); first: \(bad.joined(separator: ", "))",
                file: file, line: line)
    }
}

/// Central differences of a Double loss at the given indices of x.
func numericGradient(_ x: [Double], at indices: [Int], h: Double = 1e-5, _ loss: ([Double]) -> Double) -> [Double] {
    indices.map { i in
        var xp = x, xm = x
        xp[i] += h
        xm[i] -= h
        return (loss(xp) - loss(xm)) / (2 * h)
    }
}

/// sum(out * r) in Double: the scalar loss of every gradient check.
func dotLoss(_ out: [Double], _ r: [Float]) -> Double {
    var s = 0.0
    for i in 0..<out.count { s += out[i] * Double(r[i]) }
    return s
}

/// Runs `body` once per instruction set this CPU supports (restoring the best one after), so
/// each C kernel variant is checked, not only the one this machine would pick.
func forEachISA(_ body: (String) throws -> Void) rethrows {
    let all = CPUBackend.supportedInstructionSets
    defer { try? CPUBackend.setInstructionSet(all[0]) }
    for isa in all {
        try? CPUBackend.setInstructionSet(isa)
        try body(isa)
    }
}
