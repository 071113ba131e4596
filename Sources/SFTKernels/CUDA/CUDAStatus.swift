// What the run-time CUDA loader found (cuda_loader.c): which of the driver API, NVRTC and
// cuBLASLt were loaded and from where, every place searched for the missing ones, the driver
// version and the GPUs. `sftctl inspect --devices` prints it; `Device.unavailableReason` turns
// it into one sentence. Nothing here needs a GPU: without one it reports why.

import CSFTKernels
import Foundation

/// The CUDA pieces found on this machine.
///
/// ```swift
/// if let why = CUDAStatus.current.unavailableReason { print("CPU only: \(why)") }
/// ```
public struct CUDAStatus: Sendable {
    /// One run-time library and where it came from.
    public struct Library: Sendable, Equatable {
        /// What it is searched as: "libcuda.so.1", "libnvrtc.so*", "libcublasLt.so*".
        public let name: String
        /// What it does for sft, for messages.
        public let role: String
        /// The file loaded, or nil.
        public let path: String?
        /// Every place searched before the file was found (or all of them), with the reason
        /// each was rejected.
        public let tried: [String]
        /// How to make it available.
        public let hint: String

        /// "libnvrtc.so* (NVRTC, compiles sft's kernels) not found (tried: ...); hint".
        public var missingSentence: String {
            let places = tried.isEmpty ? "nowhere to look" : tried.joined(separator: "; ")
            return "\(name) (\(role)) not found (tried: \(places)); \(hint)"
        }
    }

    /// One GPU the driver reports.
    public struct GPU: Sendable, Equatable {
        /// The device ordinal (`cuda:N`).
        public let ordinal: Int
        /// The product name, e.g. "NVIDIA H100 80GB HBM3".
        public let name: String
        /// Compute capability (e.g. 9.0 for Hopper).
        public let major: Int, minor: Int
        /// Number of streaming multiprocessors.
        public let multiprocessors: Int
        /// Total device memory in bytes.
        public let memoryBytes: Int
        /// The NVRTC target the kernels are built for: "sm_80", "sm_86", "sm_90a", ...
        public var arch: String { CUDAStatus.arch(major: major, minor: minor) }
    }

    /// The CUDA driver library (libcuda).
    public let driver: Library
    /// NVRTC, which compiles the kernels at run time.
    public let nvrtc: Library
    /// cuBLASLt, which runs the GEMMs.
    public let cublasLt: Library
    /// CUDA version the driver supports (e.g. 13000 for 13.0), when the driver loaded.
    public let driverVersion: Int?
    /// "13.2" when NVRTC loaded.
    public let nvrtcVersion: String?
    /// cuBLASLt's version number (e.g. 130401), when it loaded.
    public let cublasLtVersion: Int?
    /// Why cuInit or device enumeration failed, when the driver loaded but is unusable.
    public let driverError: String?
    /// The GPUs the driver reports (empty when it did not load or cuInit failed).
    public let gpus: [GPU]
    /// The value of $SFT_CUDA_LIBS when the libraries were searched.
    public let searchPath: String?
    /// When the driver loaded is sft's emulated GPU (tools/cuda-emulate, for CI): what it is.
    public let emulation: String?

    /// The status of this process (libraries are searched once, at first use).
    public static let current = CUDAStatus.load()

    /// NVRTC target for a compute capability: sm_90a on Hopper (its wgmma/setmaxnreg need the
    /// arch-specific target), sm_XY elsewhere.
    public static func arch(major: Int, minor: Int) -> String {
        major == 9 && minor == 0 ? "sm_90a" : "sm_\(major)\(minor)"
    }

    static let roles = ["the NVIDIA driver's CUDA API", "NVRTC, which compiles sft's kernels",
                        "cuBLASLt, which runs the matrix products"]
    static let hints = [
        "install the NVIDIA driver, or set SFT_CUDA_LIBS to the folder holding libcuda.so.1",
        "pip install nvidia-cuda-nvrtc (its lib folder is searched), or set SFT_CUDA_LIBS to a folder with libnvrtc.so* and libnvrtc-builtins.so*",
        "pip install nvidia-cublas (its lib folder is searched), or set SFT_CUDA_LIBS to a folder with libcublasLt.so*",
    ]

    static func library(_ lib: Int32, path: String, tried: String) -> Library {
        Library(name: String(cString: sft_cuda_lib_name(lib)), role: roles[Int(lib)],
                path: path.isEmpty ? nil : path,
                tried: tried.split(separator: ";").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty },
                hint: hints[Int(lib)])
    }

    /// Searches for the three libraries in `searchPath` (colon-separated folders) and, when
    /// `includeDefaults`, the usual places — without loading anything for use. For tests and
    /// diagnostics; the process's own status is `current`.
    public static func probe(searchPath: String?, includeDefaults: Bool) -> [Library] {
        (0..<Int32(SFT_CUDA_LIB_COUNT)).map { lib in
            var path = [CChar](repeating: 0, count: 4096), tried = [CChar](repeating: 0, count: 8192)
            _ = sft_cuda_probe(lib, searchPath, includeDefaults ? 1 : 0, &path, path.count, &tried, tried.count)
            return library(lib, path: String(nulTerminated: path), tried: String(nulTerminated: tried))
        }
    }

    private static func load() -> CUDAStatus {
        let mask = sft_cuda_load()
        let libs = (0..<Int32(SFT_CUDA_LIB_COUNT)).map {
            library($0, path: String(cString: sft_cuda_lib_path($0)), tried: String(cString: sft_cuda_lib_tried($0)))
        }
        var nvrtcVersion: String?
        var major: Int32 = 0, minor: Int32 = 0
        if mask & (1 << SFT_CUDA_LIB_NVRTC) != 0, sft_nvrtc_version(&major, &minor) == 0 {
            nvrtcVersion = "\(major).\(minor)"
        }
        let ltVersion = mask & (1 << SFT_CUDA_LIB_CUBLASLT) != 0 ? Int(sft_cublaslt_version()) : nil
        var driverVersion: Int?, driverError: String?, gpus: [GPU] = []
        if mask & (1 << SFT_CUDA_LIB_DRIVER) != 0 {
            var v: Int32 = 0
            if sft_cuDriverGetVersion(&v) == 0 { driverVersion = Int(v) }
            let r = sft_cuInit(0)
            if r != 0 {
                driverError = "cuInit failed: \(cudaErrorText(r))"
            } else {
                var count: Int32 = 0
                let rc = sft_cuDeviceGetCount(&count)
                if rc != 0 { driverError = "cuDeviceGetCount failed: \(cudaErrorText(rc))" }
                for i in 0..<Int(max(0, count)) {
                    if let gpu = describeGPU(i) { gpus.append(gpu) }
                }
            }
        }
        return CUDAStatus(driver: libs[0], nvrtc: libs[1], cublasLt: libs[2], driverVersion: driverVersion,
                          nvrtcVersion: nvrtcVersion, cublasLtVersion: ltVersion, driverError: driverError,
                          gpus: gpus, searchPath: ProcessInfo.processInfo.environment["SFT_CUDA_LIBS"],
                          emulation: sft_cuda_emulation(Int32(SFT_CUDA_LIB_DRIVER)).map { String(cString: $0) })
    }

    private static func describeGPU(_ ordinal: Int) -> GPU? {
        var dev: sft_CUdevice = 0
        guard sft_cuDeviceGet(&dev, Int32(ordinal)) == 0 else { return nil }
        var name = [CChar](repeating: 0, count: 256)
        _ = sft_cuDeviceGetName(&name, Int32(name.count), dev)
        func attribute(_ a: Int32) -> Int {
            var v: Int32 = 0
            return sft_cuDeviceGetAttribute(&v, a, dev) == 0 ? Int(v) : 0
        }
        var bytes = 0
        _ = sft_cuDeviceTotalMem(&bytes, dev)
        return GPU(ordinal: ordinal, name: String(nulTerminated: name),
                   major: attribute(Int32(SFT_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)),
                   minor: attribute(Int32(SFT_CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)),
                   multiprocessors: attribute(Int32(SFT_CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)),
                   memoryBytes: bytes)
    }

    /// Nil when `cuda:ordinal` can run sft's ops; otherwise why not, in one sentence.
    public func unavailableReason(ordinal: Int = 0) -> String? {
        if driver.path == nil { return driver.missingSentence }
        if let driverError { return "the NVIDIA driver is installed but unusable: \(driverError)" }
        if gpus.isEmpty { return "the NVIDIA driver reports no CUDA GPU" }
        if ordinal < 0 || ordinal >= gpus.count {
            return "cuda:\(ordinal) does not exist (this machine has \(gpus.count) GPU\(gpus.count == 1 ? "" : "s"): cuda:0...cuda:\(gpus.count - 1))"
        }
        if nvrtc.path == nil { return nvrtc.missingSentence }
        if cublasLt.path == nil { return cublasLt.missingSentence }
        return nil
    }

    /// Nil when cuda:0 is usable; otherwise why not.
    public var unavailableReason: String? { unavailableReason(ordinal: 0) }

    /// A readable report: each library's file or the places searched, the driver, the GPUs.
    public var lines: [String] {
        var out: [String] = []
        out.append("SFT_CUDA_LIBS: \(searchPath ?? "(not set)")")
        for lib in [driver, nvrtc, cublasLt] {
            if let path = lib.path {
                out.append("\(lib.name): \(path)")
            } else {
                out.append("\(lib.name): not found — \(lib.hint)")
                for place in lib.tried { out.append("    tried \(place)") }
            }
        }
        if let v = driverVersion { out.append("driver: CUDA \(v / 1000).\(v % 1000 / 10)") }
        if let e = emulation { out.append("driver: EMULATED — \(e)") }
        if let e = driverError { out.append("driver error: \(e)") }
        if let v = nvrtcVersion { out.append("nvrtc: \(v)") }
        if let v = cublasLtVersion { out.append("cublasLt: \(v)") }
        for g in gpus {
            out.append("cuda:\(g.ordinal): \(g.name), compute \(g.major).\(g.minor) (\(g.arch)), \(g.multiprocessors) SMs, \(g.memoryBytes >> 20) MiB")
        }
        out.append("cuda: " + (unavailableReason.map { "unavailable — \($0)" } ?? "available"))
        return out
    }
}

/// "CUDA_ERROR_OUT_OF_MEMORY (out of memory)" for a driver status code.
func cudaErrorText(_ r: sft_CUresult) -> String {
    if r == Int32(SFT_CUDA_NOT_LOADED) { return "the CUDA driver library is not loaded" }
    var name: UnsafePointer<CChar>?, text: UnsafePointer<CChar>?
    _ = sft_cuGetErrorName(r, &name)
    _ = sft_cuGetErrorString(r, &text)
    let n = name.map { String(cString: $0) } ?? "CUDA error \(r)"
    return text.map { "\(n) (\(String(cString: $0)))" } ?? n
}

extension Device {
    /// Nil when ops can run on this device; otherwise why not, in one sentence (CPU is always
    /// available; CUDA needs the driver, a GPU, NVRTC and cuBLASLt — see `CUDAStatus`).
    public var unavailableReason: String? {
        switch self {
        case .cpu: return nil
        case .cuda(let i): return CUDAStatus.current.unavailableReason(ordinal: i)
        }
    }

    /// Whether ops can run on this device.
    public var isAvailable: Bool { unavailableReason == nil }
}
