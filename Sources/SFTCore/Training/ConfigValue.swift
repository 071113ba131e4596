// How one config value reads from JSON and from a command-line word, and writes back to JSON.
// `FinetuneConfig.keys` (FinetuneConfigKeys.swift) pairs each key with a property whose type
// conforms here; decoding, flags, `--help` and range checks then come from the type.
//
// Rules: integers accept JSON integers (and integral floats); numbers must be finite; names of
// enums are matched by the enum's own parser (with its synonyms) and an unknown name lists the
// allowed ones; a flag word is JSON when it parses as JSON, otherwise the text itself.

import Foundation

/// A value a config key can hold.
public protocol ConfigValue {
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
public struct ConfigValueError: Error, CustomStringConvertible {
    public var description: String
    init(_ d: String) { description = d }
}

extension ConfigValue {
    public static var isConfigList: Bool { false }
    public var configNumbers: [(label: String, value: Double)] { [] }
    public static func configJSON(flag word: String) -> JSONValue {
        (try? JSONValue(parsing: word)) ?? .string(word)
    }
}

func expected(_ what: String, _ got: JSONValue) -> ConfigValueError {
    ConfigValueError("expected \(what), got \(got.serialized())")
}

extension String: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        guard let s = j.stringValue else { throw expected("a string", j) }
        self = s
    }
    public var configJSON: JSONValue { .string(self) }
    public static var configKind: String { "text" }
    /// A string key takes the word as written (`--template null` is the file named null).
    public static func configJSON(flag word: String) -> JSONValue { .string(word) }
}

extension Bool: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        guard let b = j.boolValue else { throw expected("true or false", j) }
        self = b
    }
    public var configJSON: JSONValue { .bool(self) }
    public static var configKind: String { "true | false" }
}

extension Int: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        switch j {
        case .int(let i): self = i
        case .double(let d) where d.rounded() == d && abs(d) < 9e18: self = Int(d)
        default: throw expected("an integer", j)
        }
    }
    public var configJSON: JSONValue { .int(self) }
    public static var configKind: String { "integer" }
    public var configNumbers: [(label: String, value: Double)] { [("", Double(self))] }
}

extension UInt64: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        switch j {
        case .int(let i) where i >= 0: self = UInt64(i)
        case .double(let d) where d.rounded() == d && d >= 0 && d < 1.8e19: self = UInt64(d)
        default: throw expected("a non-negative integer", j)
        }
    }
    public var configJSON: JSONValue { self <= UInt64(Int.max) ? .int(Int(self)) : .double(Double(self)) }
    public static var configKind: String { "integer ≥ 0" }
}

extension Double: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        guard let d = j.doubleValue else { throw expected("a number", j) }
        guard d.isFinite else { throw ConfigValueError("\(d.isNaN ? "NaN" : "an infinite value") is not allowed") }
        self = d
    }
    public var configJSON: JSONValue { .double(self) }
    public static var configKind: String { "number" }
    public var configNumbers: [(label: String, value: Double)] { [("", self)] }
    /// Also reads spellings JSON lacks (`nan`, `inf`) so that they are refused by name.
    public static func configJSON(flag word: String) -> JSONValue {
        if let d = Double(word.trimmingCharacters(in: .whitespaces)) { return .double(d) }
        return (try? JSONValue(parsing: word)) ?? .string(word)
    }
}

extension Optional: ConfigValue where Wrapped: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        self = j.isNull ? nil : try Wrapped(configJSON: j)
    }
    public var configJSON: JSONValue { self?.configJSON ?? .null }
    public static var configKind: String { Wrapped.configKind }
    public static var isConfigList: Bool { Wrapped.isConfigList }
    public var configNumbers: [(label: String, value: Double)] { self?.configNumbers ?? [] }
    public static func configJSON(flag word: String) -> JSONValue { Wrapped.configJSON(flag: word) }
}

extension Array: ConfigValue where Element: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        switch j {
        case .array(let items): self = try items.map(Element.init(configJSON:))
        case .string: self = [try Element(configJSON: j)]
        default: throw expected("a list of \(Element.configKind)", j)
        }
    }
    public var configJSON: JSONValue { .array(map(\.configJSON)) }
    public static var configKind: String { "list of \(Element.configKind)" }
    public static var isConfigList: Bool { true }
    public static func configJSON(flag word: String) -> JSONValue {
        if word.hasPrefix("["), let v = try? JSONValue(parsing: word) { return v }
        return .string(word)
    }
}

extension Dictionary: ConfigValue where Key == String, Value: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        guard let pairs = j.objectValue else { throw expected("an object of \(Value.configKind)", j) }
        self = try Dictionary(pairs.map { ($0.0, try Value(configJSON: $0.1)) }, uniquingKeysWith: { $1 })
    }
    public var configJSON: JSONValue { .object(sorted { $0.key < $1.key }.map { ($0.key, $0.value.configJSON) }) }
    public static var configKind: String { "object of \(Value.configKind)" }
    public var configNumbers: [(label: String, value: Double)] {
        sorted { $0.key < $1.key }.flatMap { k, v in v.configNumbers.map { ("['\(k)']" + $0.label, $0.value) } }
    }
}

/// An enum chosen by name. `parse` accepts the enum's synonyms; an unknown name lists the cases.
public protocol ConfigChoice: ConfigValue, CaseIterable, RawRepresentable where RawValue == String {
    static func parse(_ name: String) -> Self?
}

extension ConfigChoice {
    public static func parse(_ name: String) -> Self? { Self(rawValue: name) }
    public init(configJSON j: JSONValue) throws {
        guard let s = j.stringValue else { throw expected("one of \(Self.configKind)", j) }
        guard let v = Self.parse(s) else { throw ConfigValueError("'\(s)' is not one of \(Self.configKind)") }
        self = v
    }
    public var configJSON: JSONValue { .string(rawValue) }
    public static var configKind: String { allCases.map(\.rawValue).joined(separator: " | ") }
    public static func configJSON(flag word: String) -> JSONValue { .string(word) }
}

extension MaskPolicy: ConfigChoice {
    public static func parse(_ name: String) -> MaskPolicy? { MaskPolicy(name: name) }
}
extension DatasetFormat: ConfigChoice {
    public static func parse(_ name: String) -> DatasetFormat? { DatasetFormat(name: name) }
}
extension TruncationPolicy: ConfigChoice {
    public static func parse(_ name: String) -> TruncationPolicy? { TruncationPolicy(rawValue: name.lowercased()) }
}
extension QuantType: ConfigChoice {}
extension LRSchedule.Kind: ConfigChoice {}
extension LogSink: ConfigChoice {}

extension LoRAInit: ConfigValue {
    public init(configJSON j: JSONValue) throws {
        switch j {
        case .bool(let b): self = b ? .kaiming : .random
        case .string(let s):
            do { try self.init(peft: s) } catch { throw ConfigValueError("'\(s)' is not one of \(Self.configKind)") }
        default: throw expected("true, false or a name", j)
        }
    }
    public var configJSON: JSONValue {
        switch self {
        case .kaiming: return .bool(true)
        case .random: return .bool(false)
        default: return .string(description)
        }
    }
    public static var configKind: String { "true | false | gaussian | pissa | pissa_niter_K | olora" }
    public static func configJSON(flag word: String) -> JSONValue {
        word == "true" ? .bool(true) : word == "false" ? .bool(false) : .string(word)
    }
}
