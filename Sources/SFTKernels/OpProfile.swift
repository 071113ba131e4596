// Where a step's time goes, op by op: when `OpProfile.enabled` is set, the CPU backend adds the
// wall time (and, for GEMMs, the flops) of every op it runs to a table keyed by op name.
// `sftctl bench train --profile` prints it next to the step time, so the time spent between
// ops (Swift bookkeeping, allocation) is the difference. Off by default: one branch per op.

import Foundation

public enum OpProfile {
    /// Set before the ops to measure; not meant to change while ops run on other threads.
    nonisolated(unsafe) public static var enabled = false
    nonisolated(unsafe) private static var table: [String: Entry] = [:]

    /// Totals of one op name.
    public struct Entry: Sendable {
        public var calls = 0
        public var seconds = 0.0
        public var flops = 0.0
    }

    /// The totals so far, largest time first.
    public static var entries: [(name: String, entry: Entry)] {
        table.map { ($0.key, $0.value) }.sorted { $0.entry.seconds > $1.entry.seconds }
    }

    public static func reset() { table = [:] }

    /// The start time of an op, for `end`; 0 when profiling is off.
    @inline(__always)
    static func begin() -> UInt64 { enabled ? DispatchTime.now().uptimeNanoseconds : 0 }

    /// Adds the time since `start` (from `begin`) to `name`.
    @inline(__always)
    static func end(_ name: String, _ start: UInt64, flops: Double = 0) {
        guard enabled, start > 0 else { return }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        table[name, default: Entry()].calls += 1
        table[name, default: Entry()].seconds += dt
        table[name, default: Entry()].flops += flops
    }
}
