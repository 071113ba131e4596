// RoPE (rotate-half) against the Double reference, on q and k slices of a fused qkv buffer
// (row strides larger than H*D), with positions that restart per packed document; in place;
// inverse undoes forward; and backward (the inverse rotation) matches finite differences.

import SFTKernels
import XCTest

final class RopeTests: XCTestCase {
    let cpu = CPUBackend.shared

    func testRopeOnFusedQKVSlicesMatchesReference() throws {
        var rng = RNG(20)
        try forEachISA { isa in
            for (N, H, KV, D) in [(5, 3, 1, 4), (37, 9, 3, 64), (12, 2, 2, 300), (80, 9, 3, 64)] {
                let ld = (H + 2 * KV) * D
                let qkv = rng.floats(N * ld, scale: 2)
                let positions = (0..<N).map { Int32($0 < N / 2 ? $0 : $0 - N / 2 + 1000) }   // a second document
                let invFreq = Ref.invFreq(D: D)
                let vqkv = try Dev.upload(qkv), vpos = try Dev.upload(positions), vf = try Dev.upload(invFreq)
                // k slice (offset H*D) -> dense output
                let vy = try Dev.zeros(N * KV * D)
                try cpu.rope(x: vqkv.advanced(byBytes: H * D * 4), ldx: ld, y: vy, ldy: KV * D, positions: vpos,
                             invFreq: vf, N: N, H: KV, D: D, inverse: false)
                assertClose(try Dev.floats(vy, N * KV * D),
                            Ref.rope(qkv.doubles, ldx: ld, offset: H * D, positions: positions, invFreq: invFreq, N: N, H: KV, D: D, inverse: false),
                            rtol: 1e-4, atol: 2e-5, "rope k slice \(isa) N=\(N) KV=\(KV) D=\(D)")
                // q slice in place, then the inverse brings it back
                try cpu.rope(x: vqkv, ldx: ld, y: vqkv, ldy: ld, positions: vpos, invFreq: vf, N: N, H: H, D: D, inverse: false)
                let rotated = try Dev.floats(vqkv, N * ld)
                let wantQ = Ref.rope(qkv.doubles, ldx: ld, positions: positions, invFreq: invFreq, N: N, H: H, D: D, inverse: false)
                assertClose((0..<N).flatMap { n in rotated[n * ld..<n * ld + H * D] }, wantQ, rtol: 1e-4, atol: 2e-5,
                            "rope q in place \(isa) N=\(N) H=\(H) D=\(D)")
                XCTAssertEqual(Array(rotated[H * D..<ld]), Array(qkv[H * D..<ld]), "rope must not touch k/v columns")
                try cpu.rope(x: vqkv, ldx: ld, y: vqkv, ldy: ld, positions: vpos, invFreq: vf, N: N, H: H, D: D, inverse: true)
                assertClose(try Dev.floats(vqkv, N * ld), qkv.doubles, rtol: 1e-4, atol: 1e-5, "rope inverse \(isa)")
            }
        }
    }

    func testRopeBackwardMatchesFiniteDifferences() throws {
        var rng = RNG(21)
        let (N, H, D) = (6, 2, 8)
        let x = rng.floats(N * H * D), r = rng.floats(N * H * D)
        let positions: [Int32] = [0, 1, 2, 0, 1, 2]
        let invFreq = Ref.invFreq(D: D, base: 100)
        let vdx = try Dev.zeros(N * H * D)
        try forEachISA { isa in
            try cpu.rope(x: try Dev.upload(r), ldx: H * D, y: vdx, ldy: H * D, positions: try Dev.upload(positions),
                         invFreq: try Dev.upload(invFreq), N: N, H: H, D: D, inverse: true)
            let numeric = numericGradient(x.doubles, at: Array(0..<x.count)) {
                dotLoss(Ref.rope($0, ldx: H * D, positions: positions, invFreq: invFreq, N: N, H: H, D: D, inverse: false), r)
            }
            assertGradient(try Dev.floats(vdx, x.count).doubles, numeric, "rope dx \(isa)")
        }
        XCTAssertThrowsError(try cpu.rope(x: vdx, ldx: 7, y: vdx, ldy: 7, positions: vdx, invFreq: vdx, N: 1, H: 1, D: 7, inverse: false))
    }
}
