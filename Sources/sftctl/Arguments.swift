// A small argument parser for sftctl: `--flag`, `--key value`, `--key=value`, positionals.
// Each command declares its options in its help text and reads them here; unknown options
// are an error naming the option.
import Foundation
import SFTCore
import SFTKernels

struct UsageError: Error, CustomStringConvertible {
    let description: String
}

final class Arguments {
    private var values: [String: [String]] = [:]
    private var flags: Set<String> = []
    private(set) var positionals: [String] = []
    private var consumed: Set<String> = []

    /// `booleanFlags` take no value; every other `--name` takes the next word.
    init(_ args: [String], booleanFlags: Set<String>) throws {
        var i = 0
        while i < args.count {
            let a = args[i]
            if a == "--" { positionals += args[(i + 1)...]; break }
            if a.hasPrefix("--") {
                var name = String(a.dropFirst(2))
                if let eq = name.firstIndex(of: "=") {
                    values[String(name[..<eq]), default: []].append(String(name[name.index(after: eq)...]))
                    name = String(name[..<eq])
                } else if booleanFlags.contains(name) {
                    flags.insert(name)
                } else {
                    guard i + 1 < args.count else { throw UsageError(description: "option --\(name) needs a value") }
                    values[name, default: []].append(args[i + 1])
                    i += 1
                }
            } else {
                positionals.append(a)
            }
            i += 1
        }
    }

    func flag(_ name: String) -> Bool { consumed.insert(name); return flags.contains(name) }
    func string(_ name: String) -> String? { consumed.insert(name); return values[name]?.last }
    func strings(_ name: String) -> [String] { consumed.insert(name); return values[name] ?? [] }
    func require(_ name: String) throws -> String {
        guard let v = string(name) else { throw UsageError(description: "missing required option --\(name)") }
        return v
    }
    func int(_ name: String) throws -> Int? {
        guard let s = string(name) else { return nil }
        guard let v = Int(s) else { throw UsageError(description: "--\(name): '\(s)' is not an integer") }
        return v
    }
    func double(_ name: String) throws -> Double? {
        guard let s = string(name) else { return nil }
        guard let v = Double(s) else { throw UsageError(description: "--\(name): '\(s)' is not a number") }
        return v
    }
    /// Every option not read yet, with all its values, now counted as read (for commands that
    /// hand their options on as finetune config keys, which reject unknown ones by name).
    func remainingOptions() -> [(name: String, words: [String])] {
        let names = Set(values.keys).subtracting(consumed).sorted()
        consumed.formUnion(names)
        return names.map { ($0, values[$0]!) }
    }
    /// `--device cpu|cuda|cuda:N` (default cpu).
    func device() throws -> Device {
        guard let s = string("device") else { return .cpu }
        do { return try Device(parsing: s) } catch { throw UsageError(description: "--device: '\(s)' is not cpu, cuda or cuda:N") }
    }
    /// Call after reading every option: rejects the ones no command asked for.
    func finish() throws {
        let unknown = Set(values.keys).union(flags).subtracting(consumed)
        if let u = unknown.sorted().first { throw UsageError(description: "unknown option --\(u)") }
    }
}

/// Prints a JSON object on one line (for --json modes).
func printJSON(_ object: Any) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]),
       let s = String(data: data, encoding: .utf8) {
        print(s)
    }
}

func writeStderr(_ s: String) {
    FileHandle.standardError.write((s + "\n").data(using: .utf8)!)
}
