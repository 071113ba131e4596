// Bit-exactness against bitsandbytes: packed NF4/FP4 codes, absmax, the dequantized values,
// the 8-bit dynamic map and the double-quantized scales, compared with what the library itself
// produced (Fixtures/quantization/bnb4bit.safetensors, made by tools/make_nf4_fixtures.py).
import Foundation
import XCTest
import SFTCore
import SFTKernels

final class BitsandbytesFixtureTests: XCTestCase {
    struct Case: Decodable { let name: String; let type: String; let blocksize: Int; let shape: [Int]; let double: Bool }

    static let file: SafetensorsFile = try! SafetensorsFile(url: Fixtures.url("quantization/bnb4bit.safetensors"))

    var cases: [Case] {
        get throws {
            let json = try XCTUnwrap(Self.file.metadata["cases"])
            return try JSONDecoder().decode([Case].self, from: Data(json.utf8))
        }
    }

    func floats(_ name: String) throws -> [Float] { try Self.file.loadF32(name) }
    func bytes(_ name: String) throws -> [UInt8] {
        let info = try XCTUnwrap(Self.file.tensor(named: name), name)
        return Array(Self.file.rawBytes(of: info))
    }

    /// Equal bit patterns; reports the first differing indices.
    func assertBitsEqual(_ a: [Float], _ b: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let bad = zip(a, b).enumerated().filter { $0.element.0.bitPattern != $0.element.1.bitPattern }.prefix(5)
        XCTAssertTrue(bad.isEmpty, "\(what): first differences (index, sft, bitsandbytes): \(bad.map { ($0.offset, $0.element.0, $0.element.1) })",
                      file: file, line: line)
    }

    func assertBytesEqual(_ a: [UInt8], _ b: [UInt8], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, what, file: file, line: line)
        let bad = zip(a, b).enumerated().filter { $0.element.0 != $0.element.1 }.prefix(5)
        XCTAssertTrue(bad.isEmpty, "\(what): first differences (index, sft, bitsandbytes): \(bad.map { ($0.offset, $0.element.0, $0.element.1) })",
                      file: file, line: line)
    }

    func testDynamicMapIsBitsandbytesTable() throws {
        assertBitsEqual(BlockwiseQuant.dynamicMap, try floats("dynamic_map"), "create_dynamic_map(signed=True)")
    }

    func testPackedCodesAndAbsmaxAreBitExactInBothQuantizers() throws {
        for c in try cases {
            let type = try XCTUnwrap(QuantType(rawValue: c.type))
            for reference in [true, false] {
                let (packed, absmax) = try BlockwiseQuant.quantize4bit(try floats("\(c.name).x"), type: type, blockSize: c.blocksize,
                                                                       reference: reference)
                let kind = reference ? "reference" : "fast"
                assertBytesEqual(packed, try bytes("\(c.name).packed"), "\(c.name) packed (\(kind))")
                assertBitsEqual(absmax, try floats("\(c.name).absmax"), "\(c.name) absmax (\(kind))")
            }
        }
    }

    func testDequantizationIsBitExactInBothKernels() throws {
        for c in try cases {
            let type = try XCTUnwrap(QuantType(rawValue: c.type))
            let count = c.shape.reduce(1, *)
            var absmax = try floats("\(c.name).absmax")
            if c.double {
                absmax = try BlockwiseQuant.dequantizeBlockwise8(codes: try bytes("\(c.name).qabsmax"), absmax: try floats("\(c.name).absmax2"),
                                                                 blockSize: 256, offset: try floats("\(c.name).offset")[0])
            }
            let expected = try floats("\(c.name).dequant")
            for reference in [true, false] {
                let y = try BlockwiseQuant.dequantize4bit(packed: try bytes("\(c.name).packed"), absmax: absmax, count: count,
                                                          type: type, blockSize: c.blocksize, reference: reference)
                assertBitsEqual(y, expected, "\(c.name) dequantize (\(reference ? "reference" : "fast"))")
            }
        }
    }

    /// Given bitsandbytes' offset, the 8-bit codes and their scales match its reference kernel;
    /// sft's own offset (an f64 mean) is within a few f32 ulps of bitsandbytes' f32 mean.
    func testDoubleQuantizedScalesAreBitExact() throws {
        var compared = 0
        for c in try cases where c.double {
            let absmax = try floats("\(c.name).absmax"), offset = try floats("\(c.name).offset")[0]
            let (codes, absmax2) = try BlockwiseQuant.quantizeBlockwise8(absmax.map { $0 - offset }, blockSize: 256)
            assertBytesEqual(codes, try bytes("\(c.name).qabsmax"), "\(c.name) 8-bit codes")
            assertBitsEqual(absmax2, try floats("\(c.name).absmax2"), "\(c.name) 8-bit scales")
            // bitsandbytes' CPU build approximates the nearest code with a lookup table: at most
            // one code step away, rarely.
            let cpu = try bytes("\(c.name).qabsmax_cpu")
            let differing = zip(codes, cpu).filter { $0 != $1 }
            XCTAssertTrue(differing.allSatisfy { abs(Int($0) - Int($1)) == 1 }, "\(c.name): LUT codes differ by more than one step")
            XCTAssertLessThanOrEqual(differing.count, codes.count / 50)

            let w = try QuantizedWeight(quantizing: try floats("\(c.name).x"), shape: c.shape,
                                        config: QuantizationConfig(type: QuantType(rawValue: c.type)!, blockSize: c.blocksize, doubleQuant: true),
                                        on: CPUBackend.shared)
            guard case .doubleQuantized(let dq) = w.scales else { return XCTFail("not double-quantized") }
            let ulp = offset.ulp
            XCTAssertLessThanOrEqual(abs(dq.offset - offset), 4 * ulp, "\(c.name) offset \(dq.offset) vs \(offset)")
            compared += 1
        }
        XCTAssertEqual(compared, 2)
    }
}
