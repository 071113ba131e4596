// The library's error type: every case carries the context a user needs to act (file, line,
// tensor key, op and shapes). The library never exits on user input; it throws one of these.
import Foundation
import SFTKernels

/// The library's error type: every case carries the context a user needs to act (file, line, tensor
/// key, config key, op and shapes). The library never exits on user input; it throws one of these.
public enum SFTError: Error, CustomStringConvertible {
    /// A file could not be read or written.
    case io(path: String, message: String)
    /// A file is malformed: `offset` is the byte offset of the problem in `path`, nil when unknown.
    case format(path: String, offset: Int?, message: String)
    /// A model's weights do not match its architecture.
    case weights(key: String, message: String)
    /// Tensors of incompatible shapes met in an op.
    case shape(op: String, message: String)
    /// A configuration value is invalid or unsupported.
    case config(field: String, message: String)
    /// A dataset record is invalid.
    case data(path: String, line: Int, message: String)
    /// A chat template failed to parse or render.
    case template(line: Int, column: Int, message: String)
    /// A file the caller asked for (usually under ``Assets``) is not there; `hint` says how to get
    /// it.
    case missingAsset(path: String, hint: String)
    /// A valid input that sft does not implement (an architecture, a tensor type, a setting); the
    /// message names it.
    case unsupported(String)
    /// A compute kernel or backend failed (an invalid argument, out of memory, an unavailable
    /// backend, a CUDA or C library error); the wrapped error says which.
    case kernel(KernelError)
    /// Training diverged (non-finite loss or gradients, or a loss that ran away) at `step`
    /// (1-based), in `microBatch` when one is to blame. No update of that step was applied.
    case diverged(step: Int, microBatch: Int?, message: String)

    public var description: String {
        switch self {
        case .io(let p, let m): return "\(p): \(m)"
        case .format(let p, let o, let m): return o.map { "\(p): at byte \($0): \(m)" } ?? "\(p): \(m)"
        case .weights(let k, let m): return "weight '\(k)': \(m)"
        case .shape(let op, let m): return "\(op): \(m)"
        case .config(let f, let m): return "config '\(f)': \(m)"
        case .data(let p, let l, let m): return "\(p):\(l): \(m)"
        case .template(let l, let c, let m): return "template line \(l), column \(c): \(m)"
        case .missingAsset(let p, let h): return "missing \(p) (\(h))"
        case .unsupported(let m): return "unsupported: \(m)"
        case .kernel(let e): return e.description
        case .diverged(let s, let mb, let m): return "training diverged at step \(s)\(mb.map { ", micro-batch \($0)" } ?? ""): \(m)"
        }
    }
}
