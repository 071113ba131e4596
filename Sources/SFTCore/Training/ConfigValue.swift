// How one config value reads from JSON and from a command-line word, and writes back to JSON.
// `FinetuneConfig.keys` (FinetuneConfigKeys.swift) pairs each key with a property whose type
// conforms here; decoding, flags, `--help` and range checks then come from the type.
//
// Rules: integers accept JSON integers (and integral floats); numbers must be finite; names of
// enums are matched by the enum's own parser (with its synonyms) and an unknown name lists the
// allowed ones; a flag word is JSON when it parses as JSON, otherwise the text itself.

import Foundation
import SFTKernels

/// A value a config key can hold.
protocol ConfigValue {
    /// Reads the value; throws `ConfigValueError` saying what was expected.
    init(configJSON: JSONValue) throws
    /// The value as written to config.json (`.null` for an absent optional).
    var configJSON: JSONValue { get }
    /// What `--help` shows for the value ("integer", "one of: a, b").
    static var configKind: String { get }
    /// Whether the key takes a list (flags may repeat; a string becomes a one-element list).
    static var isConfigList: Bool { get }
    /// The numbers range checks apply to, labelled for messages ("" for a scalar, "['k']" in maps).
    var configNumbers: [(label: String, value: Double)] { get }
    /// Reads a command-line word (default: JSON if it parses, else the word as a string).
    static func configJSON(flag word: String) -> JSONValue
}

/// A value of the wrong type or an unknown name; the key table adds the key's name.
struct ConfigValueError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

extension ConfigValue {
    static var isConfigList: Bool { false }
    var configNumbers: [(label: String, value: Double)] { [] }
    static func configJSON(flag word: String) -> JSONValue {
        (try? JSONValue(parsing: word)) ?? .string(word)
    }
}

func expected(_ what: String, _ got: JSONValue) -> ConfigValueError {
    ConfigValueError("expected \(what), got \(got.serialized())")
}

extension String: ConfigValue {
    init(configJSON j: JSONValue) throws {
        guard let s = j.stringValue else { throw expected("a string", j) }
        self = s
    }
    var configJSON: JSONValue { .string(self) }
    static var configKind: String { "text" }
    /// A string key takes the word as written (`--template null` is the file named null).
    static func configJSON(flag word: String) -> JSONValue { .string(word) }
}

extension Bool: ConfigValue {
    init(configJSON j: JSONValue) throws {
        guard let b = j.boolValue else { throw expected("true or false", j) }
        self = b
    }
    var configJSON: JSONValue { .bool(self) }
    static var configKind: String { "true | false" }
}

extension Int: ConfigValue {
    init(configJSON j: JSONValue) throws {
        switch j {
        case .int(let i): self = i
        case .double(let d) where d.rounded() == d && abs(d) < 9e18: self = Int(d)
        default: throw expected("an integer", j)
        }
    }
    var configJSON: JSONValue { .int(self) }
    static var configKind: String { "integer" }
    var configNumbers: [(label: String, value: Double)] { [("", Double(self))] }
}

extension UInt64: ConfigValue {
    init(configJSON j: JSONValue) throws {
        switch j {
        case .int(let i) where i >= 0: self = UInt64(i)
        case .double(let d) where d.rounded() == d && d >= 0 && d < 1.8e19: self = UInt64(d)
        default: throw expected("a non-negative integer", j)
        }
    }
    var configJSON: JSONValue { self <= UInt64(Int.max) ? .int(Int(self)) : .double(Double(self)) }
    static var configKind: String { "integer ≥ 0" }
}

extension Double: ConfigValue {
    init(configJSON j: JSONValue) throws {
        guard let d = j.doubleValue else { throw expected("a number", j) }
        guard d.isFinite else { throw ConfigValueError("\(d.isNaN ? "NaN" : "an infinite value") is not allowed") }
        self = d
    }
    var configJSON: JSONValue { .double(self) }
    static var configKind: String { "number" }
    var configNumbers: [(label: String, value: Double)] { [("", self)] }
    /// Also reads spellings JSON lacks (`nan`, `inf`) so that they are refused by name.
    static func configJSON(flag word: String) -> JSONValue {
        if let d = Double(word.trimmingCharacters(in: .whitespaces)) { return .double(d) }
        return (try? JSONValue(parsing: word)) ?? .string(word)
    }
}

extension Optional: ConfigValue where Wrapped: ConfigValue {
    init(configJSON j: JSONValue) throws {
        self = j.isNull ? nil : try Wrapped(configJSON: j)
    }
    var configJSON: JSONValue { self?.configJSON ?? .null }
    static var configKind: String { Wrapped.configKind }
    static var isConfigList: Bool { Wrapped.isConfigList }
    var configNumbers: [(label: String, value: Double)] { self?.configNumbers ?? [] }
    static func configJSON(flag word: String) -> JSONValue { Wrapped.configJSON(flag: word) }
}

extension Array: ConfigValue where Element: ConfigValue {
    init(configJSON j: JSONValue) throws {
        switch j {
        case .array(let items): self = try items.map(Element.init(configJSON:))
        case .string: self = [try Element(configJSON: j)]
        default: throw expected("a list of \(Element.configKind)", j)
        }
    }
    var configJSON: JSONValue { .array(map(\.configJSON)) }
    static var configKind: String { "list of \(Element.configKind)" }
    static var isConfigList: Bool { true }
    static func configJSON(flag word: String) -> JSONValue {
        if word.hasPrefix("["), let v = try? JSONValue(parsing: word) { return v }
        return .string(word)
    }
}

extension Dictionary: ConfigValue where Key == String, Value: ConfigValue {
    init(configJSON j: JSONValue) throws {
        guard let pairs = j.objectValue else { throw expected("an object of \(Value.configKind)", j) }
        self = try Dictionary(pairs.map { ($0.0, try Value(configJSON: $0.1)) }, uniquingKeysWith: { $1 })
    }
    var configJSON: JSONValue { .object(sorted { $0.key < $1.key }.map { ($0.key, $0.value.configJSON) }) }
    static var configKind: String { "object of \(Value.configKind)" }
    var configNumbers: [(label: String, value: Double)] {
        sorted { $0.key < $1.key }.flatMap { k, v in v.configNumbers.map { ("['\(k)']" + $0.label, $0.value) } }
    }
}

/// An enum chosen by name. `parse` accepts the enum's synonyms; an unknown name lists the cases.
protocol ConfigChoice: ConfigValue, CaseIterable, RawRepresentable where RawValue == String {
    static func parse(_ name: String) -> Self?
}

extension ConfigChoice {
    static func parse(_ name: String) -> Self? { Self(rawValue: name) }
    init(configJSON j: JSONValue) throws {
        guard let s = j.stringValue else { throw expected("one of \(Self.configKind)", j) }
        guard let v = Self.parse(s) else { throw ConfigValueError("'\(s)' is not one of \(Self.configKind)") }
        self = v
    }
    var configJSON: JSONValue { .string(rawValue) }
    static var configKind: String { allCases.map(\.rawValue).joined(separator: " | ") }
    static func configJSON(flag word: String) -> JSONValue { .string(word) }
}

extension MaskPolicy: ConfigChoice {
    static func parse(_ name: String) -> MaskPolicy? { MaskPolicy(name: name) }
}
extension DatasetFormat: ConfigChoice {
    static func parse(_ name: String) -> DatasetFormat? { DatasetFormat(name: name) }
}
extension TruncationPolicy: ConfigChoice {
    static func parse(_ name: String) -> TruncationPolicy? { TruncationPolicy(rawValue: name.lowercased()) }
}
extension QuantType: ConfigChoice {}
extension LRSchedule.Kind: ConfigChoice {}
extension LogSink: ConfigChoice {}
extension Precision: ConfigChoice {
    static func parse(_ name: String) -> Precision? { Precision(rawValue: name.lowercased()) }
}

extension LoRAInit: ConfigValue {
    init(configJSON j: JSONValue) throws {
        switch j {
        case .bool(let b): self = b ? .kaiming : .random
        case .string(let s):
            do { try self.init(peft: .string(s)) } catch { throw ConfigValueError("'\(s)' is not one of \(Self.configKind)") }
        default: throw expected("true, false or a name", j)
        }
    }
    var configJSON: JSONValue {
        switch self {
        case .kaiming: return .bool(true)
        case .random: return .bool(false)
        default: return .string(description)
        }
    }
    static var configKind: String { "true | false | gaussian | pissa | pissa_niter_K | olora" }
    static func configJSON(flag word: String) -> JSONValue {
        word == "true" ? .bool(true) : word == "false" ? .bool(false) : .string(word)
    }
}
