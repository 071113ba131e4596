// Collectives: the launch environment decides the group; one process is a group of one whose
// operations change nothing; and under `mpirun -np 2` (this test binary run again as two ranks)
// the bucketed device-buffer sum, broadcasts and barrier give what the definitions say, for
// buffers smaller than a bucket, batched into one, and larger than one (sent in pieces); on the
// emulated GPU, NCCLCollective's sums and broadcasts in device memory too.

import Foundation
import SFTKernels
import XCTest

final class CollectiveTests: XCTestCase {
    func testLaunchEnvironmentPicksTheGroup() {
        XCTAssertNil(launchedRanks([:]))
        XCTAssertNil(launchedRanks(["SLURM_NTASKS": "4"]), "an sbatch script without srun is one process")
        XCTAssertEqual(launchedRanks(["OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "1"]), 3)
        XCTAssertEqual(launchedRanks(["PMI_SIZE": "8", "PMI_RANK": "0"]), 8)
        XCTAssertEqual(launchedRanks(["PMIX_RANK": "2", "SLURM_STEP_NUM_TASKS": "4"]), 4)
        XCTAssertEqual(launchedLocalRank(["OMPI_COMM_WORLD_LOCAL_RANK": "3"]), 3)
        XCTAssertEqual(launchedLocalRank(["SLURM_LOCALID": "1"]), 1)
        XCTAssertNil(launchedLocalRank([:]))
    }

    func testSingleProcessChangesNothing() throws {
        let c = SingleProcessCollective()
        XCTAssertEqual(c.rank, 0); XCTAssertEqual(c.size, 1)
        XCTAssertEqual(try c.allReduceSum([1.5, -2]), [1.5, -2])
        XCTAssertEqual(try c.broadcast("text"), "text")
        try c.barrier()
    }

    /// Runs `testRankBody` as two ranks of an mpirun job.
    func testBucketedSumAndBroadcastOverMPI() throws {
        guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile) else {
            if ProcessInfo.processInfo.environment["SFT_REQUIRE_MPI"] == "1" { XCTFail("mpirun not found and SFT_REQUIRE_MPI=1") }
            throw XCTSkip("mpirun not found (Open MPI)")
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: mpirun)
        p.arguments = ["--oversubscribe", "--allow-run-as-root", "-np", "2", CommandLine.arguments[0],
                       "SFTKernelsTests.CollectiveTests/testRankBody"]
        var env = ProcessInfo.processInfo.environment
        env["SFT_COLLECTIVE_RANK_BODY"] = "1"
        env["SFT_EMU_GPUS"] = "2"   // on the emulated GPU: cuda:0 and cuda:1, one per rank, for NCCL
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"; env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
        p.environment = env
        let pipe = Pipe()
        p.standardOutput = pipe; p.standardError = pipe
        try p.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        XCTAssertEqual(p.terminationStatus, 0, output)
        XCTAssertEqual(output.components(separatedBy: "testRankBody' passed").count, 3, output)
    }

    /// One rank's part of `testBucketedSumAndBroadcastOverMPI` (skipped when run directly).
    func testRankBody() throws {
        guard ProcessInfo.processInfo.environment["SFT_COLLECTIVE_RANK_BODY"] == "1" else {
            throw XCTSkip("runs as a rank of testBucketedSumAndBroadcastOverMPI")
        }
        let c = try worldCollective(timeout: 60)
        XCTAssertEqual(c.size, 2)
        let be = try backend(for: .cpu)
        // 1024-float buckets: the small buffers share buckets, 70,000 floats go in pieces.
        let sizes = [3, 1000, 5, 70_000, 7, 20, 1024]
        func value(_ rank: Int, _ i: Int, _ j: Int) -> Float { Float(rank + 1) * Float(j % 97) + Float(i) }
        let views = try sizes.enumerated().map { (i, n) -> (view: BufferView, count: Int) in
            let v = BufferView(try be.allocate(bytes: n * 4))
            for j in 0..<n { v.f32()[j] = value(c.rank, i, j) }
            return (v, n)
        }
        try c.stagedAllReduceSum(views, on: be, bucketBytes: 4096)
        for (i, (v, n)) in views.enumerated() {
            let wrong = (0..<n).first { v.f32()[$0] != value(0, i, $0) + value(1, i, $0) }
            XCTAssertNil(wrong, "buffer \(i) (\(n) floats) at \(wrong ?? -1): \(wrong.map { v.f32()[$0] } ?? 0)")
        }
        let b = BufferView(try be.allocate(bytes: 4 * 4))
        for j in 0..<4 { b.f32()[j] = Float(c.rank * 10 + j) }
        try c.broadcast(b, count: 4, root: 1, on: be)
        XCTAssertEqual((0..<4).map { b.f32()[$0] }, [10, 11, 12, 13])
        XCTAssertEqual(try c.broadcast(c.rank == 0 ? "from rank 0" : "ignored"), "from rank 0")
        XCTAssertEqual(try c.allReduceSum([Double(c.rank), 0.25]), [1, 0.5])
        try c.barrier()
        if CUDAStatus.current.emulation != nil { try ncclOnTheEmulatedGPU(c) }
        try c.finish()
    }

    /// NCCL (the emulated GPU's, over this MPI job): the gradient sum and broadcast in device
    /// memory, and a count past the end of a device allocation refused by name on every rank.
    func ncclOnTheEmulatedGPU(_ c: any Collective) throws {
        let gpu = try CUDABackend.shared(ordinal: c.rank)
        let nccl = try NCCLCollective(host: c, backend: gpu)
        XCTAssertTrue(nccl.summary.contains("sft emulated NCCL"), nccl.summary)
        let sizes = [3, 70_000, 1024]
        func value(_ rank: Int, _ i: Int, _ j: Int) -> Float { Float(rank + 1) * Float(j % 97) + Float(i) }
        let views = try sizes.enumerated().map { (i, n) -> (view: BufferView, count: Int) in
            let v = BufferView(try gpu.allocate(bytes: n * 4))
            let host = (0..<n).map { value(c.rank, i, $0) }
            try host.withUnsafeBytes { try gpu.upload($0.baseAddress!, to: v, bytes: n * 4) }
            return (v, n)
        }
        try nccl.allReduceSum(views, on: gpu)
        for (i, (v, n)) in views.enumerated() {
            var got = [Float](repeating: 0, count: n)
            try got.withUnsafeMutableBytes { try gpu.download(v, to: $0.baseAddress!, bytes: n * 4) }
            XCTAssertNil((0..<n).first { got[$0] != value(0, i, $0) + value(1, i, $0) }, "NCCL all-reduce, buffer \(i)")
        }
        let b = BufferView(try gpu.allocate(bytes: 16))
        let mine: [Float] = (0..<4).map { Float(c.rank * 10 + $0) }
        try mine.withUnsafeBytes { try gpu.upload($0.baseAddress!, to: b, bytes: 16) }
        try nccl.broadcast(b, count: 4, root: 1, on: gpu)
        var got = [Float](repeating: 0, count: 4)
        try got.withUnsafeMutableBytes { try gpu.download(b, to: $0.baseAddress!, bytes: 16) }
        XCTAssertEqual(got, [10, 11, 12, 13])
        XCTAssertThrowsError(try nccl.allReduceSum([(b, 1 << 24)], on: gpu)) { e in
            XCTAssertTrue("\(e)".contains("run past the end"), "\(e)")
        }
    }
}
