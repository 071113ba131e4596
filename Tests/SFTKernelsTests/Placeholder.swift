import XCTest
import SFTKernels
final class DeviceParsingTests: XCTestCase {
    func testDeviceNamesParse() throws {
        XCTAssertEqual(try Device(parsing: "cuda:1"), .cuda(1))
        XCTAssertThrowsError(try Device(parsing: "tpu"))
    }
}
