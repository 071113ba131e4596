// Compiling the CUDA C kernels with NVRTC (no GPU needed) and caching the machine code on disk:
// ~/.cache/sft/kernels (or $SFT_KERNEL_CACHE, or $XDG_CACHE_HOME/sft/kernels), one file per
// module, named by a hash of the source, the options, the architecture, the NVRTC version and
// the driver version, so any change compiles afresh and stale files are never read.

import CSFTKernels
import Foundation

/// NVRTC, the run-time CUDA C compiler, as loaded by the CUDA loader.
public enum NVRTC {
    /// Nil when NVRTC is loaded; otherwise why not.
    public static var unavailableReason: String? {
        let lib = CUDAStatus.current.nvrtc
        return lib.path == nil ? lib.missingSentence : nil
    }

    /// Whether the NVRTC loaded is the emulated GPU's (tools/cuda-emulate), which builds host
    /// code rather than CUBIN or PTX.
    public static var isEmulated: Bool { sft_cuda_emulation(Int32(SFT_CUDA_LIB_NVRTC)) != nil }

    /// "13.2" when loaded.
    public static var version: String? { CUDAStatus.current.nvrtcVersion }

    /// The options every kernel module is compiled with for `arch` ("sm_80", "sm_90a").
    public static func options(arch: String) -> [String] {
        ["--gpu-architecture=\(arch)", "--std=c++17"]
    }

    /// Compiles one CUDA C source: machine code (CUBIN) for a real architecture, or PTX.
    /// - Returns: the image and NVRTC's log (warnings; with `--ptxas-options=-v` among
    ///   `extraOptions`, the registers and spills of every kernel).
    /// - Throws: `KernelError.native` with the compiler's log when the source does not compile.
    public static func compile(source: String, name: String, arch: String, extraOptions: [String] = [],
                               ptx: Bool = false) throws -> (image: [UInt8], log: String) {
        if let why = unavailableReason { throw KernelError.backendUnavailable(.cuda(0), reason: why) }
        let options = Self.options(arch: arch) + extraOptions
        var cOptions = options.map { strdup($0) }
        defer { for p in cOptions { free(p) } }
        var image: UnsafeMutableRawPointer?
        var size = 0
        var logPointer: UnsafeMutablePointer<CChar>?
        let status = cOptions.withUnsafeMutableBufferPointer { opts in
            opts.withMemoryRebound(to: UnsafePointer<CChar>?.self) { o in
                sft_nvrtc_compile(source, name, o.baseAddress, Int32(o.count), ptx ? 0 : 1, &image, &size, &logPointer)
            }
        }
        let log = logPointer.map { String(cString: $0) } ?? ""
        sft_cuda_free(logPointer)
        guard status == 0, let image else {
            throw KernelError.native(op: "nvrtc \(name) (\(arch))",
                                     message: String(cString: sft_last_error()) + (log.isEmpty ? "" : "\n" + log))
        }
        defer { sft_cuda_free(image) }
        return (Array(UnsafeRawBufferPointer(start: image, count: size)), log)
    }
}

/// Compiled kernel modules on disk, keyed by everything that changes the machine code.
public final class CUDAKernelCache: @unchecked Sendable {
    /// Where files are kept; nil keeps nothing (compiles every time).
    public let directory: URL?
    private let lock = NSLock()
    private var hitCount = 0, missCount = 0

    /// `$SFT_KERNEL_CACHE`, else `$XDG_CACHE_HOME/sft/kernels`, else `~/.cache/sft/kernels`.
    public static var defaultDirectory: URL? {
        let env = ProcessInfo.processInfo.environment
        if let d = env["SFT_KERNEL_CACHE"], !d.isEmpty { return URL(fileURLWithPath: d) }
        if let d = env["XDG_CACHE_HOME"], !d.isEmpty { return URL(fileURLWithPath: d).appendingPathComponent("sft/kernels") }
        if let home = env["HOME"], !home.isEmpty { return URL(fileURLWithPath: home).appendingPathComponent(".cache/sft/kernels") }
        return nil
    }

    /// A cache in `directory` (created when first written).
    /// - Parameter directory: Where compiled modules are kept; nil keeps nothing.
    public init(directory: URL? = CUDAKernelCache.defaultDirectory) {
        self.directory = directory
    }

    /// Modules read from disk / compiled, since this cache was made.
    public var hits: Int { lock.lock(); defer { lock.unlock() }; return hitCount }
    /// Modules compiled because no cached file matched, since this cache was made.
    public var misses: Int { lock.lock(); defer { lock.unlock() }; return missCount }

    /// The cache file name for a module: name, arch and a 64-bit FNV-1a hash of the key.
    public static func fileName(module: CUDAModuleSource, arch: String, driverVersion: Int) -> String {
        let key = [module.source, NVRTC.options(arch: arch).joined(separator: " "), arch,
                   NVRTC.version ?? "?", String(driverVersion)].joined(separator: "\u{0}")
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in key.utf8 { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01b3 }
        let hex = String(h, radix: 16)
        return "\(module.name)-\(arch)-\(String(repeating: "0", count: 16 - hex.count))\(hex).cubin"
    }

    /// The CUBIN of `module` for `arch`: from disk when cached, else compiled and stored.
    /// A cache folder that cannot be written only costs the compile next time.
    public func image(for module: CUDAModuleSource, arch: String, driverVersion: Int) throws -> [UInt8] {
        let file = directory?.appendingPathComponent(Self.fileName(module: module, arch: arch, driverVersion: driverVersion))
        if let file, let data = try? Data(contentsOf: file), !data.isEmpty {
            lock.lock(); hitCount += 1; lock.unlock()
            return [UInt8](data)
        }
        let image = try NVRTC.compile(source: module.source, name: "\(module.name).cu", arch: arch).image
        lock.lock(); missCount += 1; lock.unlock()
        if let file, let directory {
            // Write to a unique temporary name, then rename: readers never see half a file.
            try? FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let tmp = directory.appendingPathComponent(".\(file.lastPathComponent).\(getpid()).\(UInt32.random(in: 0...UInt32.max))")
            if (try? Data(image).write(to: tmp)) != nil {
                if rename(tmp.path, file.path) != 0 { try? FileManager.default.removeItem(at: tmp) }
            }
        }
        return image
    }
}
