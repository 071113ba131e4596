// Where a step's time goes, op by op: when `OpProfile.enabled` is set, the CPU backend adds the
// wall time (and, for GEMMs, the flops) of every op it runs to a table keyed by op name.
// `sftctl bench train --profile` prints it next to the step time, so the time spent between
// ops (Swift bookkeeping, allocation) is the difference. Off by default: one branch per op.

import Foundation
import Synchronization

/// Per-op wall time and flops of the CPU backend (`sftctl bench train --profile`); off by default.
public enum OpProfile {
    private static let on = Atomic<Bool>(false)
    private static let table = Mutex<[String: Entry]>([:])

    /// Whether the CPU backend's ops are timed (an atomic: set it from any thread).
    public static var enabled: Bool {
        get { on.load(ordering: .relaxed) }
        set { on.store(newValue, ordering: .relaxed) }
    }

    /// Totals of one op name.
    public struct Entry: Sendable {
        /// Times the op ran.
        public var calls = 0
        /// Total wall-clock seconds in the op.
        public var seconds = 0.0
        /// Total floating-point operations counted (GEMMs only; 0 for other ops).
        public var flops = 0.0
    }

    /// The totals so far, largest time first.
    public static var entries: [(name: String, entry: Entry)] {
        table.withLock { $0.map { ($0.key, $0.value) } }.sorted { $0.entry.seconds > $1.entry.seconds }
    }

    /// Clears every total (e.g. after warm-up steps).
    public static func reset() { table.withLock { $0 = [:] } }

    /// The start time of an op, for `end`; 0 when profiling is off.
    @inline(__always)
    static func begin() -> UInt64 { enabled ? DispatchTime.now().uptimeNanoseconds : 0 }

    /// Adds the time since `start` (from `begin`) to `name`.
    @inline(__always)
    static func end(_ name: String, _ start: UInt64, flops: Double = 0) {
        guard enabled, start > 0 else { return }
        let dt = Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
        table.withLock { t in
            t[name, default: Entry()].calls += 1
            t[name, default: Entry()].seconds += dt
            t[name, default: Entry()].flops += flops
        }
    }
}
