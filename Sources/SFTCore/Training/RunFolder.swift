// A run owns its output folder: a lock file (pid and host) held while it trains, so a second
// run in the same folder fails at once instead of mixing checkpoints; and final outputs written
// into a temporary sibling and renamed, so a failed save never leaves half an adapter.

import Foundation
import SFTKernels

final class RunFolderLock {
    public static let fileName = ".sft-run.lock"
    public let url: URL
    private var held = true

    /// Takes the lock of `folder` (created if needed).
    /// - Throws: `SFTError.io` naming the folder and the holder when a live run holds it (or a
    ///   run on another host, whose liveness cannot be checked). A lock left by a dead process
    ///   of this host is taken over.
    public init(folder: URL) throws {
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        url = folder.appendingPathComponent(Self.fileName)
        let me = "\(getpid()) \(Self.host)\n"
        for _ in 0..<2 {
            let fd = open(url.path, O_WRONLY | O_CREAT | O_EXCL, 0o644)
            if fd >= 0 {
                _ = me.withCString { write(fd, $0, strlen($0)) }
                fsync(fd)
                close(fd)
                return
            }
            guard errno == EEXIST else {
                throw SFTError.io(path: url.path, message: "cannot create the run lock: \(String(cString: strerror(errno)))")
            }
            let text = (try? String(contentsOf: url, encoding: .utf8)) ?? ""
            let parts = text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
            if parts.count == 2, let pid = Int32(parts[0]), parts[1] == Self.host, kill(pid, 0) != 0, errno == ESRCH {
                try? FileManager.default.removeItem(at: url)   // its process is gone: a stale lock
                continue
            }
            let holder = parts.count == 2 ? "process \(parts[0]) on \(parts[1])" : "an unknown process"
            throw SFTError.io(path: folder.path, message: "another run (\(holder)) is using this output folder; wait for it, use another output_dir, or delete \(Self.fileName) if that run is gone")
        }
        throw SFTError.io(path: url.path, message: "cannot take the run lock")
    }

    /// Releases the lock (also on deinit).
    public func release() {
        if held { try? FileManager.default.removeItem(at: url); held = false }
    }

    deinit { release() }

    static var host: String { ProcessInfo.processInfo.hostName.replacingOccurrences(of: " ", with: "_") }
}

/// Writes a folder output atomically: `write` fills a temporary sibling of `dest`, which then
/// replaces `dest`. On failure the temporary folder is removed and `dest` is left as it was.
func writeFolderAtomically(_ dest: URL, _ write: (URL) throws -> Void) throws {
    let fm = FileManager.default
    let parent = dest.deletingLastPathComponent()
    try fm.createDirectory(at: parent, withIntermediateDirectories: true)
    let tmp = parent.appendingPathComponent(".tmp-\(dest.lastPathComponent)-\(getpid())")
    try? fm.removeItem(at: tmp)
    try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
    do {
        try write(tmp)
        if fm.fileExists(atPath: dest.path) {
            // Keep the old output until the new one is in place.
            let old = parent.appendingPathComponent(".old-\(dest.lastPathComponent)-\(getpid())")
            try? fm.removeItem(at: old)
            guard rename(dest.path, old.path) == 0 else {
                throw SFTError.io(path: dest.path, message: "cannot move the previous output aside: \(String(cString: strerror(errno)))")
            }
            guard rename(tmp.path, dest.path) == 0 else {
                let why = String(cString: strerror(errno))
                _ = rename(old.path, dest.path)
                throw SFTError.io(path: dest.path, message: "cannot rename the new output into place: \(why)")
            }
            try? fm.removeItem(at: old)
        } else {
            guard rename(tmp.path, dest.path) == 0 else {
                throw SFTError.io(path: dest.path, message: "cannot rename the new output into place: \(String(cString: strerror(errno)))")
            }
        }
        fsyncDirectory(parent)
    } catch {
        try? fm.removeItem(at: tmp)
        throw error
    }
}
