// A stop request for a running job that any thread — or a signal handler — may raise: one
// atomic flag (Synchronization's lock-free `Atomic`), read by the trainer at each step boundary.

import Synchronization

/// Raised once, never lowered. Pass it to `Finetune.run(_:stop:…)` (or set `Trainer.stopFlag`);
/// the run stops after its current step and still writes its result.
public final class StopFlag: Sendable {
    private let raised = Atomic<Bool>(false)

    /// A flag not yet raised.
    public init() {}

    /// Asks the run to stop (safe from a signal handler: a single lock-free store).
    public func raise() { raised.store(true, ordering: .relaxed) }

    /// Whether `raise()` has been called (the trainer checks at each step boundary).
    public var isRaised: Bool { raised.load(ordering: .relaxed) }
}
