// TensorBoard event files, written by sft itself (no TensorFlow, no protobuf library): the file is
// a sequence of TFRecords, each `length (u64 LE) · masked CRC32C(length) (u32 LE) · payload ·
// masked CRC32C(payload) (u32 LE)`, whose payload is a serialized `tensorflow.Event` message.
// Only the protobuf fields TensorBoard reads for scalars and text are written:
//
//   Event        { double wall_time = 1; int64 step = 2; string file_version = 3;
//                  Summary summary = 5; SessionLog session_log = 6; }
//   SessionLog   { SessionStatus status = 1; }            START = 1
//   Summary      { repeated Value value = 1; }
//   Value        { string tag = 1; float simple_value = 2; SummaryMetadata metadata = 9;
//                  TensorProto tensor = 8; }
//   SummaryMetadata { PluginData plugin_data = 1; }   PluginData { string plugin_name = 1; }
//   TensorProto  { DataType dtype = 1; TensorShapeProto tensor_shape = 2; repeated bytes string_val = 8; }
//                  DT_STRING = 7; an empty shape is a scalar
//
// The file is flushed after every record, so a live TensorBoard follows the run. A resumed run
// starts a new file with a SessionLog START at the resume step: TensorBoard then drops the older
// file's events after that step (the steps the resumed run repeats).

import Foundation
import SFTKernels

final class TensorBoardWriter {
    public let url: URL
    private let handle: FileHandle

    /// Creates `events.out.tfevents.<seconds>.<host>.<pid>.<n>` in `directory` (n: the first
    /// number whose file does not exist yet, so names sort in creation order) and writes its header
    /// record; `resumedAt` adds the SessionLog START that purges later steps of earlier files.
    public init(directory: URL, resumedAt step: Int? = nil) throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let now = Date().timeIntervalSince1970
        let host = ProcessInfo.processInfo.hostName.replacingOccurrences(of: "/", with: "_")
        var n = 0
        func name(_ n: Int) -> URL { directory.appendingPathComponent("events.out.tfevents.\(Int(now)).\(host).\(getpid()).\(n)") }
        while FileManager.default.fileExists(atPath: name(n).path) { n += 1 }
        url = name(n)
        guard FileManager.default.createFile(atPath: url.path, contents: nil),
              let h = FileHandle(forWritingAtPath: url.path) else {
            throw SFTError.io(path: url.path, message: "cannot create the TensorBoard event file")
        }
        handle = h
        var header = Proto()
        header.double(1, now)
        header.string(3, "brain.Event:2")
        try write(header.bytes)
        if let step {
            var log = Proto(); log.varint(1, 1)  // START
            var e = Proto(); e.double(1, now); e.varint(2, UInt64(step)); e.message(6, log)
            try write(e.bytes)
        }
    }

    deinit { try? handle.close() }

    /// One event holding scalar values, e.g. ["train/loss": 1.2, "train/learning_rate": 2e-4].
    public func scalars(_ values: [(tag: String, value: Double)], step: Int, wallTime: Double = Date().timeIntervalSince1970) throws {
        guard !values.isEmpty else { return }
        var summary = Proto()
        for (tag, value) in values {
            var v = Proto(); v.string(1, tag); v.float(2, Float(value))
            summary.message(1, v)
        }
        try event(summary, step: step, wallTime: wallTime)
    }

    /// A text summary (TensorBoard's Text tab renders it as Markdown), e.g. the hyperparameters.
    public func text(_ tag: String, _ markdown: String, step: Int, wallTime: Double = Date().timeIntervalSince1970) throws {
        var plugin = Proto(); plugin.string(1, "text")
        var metadata = Proto(); metadata.message(1, plugin)
        var tensor = Proto(); tensor.varint(1, 7); tensor.message(2, Proto()); tensor.bytes(8, Array(markdown.utf8))
        var v = Proto(); v.string(1, tag); v.message(8, tensor); v.message(9, metadata)
        var summary = Proto(); summary.message(1, v)
        try event(summary, step: step, wallTime: wallTime)
    }

    private func event(_ summary: Proto, step: Int, wallTime: Double) throws {
        var e = Proto()
        e.double(1, wallTime)
        e.varint(2, UInt64(bitPattern: Int64(step)))
        e.message(5, summary)
        try write(e.bytes)
    }

    private func write(_ payload: [UInt8]) throws {
        var record = [UInt8]()
        record.reserveCapacity(payload.count + 16)
        let length = withUnsafeBytes(of: UInt64(payload.count).littleEndian, Array.init)
        record += length
        record += withUnsafeBytes(of: CRC32C.masked(length).littleEndian, Array.init)
        record += payload
        record += withUnsafeBytes(of: CRC32C.masked(payload).littleEndian, Array.init)
        do {
            try handle.write(contentsOf: record)
            try handle.synchronize()
        } catch {
            throw SFTError.io(path: url.path, message: "cannot write a TensorBoard event (\(error.localizedDescription))")
        }
    }
}

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), and TFRecord's masking of it.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = table[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return ~c
    }

    /// TFRecord's mask: rotate right by 15 and add a constant.
    public static func masked(_ bytes: [UInt8]) -> UInt32 {
        let c = checksum(bytes)
        return ((c >> 15) | (c << 17)) &+ 0xA282_EAD8
    }
}

/// The few protobuf wire encodings an Event needs (field number, wire type, value).
struct Proto {
    private(set) var bytes: [UInt8] = []

    private mutating func raw(_ v: UInt64) {
        var v = v
        while v >= 0x80 { bytes.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        bytes.append(UInt8(v))
    }
    private mutating func key(_ field: Int, _ wire: UInt64) { raw(UInt64(field) << 3 | wire) }

    mutating func varint(_ field: Int, _ v: UInt64) { key(field, 0); raw(v) }
    mutating func double(_ field: Int, _ v: Double) {
        key(field, 1); bytes += withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init)
    }
    mutating func float(_ field: Int, _ v: Float) {
        key(field, 5); bytes += withUnsafeBytes(of: v.bitPattern.littleEndian, Array.init)
    }
    mutating func bytes(_ field: Int, _ v: [UInt8]) { key(field, 2); raw(UInt64(v.count)); bytes += v }
    mutating func string(_ field: Int, _ s: String) { bytes(field, Array(s.utf8)) }
    mutating func message(_ field: Int, _ m: Proto) { bytes(field, m.bytes) }
}
