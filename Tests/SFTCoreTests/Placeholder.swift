import XCTest
import SFTCore
final class VersionTests: XCTestCase {
    func testVersionIsSemver() { XCTAssertEqual(sftVersion.split(separator: ".").count, 3) }
}
