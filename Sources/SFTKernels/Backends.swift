// Finding the backend for a device. CPU is always there; CUDA is loaded at run time by its own
// backend (not built yet), so asking for it now reports why it is unavailable.

/// The backend that runs ops on `device`.
///
/// ```swift
/// let cpu = try backend(for: .cpu)          // CPUBackend.shared
/// ```
/// - Throws: `KernelError.backendUnavailable` with the reason when the device cannot be used.
public func backend(for device: Device) throws -> any Backend {
    switch device {
    case .cpu:
        return CPUBackend.shared
    case .cuda:
        throw KernelError.backendUnavailable(device, reason: "this build of sft has no CUDA backend yet; use the cpu device")
    }
}
