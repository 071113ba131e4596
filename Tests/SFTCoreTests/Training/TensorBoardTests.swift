// TensorBoard event files: the record framing (length, masked CRC-32C of length and payload) and
// the Event/Summary fields are read back by an independent reader written here from the
// format's description; a finetune with `logging: tensorboard` writes the metrics.jsonl values as
// scalars, the settings as text, and a resumed run marks its restart with a SessionLog START.
// (tools/check_tensorboard.py reads the same files with TensorBoard's own EventAccumulator.)
import Foundation
@testable import SFTCore
import SFTKernels
import XCTest

/// One decoded event: the fields this test reads.
struct ReadEvent {
    var step = 0
    var wallTime = 0.0
    var fileVersion: String?
    var scalars: [String: Float] = [:]
    var texts: [String: String] = [:]
    var sessionStart = false
}

/// Reads TFRecords and the Event protobuf fields sft writes, checking both CRCs of every record.
enum EventFileReader {
    static func crc32c(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes {
            c ^= UInt32(b)
            for _ in 0..<8 { c = (c >> 1) ^ (0x82F6_3B78 & (0 &- (c & 1))) }
        }
        return ~c
    }
    static func masked(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        let c = crc32c(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
    static func u32(_ b: [UInt8], _ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(b[at + $1]) << (8 * $1) } }
    static func u64(_ b: [UInt8], _ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(b[at + $1]) << (8 * $1) } }

    /// Fields of one message: (field number, wire type, varint or fixed value, bytes).
    static func fields(_ b: ArraySlice<UInt8>) throws -> [(Int, Int, UInt64, ArraySlice<UInt8>)] {
        var out: [(Int, Int, UInt64, ArraySlice<UInt8>)] = []
        var i = b.startIndex
        func varint() throws -> UInt64 {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard i < b.endIndex else { throw SFTError.unsupported("truncated varint") }
                let x = b[i]; i += 1
                v |= UInt64(x & 0x7F) << shift
                if x < 0x80 { return v }
                shift += 7
            }
        }
        while i < b.endIndex {
            let key = try varint(), field = Int(key >> 3), wire = Int(key & 7)
            switch wire {
            case 0: out.append((field, 0, try varint(), []))
            case 1: out.append((field, 1, (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[i + $1]) << (8 * $1) }, [])); i += 8
            case 5: out.append((field, 5, UInt64((0..<4).reduce(UInt32(0)) { $0 | UInt32(b[i + $1]) << (8 * $1) }), [])); i += 4
            case 2: let n = Int(try varint()); out.append((field, 2, 0, b[i..<(i + n)])); i += n
            default: throw SFTError.unsupported("wire type \(wire)")
            }
        }
        return out
    }

    static func read(_ url: URL) throws -> [ReadEvent] {
        let b = [UInt8](try Data(contentsOf: url))
        var events: [ReadEvent] = []
        var at = 0
        while at < b.count {
            let n = Int(u64(b, at))
            XCTAssertEqual(u32(b, at + 8), masked(b[at..<(at + 8)]), "length CRC of record \(events.count)")
            let payload = b[(at + 12)..<(at + 12 + n)]
            XCTAssertEqual(u32(b, at + 12 + n), masked(payload), "payload CRC of record \(events.count)")
            at += 16 + n
            var e = ReadEvent()
            for (f, _, v, bytes) in try fields(payload) {
                switch f {
                case 1: e.wallTime = Double(bitPattern: v)
                case 2: e.step = Int(Int64(bitPattern: v))
                case 3: e.fileVersion = String(decoding: bytes, as: UTF8.self)
                case 5:
                    for (vf, _, _, value) in try fields(bytes) where vf == 1 {
                        var tag = "", scalar: Float?, text: String?
                        for (g, _, gv, gb) in try fields(value) {
                            if g == 1 { tag = String(decoding: gb, as: UTF8.self) }
                            if g == 2 { scalar = Float(bitPattern: UInt32(gv)) }
                            if g == 8 { for (t, _, _, tb) in try fields(gb) where t == 8 { text = String(decoding: tb, as: UTF8.self) } }
                        }
                        if let scalar { e.scalars[tag] = scalar }
                        if let text { e.texts[tag] = text }
                    }
                case 6: e.sessionStart = try fields(bytes).contains { $0.0 == 1 && $0.2 == 1 }
                default: break
                }
            }
            events.append(e)
        }
        XCTAssertEqual(at, b.count, "trailing bytes")
        return events
    }

    static func files(in dir: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: nil)
            .filter { $0.lastPathComponent.hasPrefix("events.out.tfevents.") }.sorted { $0.path < $1.path }
    }
}

final class TensorBoardTests: XCTestCase {
    var packageRoot: URL { URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent() }

    func testCRC32CKnownValues() {
        // The check value of CRC-32C, and the empty string.
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([]), 0)
        XCTAssertEqual(EventFileReader.crc32c(Array("123456789".utf8)[...]), 0xE306_9283)
    }

    func testScalarsAndTextReadBack() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tb-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        let w = try TensorBoardWriter(directory: dir)
        try w.scalars([("train/loss", 2.5), ("train/learning_rate", 1e-4)], step: 3, wallTime: 1000.25)
        try w.text("hyperparameters", "lr **1e-4** — ü", step: 0)
        try w.scalars([("train/loss", -0.75)], step: 1 << 40)
        let events = try EventFileReader.read(w.url)
        XCTAssertEqual(events.count, 4)
        XCTAssertEqual(events[0].fileVersion, "brain.Event:2")
        XCTAssertEqual(events[1].step, 3)
        XCTAssertEqual(events[1].wallTime, 1000.25)
        XCTAssertEqual(events[1].scalars, ["train/loss": 2.5, "train/learning_rate": 1e-4])
        XCTAssertEqual(events[2].texts, ["hyperparameters": "lr **1e-4** — ü"])
        XCTAssertEqual(events[3].step, 1 << 40)
        XCTAssertEqual(events[3].scalars["train/loss"], -0.75)
        XCTAssertFalse(events.contains { $0.sessionStart })
    }

    func testFinetuneWritesMetricsAsScalarsAndResumeMarksItsRestart() throws {
        _ = try Assets.require(Assets.smolLM2)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("sft-tb-run-\(UUID().uuidString)")
        addTeardownBlock { try? FileManager.default.removeItem(at: out) }
        var object: [String: Any] = [
            "model": Assets.smolLM2.path, "data": packageRoot.appendingPathComponent("Examples/data/dolly.jsonl").path,
            "format": "dolly", "output_dir": out.path, "max_steps": 3, "max_seq_length": 64, "lora_r": 4,
            "save_steps": 1, "logging": ["jsonl", "tensorboard"], "seed": 3, "num_train_epochs": 5]
        _ = try Finetune.run(try FinetuneConfig.from(json: object))
        let tb = out.appendingPathComponent("tensorboard")
        let first = try EventFileReader.files(in: tb)
        XCTAssertEqual(first.count, 1)
        let events = try EventFileReader.read(first[0])
        let metrics = try String(contentsOf: out.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
            .split(separator: "\n").map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as! [String: Any] }
        for m in metrics {
            let step = m["step"] as! Int
            guard let e = events.first(where: { $0.step == step && !$0.scalars.isEmpty }) else {
                XCTFail("no scalars for step \(step)"); continue
            }
            if let loss = m["loss"] as? Double { XCTAssertEqual(e.scalars["train/loss"], Float(loss), "step \(step)") }
            if let lr = m["lr"] as? Double { XCTAssertEqual(e.scalars["train/learning_rate"], Float(lr), "step \(step)") }
            if let g = m["grad_norm"] as? Double { XCTAssertEqual(e.scalars["train/grad_norm"], Float(g), "step \(step)") }
            if let share = m["trained_token_share"] as? Double {
                XCTAssertEqual(e.scalars["train/trained_token_share"], Float(share))
                XCTAssertTrue(share > 0 && share <= 1, "share \(share)")
            } else if m["loss"] != nil { XCTFail("metrics.jsonl step \(step) has no trained_token_share") }
            if let ev = m["eval_loss"] as? Double {
                XCTAssertEqual(events.first { $0.scalars["eval/loss"] != nil }?.scalars["eval/loss"], Float(ev))
            }
        }
        XCTAssertEqual(Set(events.filter { $0.scalars["train/loss"] != nil }.map(\.step)), [1, 2, 3])
        XCTAssertTrue(events.contains { $0.texts["hyperparameters"]?.contains("\"learning_rate\"") == true })

        // Resume from step 1: a second file that starts with SessionLog START at step 1, then steps 2 and 3.
        object["resume_from_checkpoint"] = out.appendingPathComponent("checkpoint-1").path
        _ = try Finetune.run(try FinetuneConfig.from(json: object))
        let files = try EventFileReader.files(in: tb)
        XCTAssertEqual(files.count, 2)
        let resumed = try EventFileReader.read(files.first { $0 != first[0] }!)
        let start = resumed.firstIndex { $0.sessionStart }
        XCTAssertNotNil(start)
        XCTAssertEqual(start.map { resumed[$0].step }, 1)
        XCTAssertEqual(resumed.filter { $0.scalars["train/loss"] != nil }.map(\.step), [2, 3])
    }

    func testUnknownSinkIsAnErrorNamingIt() {
        XCTAssertThrowsError(try FinetuneConfig.from(json: ["logging": ["jsonl", "wandb"]])) { e in
            XCTAssertTrue("\(e)".contains("wandb") && "\(e)".contains("tensorboard"), "\(e)")
        }
        XCTAssertEqual(try FinetuneConfig.from(json: ["logging": "jsonl,tensorboard"]).logging, [.jsonl, .tensorboard])
    }
}
