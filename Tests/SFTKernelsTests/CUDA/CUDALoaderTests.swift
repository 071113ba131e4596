// The run-time CUDA loader reports what it found and, for what it did not, every place it
// looked: a search that can find nothing names each missing library and the folders tried;
// an unusable CUDA device says why in one sentence, and asking for its backend throws that
// sentence instead of crashing.

import Foundation
import SFTKernels
import XCTest

final class CUDALoaderTests: XCTestCase {
    func testSearchOfAnEmptyPlaceNamesEveryMissingLibraryAndWhereItLooked() {
        let bogus = "/nonexistent/sft-cuda-libs"
        let libs = CUDAStatus.probe(searchPath: bogus, includeDefaults: false)
        XCTAssertEqual(libs.map(\.name), ["libcuda.so.1", "libnvrtc.so*", "libcublasLt.so*"])
        for lib in libs {
            XCTAssertNil(lib.path, "\(lib.name) cannot be found in \(bogus)")
            XCTAssertTrue(lib.tried.contains { $0.hasPrefix(bogus + "/") }, "\(lib.name) tried: \(lib.tried)")
            let sentence = lib.missingSentence
            XCTAssertTrue(sentence.contains(lib.name) && sentence.contains(bogus) && sentence.contains("not found"), sentence)
        }
        XCTAssertTrue(libs[1].missingSentence.contains("nvidia-cuda-nvrtc"), "the NVRTC hint names the wheel")
    }

    func testSearchPathFindsNVRTCWhereItIs() throws {
        // With the folder the process loaded NVRTC from as the only place, the probe finds it.
        guard let path = CUDAStatus.current.nvrtc.path else { throw XCTSkip("NVRTC not found: \(NVRTC.unavailableReason ?? "")") }
        let dir = (path as NSString).deletingLastPathComponent
        let libs = CUDAStatus.probe(searchPath: "/nonexistent/first:" + dir, includeDefaults: false)
        XCTAssertEqual(libs[1].path.map { ($0 as NSString).deletingLastPathComponent }, dir)
        XCTAssertTrue(libs[1].tried.contains { $0.hasPrefix("/nonexistent/first/") }, "\(libs[1].tried)")
    }

    func testUnavailableCUDASaysWhyAndBackendLookupThrowsIt() throws {
        let status = CUDAStatus.current
        XCTAssertNil(Device.cpu.unavailableReason)
        XCTAssertTrue(Device.cpu.isAvailable)
        XCTAssertFalse(status.lines.isEmpty)
        guard let why = Device.cuda(0).unavailableReason else {
            // A usable GPU: the backend comes up, and a GPU that does not exist is refused.
            XCTAssertTrue(try backend(for: .cuda(0)) is CUDABackend)
            XCTAssertNotNil(Device.cuda(status.gpus.count).unavailableReason)
            return
        }
        if status.driver.path == nil {
            XCTAssertTrue(why.contains("libcuda.so.1"), why)
            XCTAssertTrue(why.contains("tried"), why)
        }
        XCTAssertFalse(why.contains("\n"), "one sentence: \(why)")
        XCTAssertTrue(status.lines.last?.contains("unavailable") ?? false, "\(status.lines)")
        XCTAssertThrowsError(try backend(for: .cuda(0))) { error in
            guard case KernelError.backendUnavailable(.cuda(0), let reason) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(reason, why)
        }
    }
}
