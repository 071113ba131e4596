import XCTest
import SFTCore
import SFTKernels
final class VersionTests: XCTestCase {
    func testVersionIsSemver() { XCTAssertEqual(sftVersion.split(separator: ".").count, 3) }
}
