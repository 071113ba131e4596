// The emulated GPU (tools/cuda-emulate) catches what a real GPU would silently get wrong or
// crash on, and says which op and argument: fresh device memory reads as NaN, a kernel argument,
// copy endpoint or GEMM operand in host memory is refused, launches outside a kernel's limits
// fail naming it. Runs where the loaded driver is the emulation (CI: SFT_CUDA_LIBS=
// .build/cuda-emulate); skipped elsewhere.

import CSFTKernels
import Foundation
import SFTKernels
import XCTest

final class CUDAEmulationTests: XCTestCase {
    var gpu: CUDABackend!

    override func setUpWithError() throws {
        guard CUDAStatus.current.emulation != nil else {
            throw XCTSkip("the CUDA driver loaded is not the emulated GPU (tools/cuda-emulate/build DIR; SFT_CUDA_LIBS=DIR)")
        }
        gpu = try CUDABackend.shared(ordinal: 0)
    }

    /// The driver's message for a failed call (cuGetErrorName + cuGetErrorString).
    func errorText(_ r: sft_CUresult) -> String {
        var name: UnsafePointer<CChar>?, text: UnsafePointer<CChar>?
        _ = sft_cuGetErrorName(r, &name)
        _ = sft_cuGetErrorString(r, &text)
        return (name.map { String(cString: $0) } ?? "?") + ": " + (text.map { String(cString: $0) } ?? "?")
    }

    /// Loads the elementwise module and returns `name` from it.
    func kernel(_ module: CUDAModuleSource, _ name: String) throws -> sft_CUfunction {
        let image = try gpu.kernelCache.image(for: module, arch: gpu.arch, driverVersion: CUDAStatus.current.driverVersion ?? 0)
        var m: sft_CUmodule?
        let r = image.withUnsafeBytes { sft_cuModuleLoadData(&m, $0.baseAddress) }
        XCTAssertEqual(r, 0, errorText(r))
        var f: sft_CUfunction?
        XCTAssertEqual(sft_cuModuleGetFunction(&f, m, name), 0)
        return try XCTUnwrap(f)
    }

    func launch(_ f: sft_CUfunction, threads: UInt32, _ slots: [UInt64]) -> sft_CUresult {
        var slots = slots
        return slots.withUnsafeMutableBufferPointer { sp in
            var params: [UnsafeMutableRawPointer?] = (0..<sp.count).map { UnsafeMutableRawPointer(sp.baseAddress! + $0) }
            return params.withUnsafeMutableBufferPointer { sft_cuLaunchKernel(f, 1, 1, 1, threads, 1, 1, 0, nil, $0.baseAddress, nil) }
        }
    }

    func testFreshDeviceMemoryIsNaN() throws {
        let v = BufferView(try gpu.allocate(bytes: 4096))
        var host = [Float](repeating: 0, count: 1024)
        try host.withUnsafeMutableBytes { try gpu.download(v, to: $0.baseAddress!, bytes: $0.count) }
        XCTAssertTrue(host.allSatisfy { $0.isNaN }, "fresh device memory should read as NaN")
    }

    func testKernelArgumentInHostMemoryFailsNamingKernelAndArgument() throws {
        let fill = try kernel(CUDAKernels.elementwise, "sft_fill_f32")
        var host = [Float](repeating: 0, count: 64)
        let r = host.withUnsafeMutableBytes { h in
            launch(fill, threads: 32, [UInt64(UInt(bitPattern: h.baseAddress!)), UInt64(Float(1).bitPattern), 64])
        }
        XCTAssertNotEqual(r, 0)
        let text = errorText(r)
        XCTAssertTrue(text.contains("sft_fill_f32 argument 0") && text.contains("host memory"), text)
        XCTAssertEqual(host, [Float](repeating: 0, count: 64), "the kernel must not have run")
        // The same launch on device memory runs.
        let y = BufferView(try gpu.allocate(bytes: 256))
        XCTAssertEqual(launch(fill, threads: 32, [UInt64(UInt(bitPattern: y.raw)), UInt64(Float(1).bitPattern), 64]), 0)
    }

    func testLaunchAboveTheKernelsLaunchBoundsFails() throws {
        let f = try kernel(CUDAKernels.attention, "sft_attn_fwd_f32_dq4")
        // More slots than the kernel has parameters (17 since softcap): the driver reads one per
        // parameter, and a short array let it read past the end (a hang in CI, stop 21).
        let r = launch(f, threads: 256, [UInt64](repeating: 0, count: 32))
        XCTAssertNotEqual(r, 0)
        XCTAssertTrue(errorText(r).contains("sft_attn_fwd_f32_dq4") && errorText(r).contains("__launch_bounds__(128)"), errorText(r))
    }

    func testCopiesCheckWhichSideIsDeviceMemory() throws {
        let v = BufferView(try gpu.allocate(bytes: 64))
        var host = [UInt8](repeating: 0, count: 64)
        host.withUnsafeMutableBytes { h in
            let device = sft_CUdeviceptr(UInt(bitPattern: v.raw)), hostAddress = sft_CUdeviceptr(UInt(bitPattern: h.baseAddress!))
            var r = sft_cuMemcpyHtoDAsync(hostAddress, h.baseAddress!, 64, nil)
            XCTAssertTrue(errorText(r).contains("cuMemcpyHtoDAsync destination") && errorText(r).contains("host memory"), errorText(r))
            r = sft_cuMemcpyDtoHAsync(h.baseAddress!, device, 128, nil)
            XCTAssertTrue(errorText(r).contains("run past the end"), errorText(r))
            r = sft_cuMemcpyDtoHAsync(v.raw, device, 64, nil)
            XCTAssertTrue(errorText(r).contains("device memory where host memory was expected"), errorText(r))
        }
    }

    func testGemmOperandInHostMemoryFailsNamingTheOperand() throws {
        let b = BufferView(try gpu.allocate(bytes: 64)), c = BufferView(try gpu.allocate(bytes: 64))
        var host = [Float](repeating: 1, count: 16)
        try host.withUnsafeMutableBytes { h in
            // A host pointer wrapped as a cuda:0 buffer: the bug class the emulation is for.
            let a = BufferView(Buffer(device: gpu.device, bytes: h.count, address: h.baseAddress!, release: { _, _ in }))
            XCTAssertThrowsError(try gpu.gemm(transA: false, transB: false, M: 4, N: 4, K: 4, alpha: 1, A: a, lda: 4, strideA: 0,
                                              B: b, ldb: 4, strideB: 0, beta: 0, C: c, ldc: 4, strideC: 0, batch: 1)) { error in
                XCTAssertTrue("\(error)".contains("host memory"), "\(error)")
            }
        }
    }
}
