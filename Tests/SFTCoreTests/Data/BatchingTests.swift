// Packing and batching, checked against naive references: every token placed exactly once,
// positions / document ids / targets exact, rows within max length, best-fit-decreasing as good
// as a naive BFD, truncate/drop/split counted, targets never crossing documents, padding
// ignored, the same trained (example, position) pairs under every layout, and epochs, steps and
// resume from a cursor.
import Foundation
import XCTest
@testable import SFTCore
import SFTKernels

final class BatchingTests: XCTestCase {
    /// Random examples: lengths in `lengths`, ids encode (example, position) so any misplaced
    /// token is visible, about `trainedFraction` of tokens trained.
    func examples(_ n: Int, lengths: ClosedRange<Int>, seed: UInt64, trainedFraction: Double = 0.6) -> [TokenizedExample] {
        var g = DataShuffle.Generator(seed: seed)
        return (0..<n).map { e in
            let len = lengths.lowerBound + Int(g.next() % UInt64(lengths.count))
            let ids = (0..<len).map { Int32(e * 10_000 + $0) }
            var trained = (0..<len).map { _ in Double(g.next() % 1000) / 1000 < trainedFraction }
            trained[len - 1] = true  // at least one predictable target
            return TokenizedExample(ids: ids, trained: trained, source: SourceLocation(line: e + 1, index: e))
        }
    }

    /// Checks a batch against the examples it was built from, the naive way.
    func verify(_ b: TrainingBatch, _ ex: [TokenizedExample], cross: Bool = false, padId: Int32 = 0,
                file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(b.ids.count, b.B * b.T, file: file, line: line)
        var covered = [Bool](repeating: false, count: b.B * b.T)
        var trained = 0
        var docIndexInRow: [Int: Int] = [:]
        for d in b.documents {
            let k = docIndexInRow[d.row, default: 0]
            docIndexInRow[d.row] = k + 1
            let e = ex[d.example]
            for j in 0..<d.count {
                let t = d.row * b.T + d.start + j
                XCTAssertFalse(covered[t], "token placed twice", file: file, line: line)
                covered[t] = true
                XCTAssertEqual(b.ids[t], e.ids[d.exampleOffset + j], file: file, line: line)
                XCTAssertEqual(b.positions[t], Int32(cross ? d.start + j : j), file: file, line: line)
                XCTAssertEqual(b.docIds[t], Int32(cross ? 0 : k), file: file, line: line)
                let next = d.exampleOffset + j + 1
                let expected: Int32 = (j + 1 < d.count && e.trained[next]) ? e.ids[next] : -100
                XCTAssertEqual(b.targets[t], expected, file: file, line: line)
                if expected != -100 { trained += 1 }
            }
        }
        for t in 0..<(b.B * b.T) where !covered[t] {  // padding
            XCTAssertEqual(b.targets[t], -100, file: file, line: line)
            XCTAssertEqual(b.docIds[t], -1, file: file, line: line)
            XCTAssertEqual(b.ids[t], padId, file: file, line: line)
        }
        XCTAssertEqual(b.trainedTokens, trained, file: file, line: line)
        XCTAssertEqual(b.trainedTokens, b.targets.filter { $0 != -100 }.count, file: file, line: line)
    }

    func allBatches(_ plan: BatchPlan, epoch: Int = 0) -> [TrainingBatch] {
        (0..<plan.microBatchesPerEpoch).map { plan.microBatch(epoch: epoch, index: $0) }
    }

    /// (example, token index) of every target over the batches: what is trained, however laid out.
    func targetSet(_ batches: [TrainingBatch]) -> [[Int]] {
        var out: [[Int]] = []
        for b in batches {
            for d in b.documents {
                for j in 0..<d.count where b.targets[d.row * b.T + d.start + j] != -100 {
                    out.append([d.example, d.exampleOffset + j + 1])
                }
            }
        }
        return out.sorted { $0.lexicographicallyPrecedes($1) }
    }

    func testPackingPlacesEveryTokenOnceWithExactPositionsDocIdsAndTargets() throws {
        let ex = examples(300, lengths: 2...200, seed: 1)
        let plan = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 256, microBatchSize: 4, seed: 5))
        let batches = allBatches(plan)
        var seen = Set<[Int]>()
        for b in batches {
            verify(b, ex)
            XCTAssertLessThanOrEqual(b.T, 256)
            for d in b.documents { for j in 0..<d.count { XCTAssertTrue(seen.insert([d.example, j]).inserted) } }
        }
        XCTAssertEqual(seen.count, ex.reduce(0) { $0 + $1.ids.count })
        let r = plan.report
        XCTAssertEqual(r.documents, 300)
        XCTAssertEqual(r.tokens, seen.count)
        XCTAssertEqual(r.trainedTokens, batches.reduce(0) { $0 + $1.trainedTokens })
        XCTAssertEqual(r.trainedTokens, ex.reduce(0) { $0 + $1.predictableTrainedTokens })
        XCTAssertEqual(r.rows, batches.reduce(0) { $0 + $1.B })
        XCTAssertGreaterThan(r.efficiency!, 0.9)
        print("BFD packing: \(r)")
    }

    /// Naive best-fit decreasing: O(n × rows). Rows with equal room are interchangeable for
    /// every later choice, so any BFD gives the same multiset of row fills.
    func naiveBFDFills(_ lengths: [Int], capacity: Int) -> [Int] {
        var fills: [Int] = []
        for l in lengths.sorted(by: >) {
            var best: Int?
            for (i, f) in fills.enumerated() where f + l <= capacity && (best == nil || f > fills[best!]) { best = i }
            if let b = best { fills[b] += l } else { fills.append(l) }
        }
        return fills.sorted()
    }

    func testBestFitDecreasingMatchesANaiveBFD() throws {
        for (seed, range, T) in [(2, 2...100, 128), (3, 30...500, 512), (4, 2...2048, 2048), (5, 400...600, 1000)] as [(UInt64, ClosedRange<Int>, Int)] {
            let ex = examples(500, lengths: range, seed: seed, trainedFraction: 1)
            let plan = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: T, microBatchSize: 1, shuffle: false))
            let fills = allBatches(plan).map { $0.documents.reduce(0) { $0 + $1.count } }.sorted()
            XCTAssertEqual(fills, naiveBFDFills(ex.map(\.ids.count), capacity: T), "seed \(seed)")
            XCTAssertTrue(fills.allSatisfy { $0 <= T })
            let lowerBound = (plan.report.tokens + T - 1) / T
            XCTAssertGreaterThanOrEqual(plan.report.rows, lowerBound)
            print("BFD T=\(T) lengths \(range): \(plan.report.rows) rows (lower bound \(lowerBound)), efficiency \(plan.report.efficiency!)")
        }
    }

    func testTruncateDropAndSplitAreCountedAndSplitKeepsEveryToken() throws {
        let ex = examples(50, lengths: 10...300, seed: 6, trainedFraction: 1)
        let T = 128
        let long = ex.filter { $0.ids.count > T }
        XCTAssertGreaterThan(long.count, 5)

        let truncated = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: T, truncation: .truncate))
        XCTAssertEqual(truncated.report.truncated, long.count)
        XCTAssertEqual(truncated.report.truncatedTokens, long.reduce(0) { $0 + $1.ids.count - T })
        XCTAssertEqual(truncated.report.tokens, ex.reduce(0) { $0 + min(T, $1.ids.count) })
        for b in allBatches(truncated) {
            verify(b, ex)
            for d in b.documents { XCTAssertEqual(d.exampleOffset, 0); XCTAssertLessThanOrEqual(d.count, T) }
        }

        let dropped = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: T, truncation: .drop))
        XCTAssertEqual(dropped.report.dropped, long.count)
        XCTAssertEqual(dropped.report.droppedTokens, long.reduce(0) { $0 + $1.ids.count })
        XCTAssertEqual(dropped.report.documents, ex.count - long.count)

        let split = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: T, truncation: .split))
        XCTAssertEqual(split.report.split, long.count)
        XCTAssertEqual(split.report.splitPieces, long.reduce(0) { $0 + ($1.ids.count + T - 1) / T })
        XCTAssertEqual(split.report.tokens, ex.reduce(0) { $0 + $1.ids.count })
        var seen = Set<[Int]>()
        for b in allBatches(split) {
            verify(b, ex)
            for d in b.documents { for j in 0..<d.count { XCTAssertTrue(seen.insert([d.example, d.exampleOffset + j]).inserted) } }
        }
        XCTAssertEqual(seen.count, split.report.tokens)
    }

    func testDocumentsWithoutTrainedTokensAreLeftOutAndCounted() throws {
        var ex = examples(10, lengths: 5...20, seed: 7)
        ex[3].trained = [Bool](repeating: false, count: ex[3].ids.count)
        ex[5].trained = [true] + [Bool](repeating: false, count: ex[5].ids.count - 1)  // only the unpredictable first token
        // Truncation can cut off the whole answer: untrained after the cut.
        ex[8] = TokenizedExample(ids: Array(0..<40), trained: [Bool](repeating: false, count: 30) + [Bool](repeating: true, count: 10),
                                 source: ex[8].source)
        let plan = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 30))
        XCTAssertEqual(plan.report.untrained, 3)
        XCTAssertEqual(plan.report.truncated, 1)
        XCTAssertEqual(plan.report.documents, 7)
        XCTAssertFalse(allBatches(plan).flatMap(\.documents).contains { [3, 5, 8].contains($0.example) })
    }

    func testTargetsNeverCrossDocumentBoundariesWithCrossDocumentAttention() throws {
        let ex = examples(40, lengths: 3...60, seed: 8, trainedFraction: 1)
        let plan = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 128, crossDocumentAttention: true, microBatchSize: 3))
        for b in allBatches(plan) {
            verify(b, ex, cross: true)
            for d in b.documents {
                XCTAssertEqual(b.targets[d.row * b.T + d.start + d.count - 1], -100)  // the last token of each document
            }
        }
        let separate = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 128, microBatchSize: 3))
        XCTAssertEqual(targetSet(allBatches(plan)), targetSet(allBatches(separate)))
    }

    func testRightPaddingAndPaddingFreeBatches() throws {
        let ex = examples(23, lengths: 2...50, seed: 9)
        let padded = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 64, layout: .padded, microBatchSize: 4,
                                                                         seed: 3, padId: 7))
        XCTAssertEqual(padded.microBatchesPerEpoch, 6)
        XCTAssertNil(padded.report.efficiency)
        for b in allBatches(padded) {
            verify(b, ex, padId: 7)
            XCTAssertEqual(b.B, b.documents.count)
            XCTAssertEqual(b.T, b.documents.map(\.count).max())
            XCTAssertTrue(b.documents.allSatisfy { $0.start == 0 })
        }
        XCTAssertEqual(allBatches(padded).last?.B, 3)  // 23 = 5 × 4 + 3

        let free = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 64, layout: .paddingFree, microBatchSize: 4, seed: 3))
        for b in allBatches(free) {
            verify(b, ex)
            XCTAssertEqual(b.B, 1)
            XCTAssertEqual(b.T, b.documents.reduce(0) { $0 + $1.count })
            XCTAssertFalse(b.docIds.contains(-1))
        }
        // Same examples in the same micro-batches (same seed): padding-free is the padded batch without the padding.
        XCTAssertEqual(allBatches(free).map { $0.documents.map(\.example) }, allBatches(padded).map { $0.documents.map(\.example) })
    }

    /// Exact loss rests on this: whatever the layout, an epoch trains the same (example, token)
    /// targets, so sum(loss) / sum(trainedTokens) is the same number.
    func testEveryLayoutTrainsTheSameTargets() throws {
        let ex = examples(120, lengths: 2...90, seed: 10)
        var sets: [[[Int]]] = []
        for layout in BatchLayout.allCases {
            for mb in [1, 3] {
                let plan = try BatchPlan(examples: ex, options: BatchingOptions(maxSeqLength: 128, layout: layout, microBatchSize: mb,
                                                                               gradientAccumulation: 2, seed: 11))
                var loader = try DataLoader(plan: plan)
                var batches: [TrainingBatch] = []
                while let s = loader.nextStep() {
                    XCTAssertEqual(s.trainedTokens, s.batches.reduce(0) { $0 + $1.targets.filter { $0 != -100 }.count })
                    batches += s.batches
                }
                sets.append(targetSet(batches))
            }
        }
        let unpacked = ex.enumerated().flatMap { (e, x) in (1..<x.ids.count).filter { x.trained[$0] }.map { [e, $0] } }
        for s in sets { XCTAssertEqual(s, unpacked.sorted { $0.lexicographicallyPrecedes($1) }) }
    }

    func testEpochsStepsShuffleAndExactResume() throws {
        let ex = examples(37, lengths: 2...30, seed: 12)
        let options = BatchingOptions(maxSeqLength: 32, layout: .padded, microBatchSize: 2, gradientAccumulation: 3, epochs: 3, seed: 99)
        let plan = try BatchPlan(examples: ex, options: options)
        XCTAssertEqual(plan.microBatchesPerEpoch, 19)
        XCTAssertEqual(plan.stepsPerEpoch, 7)  // 6 steps of 3 micro-batches, then 1
        XCTAssertEqual(plan.totalSteps, 21)
        var loader = try DataLoader(plan: plan)
        var steps: [OptimizerStep] = []
        while let s = loader.nextStep() { steps.append(s) }
        XCTAssertEqual(steps.count, 21)
        XCTAssertEqual(steps.map(\.step), Array(0..<21))
        XCTAssertEqual(steps[6].batches.count, 1)
        XCTAssertEqual(steps[7].cursor, DataCursor(epoch: 1, index: 0))
        // Each epoch sees every example once, in a different order per epoch, same order per seed.
        var orders: [[Int]] = []
        for e in 0..<3 {
            let order = steps[(7 * e)..<(7 * e + 7)].flatMap { $0.batches.flatMap { $0.documents.map(\.example) } }
            XCTAssertEqual(order.sorted(), Array(0..<37))
            orders.append(order)
        }
        XCTAssertNotEqual(orders[0], orders[1])
        XCTAssertEqual(plan.order(epoch: 1), try BatchPlan(examples: ex, options: options).order(epoch: 1))
        var other = options
        other.seed = 100
        XCTAssertNotEqual(plan.order(epoch: 0), try BatchPlan(examples: ex, options: other).order(epoch: 0))
        // Resume: a loader made from a saved cursor continues exactly.
        for k in [0, 3, 6, 7, 13, 20] {
            let saved = try JSONDecoder().decode(DataCursor.self, from: try JSONEncoder().encode(steps[k].next))
            var resumed = try DataLoader(plan: plan, cursor: saved)
            var rest: [OptimizerStep] = []
            while let s = resumed.nextStep() { rest.append(s) }
            XCTAssertEqual(rest.map(\.step), steps[(k + 1)...].map(\.step))
            XCTAssertEqual(rest.map(\.batches), steps[(k + 1)...].map(\.batches))
        }
        XCTAssertThrowsError(try DataLoader(plan: plan, cursor: DataCursor(epoch: 0, index: 1)))  // not a step boundary
        XCTAssertNil(loaderAtEnd(plan))
        XCTAssertEqual(plan.fingerprint, try BatchPlan(examples: ex, options: options).fingerprint)
        XCTAssertNotEqual(plan.fingerprint, try BatchPlan(examples: ex, options: other).fingerprint)
        var changed = ex
        changed[4].trained[1].toggle()
        XCTAssertNotEqual(plan.fingerprint, try BatchPlan(examples: changed, options: options).fingerprint)
    }

    func loaderAtEnd(_ plan: BatchPlan) -> OptimizerStep? {
        var l = try! DataLoader(plan: plan, cursor: DataCursor(epoch: plan.options.epochs - 1, index: plan.microBatchesPerEpoch))
        return l.nextStep()
    }

    func testShuffleIsAPermutationAndSampleIsUniformEnough() {
        let p = DataShuffle.permutation(count: 1000, seed: 1)
        XCTAssertEqual(p.sorted(), Array(0..<1000))
        XCTAssertNotEqual(p, Array(0..<1000))
        XCTAssertEqual(p, DataShuffle.permutation(count: 1000, seed: 1))
        // Golden values from tools/shuffle_golden.py: data order is part of the contract of resumable runs.
        var g = DataShuffle.Generator(seed: 0)
        XCTAssertEqual([g.next(), g.next(), g.next()], [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
        XCTAssertEqual(DataShuffle.permutation(count: 10, seed: 42), [8, 3, 6, 5, 4, 0, 9, 2, 1, 7])
        XCTAssertEqual(DataShuffle.epochSeed(42, epoch: 3), 5_632_914_758_302_621_589)
        XCTAssertEqual(DataShuffle.permutation(count: 12, seed: DataShuffle.epochSeed(7, epoch: 1)), [7, 2, 10, 9, 4, 1, 6, 3, 5, 11, 0, 8])
        var hits = [Int](repeating: 0, count: 10)
        for s in 0..<2000 { for i in DataShuffle.sample(3, of: 10, seed: UInt64(s)) { hits[i] += 1 } }
        for h in hits { XCTAssertEqual(Double(h), 600, accuracy: 90) }  // 2000 × 3 / 10, ±~4.5σ
    }

    func testInvalidOptionsAreConfigErrors() {
        XCTAssertThrowsError(try BatchPlan(examples: [], options: BatchingOptions(maxSeqLength: 1)))
        XCTAssertThrowsError(try BatchPlan(examples: [], options: BatchingOptions(microBatchSize: 0)))
        XCTAssertThrowsError(try BatchPlan(examples: [], options: BatchingOptions(gradientAccumulation: 0)))
        var empty = try! DataLoader(plan: try! BatchPlan(examples: [], options: BatchingOptions()))
        XCTAssertNil(empty.nextStep())
    }
}
