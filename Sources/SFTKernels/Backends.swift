// Finding the backend for a device. CPU is always there; CUDA is loaded at run time (the driver,
// NVRTC and cuBLASLt), so asking for it where something is missing reports what, in one sentence.

/// The backend that runs ops on `device`.
///
/// ```swift
/// let cpu = try backend(for: .cpu)          // CPUBackend.shared
/// let gpu = try backend(for: .cuda(0))      // CUDABackend.shared(ordinal: 0)
/// ```
/// - Throws: `KernelError.backendUnavailable` with the reason when the device cannot be used.
public func backend(for device: Device) throws -> any Backend {
    switch device {
    case .cpu:
        return CPUBackend.shared
    case .cuda(let ordinal):
        return try CUDABackend.shared(ordinal: ordinal)
    }
}

/// Sets how many threads the CPU backend's pool (and OpenBLAS inside its GEMM blocks) uses.
/// A CPU setting that callers above SFTKernels may make without naming the CPU backend.
public func setCPUThreads(_ n: Int) {
    CPUBackend.shared.setThreads(n)
}

/// The CPU backend's thread count.
public var cpuThreads: Int { CPUBackend.shared.threads }
