// The Jinja evaluator: walks the syntax tree with jinja2's run-time rules.
//
// Scoping follows jinja2: `{% if %}` shares its scope; each for-loop iteration, macro call,
// `with`, call/filter/set block gets a child scope, so `{% set %}` inside a loop does not leak
// out of it (templates use namespace() for that); a macro sees its defining scope as it is
// when called. Undefined names, attributes and items are Undefined values, which print as ""
// and raise only when used further (attribute access, arithmetic, calls).
//
// Sandbox: there is no file, network or process access at all; mutating list/dict methods
// are refused as jinja2's ImmutableSandboxedEnvironment refuses them; `range` is capped at
// 100 000 items as in jinja2; and `TemplateLimits` bounds the work (evaluation steps), macro
// recursion, output size and value nesting, so a hostile template ends with an error.
import Foundation
import SFTKernels

/// Resource bounds for rendering a template.
public struct TemplateLimits: Sendable {
    /// Expression evaluations plus executed statements and loop iterations.
    public var maxSteps: Int
    /// Nested macro calls.
    public var maxCallDepth: Int
    /// Size of the rendered text (and of any string built on the way).
    public var maxOutputBytes: Int
    /// Machine stack the interpreter's recursion may use (measured from where `render` was
    /// called). The default suits threads with the usual 8 MiB Linux stack; lower it when
    /// rendering on threads with small stacks.
    public var maxStackBytes: Int
    /// List and dict entries one value may hold, counted with sharing (a list holding the same
    /// list twice counts it twice). Its string bytes are bounded by `maxOutputBytes`.
    public var maxValueElements: Int

    /// Bounds with defaults generous enough for every published chat template.
    /// - Parameters:
    ///   - maxSteps: Evaluation steps (default 5 million).
    ///   - maxCallDepth: Nested macro calls (default 64).
    ///   - maxOutputBytes: Bytes of rendered text or any built string (default 64 MiB).
    ///   - maxStackBytes: Machine stack the recursion may use (default 1 MiB).
    ///   - maxValueElements: List and dict entries one value may hold (default 4 Mi).
    public init(maxSteps: Int = 5_000_000, maxCallDepth: Int = 64, maxOutputBytes: Int = 64 << 20,
                maxStackBytes: Int = 1 << 20, maxValueElements: Int = 1 << 22) {
        self.maxSteps = maxSteps
        self.maxCallDepth = maxCallDepth
        self.maxOutputBytes = maxOutputBytes
        self.maxStackBytes = maxStackBytes
        self.maxValueElements = maxValueElements
    }
}

/// Variables of one scope. Scopes hold a handful of names, so parallel arrays searched
/// linearly beat a hash table (one is created per loop iteration and macro call).
final class JScope {
    private var vars: [(name: String, value: JValue)] = []
    let parent: JScope?

    init(parent: JScope?) {
        self.parent = parent
    }

    subscript(name: String) -> JValue? {
        get {
            for v in vars where v.name == name { return v.value }
            return nil
        }
        set {
            if let i = vars.firstIndex(where: { $0.name == name }) {
                if let v = newValue { vars[i].value = v } else { vars.remove(at: i) }
            } else if let v = newValue {
                vars.append((name, v))
            }
        }
    }

    func lookup(_ name: String) -> JValue? {
        var s: JScope? = self
        while let c = s {
            for v in c.vars where v.name == name { return v.value }
            s = c.parent
        }
        return nil
    }
}

enum JFlow {
    case normal, breakLoop, continueLoop
}

/// Raised by `raise_exception(...)`: the template's own message, unchanged.
struct RaisedException: Error {
    var offset: Int
    var message: String
}

final class JinjaInterpreter {
    let limits: TemplateLimits
    let now: () -> Date
    var steps = 0
    var callDepth = 0
    var out = TString.empty
    /// Bytes held by outer output buffers while a block's output is captured.
    var outerBytes = 0
    /// Deepest value nesting allowed (recursive repr/equality/tojson stay within the stack).
    static let maxValueDepth = 128

    init(limits: TemplateLimits, now: @escaping () -> Date) {
        self.limits = limits
        self.now = now
    }

    static let globalNames = ["range", "dict", "namespace", "raise_exception", "strftime_now", "lipsum", "cycler", "joiner"]

    /// Address of a local in `render`: the stack grows down from here.
    var stackBase: UInt = 0

    /// The current stack position (address of a local).
    @inline(__always) static func stackPosition() -> UInt {
        var marker: UInt8 = 0
        return withUnsafeMutablePointer(to: &marker) { UInt(bitPattern: $0) }
    }

    func checkStack(_ offset: Int) throws {
        let here = Self.stackPosition()
        if stackBase > here && stackBase - here > UInt(limits.maxStackBytes) {
            throw TemplateError(offset: offset, message: "template nested too deeply (more than \(limits.maxStackBytes) bytes of stack)")
        }
    }

    func render(_ body: [JStmt], context: [String: JValue]) throws -> TString {
        stackBase = Self.stackPosition()
        let globals = JScope(parent: nil)
        for n in Self.globalNames { globals[n] = .callable(CallableBox(.builtin(n))) }
        let root = JScope(parent: globals)
        for (k, v) in context { root[k] = v }
        out = .empty
        _ = try exec(body, root)
        return out
    }

    // MARK: output

    func emit(_ t: TString, at offset: Int) throws {
        out.append(t)
        if out.count + outerBytes > limits.maxOutputBytes {
            throw TemplateError(offset: offset, message: "output larger than \(limits.maxOutputBytes) bytes")
        }
    }

    /// Runs `f` with a fresh output buffer and returns what it wrote.
    func capture(_ f: () throws -> Void) throws -> TString {
        let saved = out
        outerBytes += saved.count
        out = .empty
        defer { outerBytes -= saved.count }
        do {
            try f()
        } catch {
            out = saved
            throw error
        }
        let r = out
        out = saved
        return r
    }

    func step(_ offset: Int) throws {
        try checkStack(offset)
        steps += 1
        if steps > limits.maxSteps {
            throw TemplateError(offset: offset, message: "step limit of \(limits.maxSteps) exceeded (endless or huge loop?)")
        }
    }

    /// Counts `units` steps of work done inside one operation (a filter, a comparison, printing
    /// a value), before it is done: work the step limit would not otherwise see.
    func charge(_ units: Int) throws {
        steps = ValueSize.saturating(steps, units)
        if steps > limits.maxSteps {
            throw ValueError.message("step limit of \(limits.maxSteps) exceeded (the work of this operation on a value of this size)")
        }
    }

    /// Refuses a value past the size limits (entries and string bytes, counted with sharing) or
    /// nested past `maxValueDepth`.
    func checkValue(_ v: JValue) throws {
        let size = v.size
        if size.elements > limits.maxValueElements {
            throw ValueError.message("value too large: \(size.elements == Int.max ? "more than \(Int.max)" : String(size.elements)) list/dict entries (counted with sharing; limit \(limits.maxValueElements))")
        }
        if size.bytes > limits.maxOutputBytes {
            throw ValueError.message("value too large: \(size.bytes == Int.max ? "more than \(Int.max)" : String(size.bytes)) bytes of strings (counted with sharing; limit \(limits.maxOutputBytes))")
        }
        if v.depth > Self.maxValueDepth { throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep") }
    }

    // MARK: statements

    func exec(_ body: [JStmt], _ s: JScope) throws -> JFlow {
        for st in body {
            try step(st.offset)
            do {
                let flow = try execOne(st, s)
                if flow != .normal { return flow }
            } catch let e as ValueError {
                throw e.located(at: st.offset)
            }
        }
        return .normal
    }

    private func execOne(_ st: JStmt, _ s: JScope) throws -> JFlow {
        switch st.kind {
        case .text(let t):
            try emit(t, at: st.offset)
        case .print(let exprs):
            for e in exprs {
                let v = try eval(e, s)
                if case .string = v {} else { try withPosition(e.offset) { try charge(v.cost(deep: true)) } }
                try emit(Py.str(v), at: e.offset)
            }
        case .ifChain(let branches, let otherwise):
            for (test, body) in branches where try eval(test, s).truthy {
                return try exec(body, s)
            }
            return try exec(otherwise, s)
        case .forLoop(let f):
            return try runFor(f, s, offset: st.offset, depth0: 0, override: nil)
        case .set(let target, let e):
            try assign(target, try eval(e, s), s)
        case .setBlock(let target, let filters, let body):
            var v = JValue.string(try capture { _ = try exec(body, JScope(parent: s)) })
            v = try applyFilters(filters, v, s)
            try withPosition(st.offset) { try checkValue(v) }
            try assign(target, v, s)
        case .macro(let def):
            s[def.name] = .callable(CallableBox(.macro(makeMacro(def, closure: s))))
        case .callBlock(let callerDef, let call):
            guard case .call(let calleeExpr, let args) = call.kind else { break }
            let callee = try eval(calleeExpr, s)
            let (pos, kw) = try evalArgs(args, s)
            let caller = JValue.callable(CallableBox(.macro(makeMacro(callerDef, closure: s))))
            let result = try withPosition(call.offset) { try callValue(callee, pos, kw, caller: caller) }
            try emit(Py.str(result), at: st.offset)
        case .filterBlock(let filters, let body):
            let v = JValue.string(try capture { _ = try exec(body, JScope(parent: s)) })
            try emit(Py.str(try applyFilters(filters, v, s)), at: st.offset)
        case .with(let pairs, let body):
            let inner = JScope(parent: s)
            for (t, e) in pairs { try assign(t, try eval(e, s), inner) }
            return try exec(body, inner)
        case .scoped(let body, let newScope):
            return try exec(body, newScope ? JScope(parent: s) : s)
        case .breakLoop:
            return .breakLoop
        case .continueLoop:
            return .continueLoop
        }
        return .normal
    }

    func makeMacro(_ d: MacroDef, closure: JScope) -> Macro {
        Macro(name: d.name, params: d.params, defaults: d.defaults, body: d.body, closure: closure,
              catchVarargs: d.catchVarargs, catchKwargs: d.catchKwargs, acceptsCaller: d.acceptsCaller)
    }

    func applyFilters(_ filters: [(String, JArguments, Int)], _ input: JValue, _ s: JScope) throws -> JValue {
        var v = input
        for (name, args, offset) in filters {
            let (pos, kw) = try evalArgs(args, s)
            v = try withPosition(offset) { try filter(name, v, pos, kw) }
        }
        return v
    }

    /// Attaches `offset` to value errors thrown by `f`.
    func withPosition<T>(_ offset: Int, _ f: () throws -> T) throws -> T {
        do {
            return try f()
        } catch let e as ValueError {
            throw e.located(at: offset)
        }
    }

    private func runFor(_ f: ForLoop, _ s: JScope, offset: Int, depth0: Int, override: JValue?) throws -> JFlow {
        let iterable = try override ?? eval(f.iterable, s)
        var items = try withPosition(f.iterable.offset) { try Py.iterate(iterable) }
        if let cond = f.condition {
            var kept: [JValue] = []
            for item in items {
                try step(cond.offset)
                let fs = JScope(parent: s)
                try assign(f.target, item, fs)
                if try eval(cond, fs).truthy { kept.append(item) }
            }
            items = kept
        }
        if items.isEmpty {
            _ = try exec(f.otherwise, s)
            return .normal
        }
        let loop = LoopBox(items: items, depth0: depth0)
        if f.recursive {
            loop.recurse = { [unowned self] v in
                self.callDepth += 1
                defer { self.callDepth -= 1 }
                if self.callDepth > self.limits.maxCallDepth {
                    throw ValueError.message("recursive loop: recursion deeper than \(self.limits.maxCallDepth) calls")
                }
                return try self.capture { _ = try self.runFor(f, s, offset: offset, depth0: depth0 + 1, override: v) }
            }
        }
        for (i, item) in items.enumerated() {
            try step(offset)
            loop.index0 = i
            let it = JScope(parent: s)
            it["loop"] = .loop(loop)
            try assign(f.target, item, it)
            if try exec(f.body, it) == .breakLoop { break }
        }
        return .normal
    }

    func assign(_ target: JTarget, _ v: JValue, _ s: JScope) throws {
        switch target {
        case .name(let n):
            s[n] = v
        case .tuple(let targets):
            let items = try Py.iterate(v)
            if items.count != targets.count {
                throw ValueError.message(items.count > targets.count
                    ? "too many values to unpack (expected \(targets.count))"
                    : "not enough values to unpack (expected \(targets.count), got \(items.count))")
            }
            for (t, item) in zip(targets, items) { try assign(t, item, s) }
        case .namespaceAttr(let name, let attr):
            guard case .namespace(let ns) = s.lookup(name) ?? .none else {
                throw ValueError.message("cannot assign attribute on non-namespace object '\(name)'")
            }
            if attr.hasPrefix("_") {
                throw ValueError.message("chat templates cannot store underscore-prefixed attributes on a namespace ('\(attr)')")
            }
            if v.depth >= Self.maxValueDepth || ns.depth >= Self.maxValueDepth {
                throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep (namespace '\(name)')")
            }
            ns.set(attr, v)
        }
    }

    // MARK: expressions

    func eval(_ e: JExpr, _ s: JScope) throws -> JValue {
        try step(e.offset)
        do {
            let v = try evalKind(e, s)
            try checkValue(v)
            return v
        } catch let v as ValueError {
            throw v.located(at: e.offset)
        }
    }

    func makeList(_ items: [JValue], kind: SequenceKind = .list) throws -> JValue {
        let l = ListBox(items, kind: kind)
        if l.depth > Self.maxValueDepth { throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep") }
        return .list(l)
    }

    private func evalKind(_ e: JExpr, _ s: JScope) throws -> JValue {
        switch e.kind {
        case .literal(let v):
            return v
        case .name(let n):
            return s.lookup(n) ?? .undefined("'\(n)' is undefined")
        case .list(let xs):
            return try makeList(try xs.map { try eval($0, s) })
        case .tuple(let xs):
            return try makeList(try xs.map { try eval($0, s) }, kind: .tuple)
        case .dict(let pairs):
            let d = try DictBox.from(pairs: try pairs.map { (try eval($0.0, s), try eval($0.1, s)) })
            if d.depth > Self.maxValueDepth { throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep") }
            return .dict(d)
        case .getattr(let x, let name):
            return try getattr(try eval(x, s), name)
        case .getitem(let x, let index):
            let obj = try eval(x, s)
            if case .slice(let a, let b, let c) = index.kind {
                let start = try a.map { try eval($0, s) } ?? .none
                let stop = try b.map { try eval($0, s) } ?? .none
                let step = try c.map { try eval($0, s) } ?? .none
                return try slice(obj, start, stop, step)
            }
            return try getitem(obj, try eval(index, s))
        case .slice:
            throw ValueError.message("a slice is only allowed inside []")
        case .call(let f, let args):
            let callee = try eval(f, s)
            let (pos, kw) = try evalArgs(args, s)
            return try callValue(callee, pos, kw, caller: nil)
        case .filter(let x, let name, let args):
            let input = try eval(x, s)
            let (pos, kw) = try evalArgs(args, s)
            return try filter(name, input, pos, kw)
        case .test(let x, let name, let args):
            let input = try eval(x, s)
            let (pos, kw) = try evalArgs(args, s)
            return .bool(try test(name, input, pos, kw))
        case .not(let x):
            return .bool(!(try eval(x, s).truthy))
        case .neg(let x):
            let v = try eval(x, s)
            if case .undefined(let u) = v { throw undefinedError(u) }
            switch v.num {
            case .int(let i)?:
                if i == Int.min { throw ValueError.message("integer overflow") }
                return .int(-i)
            case .double(let d)?: return .double(-d)
            case nil: throw ValueError.message("bad operand type for unary -: '\(v.typeName)'")
            }
        case .pos(let x):
            let v = try eval(x, s)
            if case .undefined(let u) = v { throw undefinedError(u) }
            switch v.num {
            case .int(let i)?: return .int(i)
            case .double(let d)?: return .double(d)
            case nil: throw ValueError.message("bad operand type for unary +: '\(v.typeName)'")
            }
        case .binary(let op, let a, let b):
            let x = try eval(a, s), y = try eval(b, s)
            let r = try Py.arith(op, x, y, maxBytes: limits.maxOutputBytes)
            try charge(r.cost(deep: false))
            if r.depth > Self.maxValueDepth { throw ValueError.message("values nested more than \(Self.maxValueDepth) levels deep") }
            return r
        case .and(let a, let b):
            let x = try eval(a, s)
            return x.truthy ? try eval(b, s) : x
        case .or(let a, let b):
            let x = try eval(a, s)
            return x.truthy ? x : try eval(b, s)
        case .concat(let xs):
            var r = TString.empty
            for x in xs {
                let v = try eval(x, s)
                if case .string = v {} else { try charge(v.cost(deep: true)) }
                r.append(Py.str(v))
                if r.count > limits.maxOutputBytes { throw ValueError.message("string too long") }
            }
            return .string(r)
        case .compare(let x, let ops):
            var left = try eval(x, s)
            for (op, rhs) in ops {
                let right = try eval(rhs, s)
                try charge(ValueSize.saturating(left.cost(deep: true), right.cost(deep: true)))
                if !(try Py.compareOp(op, left, right)) { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .condexpr(let test, let then, let otherwise):
            if try eval(test, s).truthy { return try eval(then, s) }
            if let otherwise { return try eval(otherwise, s) }
            return .undefined("the inline if-expression evaluated to false and no else section was defined")
        }
    }

    func evalArgs(_ a: JArguments, _ s: JScope) throws -> ([JValue], [(String, JValue)]) {
        var pos = try a.positional.map { try eval($0, s) }
        var kw = try a.keywords.map { ($0.0, try eval($0.1, s)) }
        if let star = a.star { pos += try Py.iterate(try eval(star, s)) }
        if let ss = a.starStar {
            guard case .dict(let d) = try eval(ss, s) else { throw ValueError.message("argument after ** must be a mapping") }
            for (k, v) in zip(d.keys, d.values) {
                guard case .string(let ks) = k else { throw ValueError.message("keywords must be strings") }
                kw.append((ks.string, v))
            }
        }
        return (pos, kw)
    }

    // MARK: attribute and item access (jinja2's sandboxed getattr / getitem)

    static func missing(_ obj: JValue, _ name: JValue) -> JValue {
        if case .string(let s) = name { return .undefined("'\(obj.typeName) object' has no attribute '\(s.string)'") }
        return .undefined("'\(obj.typeName) object' has no element \(Py.repr(name))")
    }

    static let stringMethods: Set<String> = [
        "capitalize", "casefold", "center", "count", "endswith", "find", "format", "index", "isalnum", "isalpha",
        "isascii", "isdecimal", "isdigit", "islower", "isnumeric", "isspace", "istitle", "isupper", "join", "ljust",
        "lower", "lstrip", "partition", "removeprefix", "removesuffix", "replace", "rfind", "rindex", "rjust",
        "rpartition", "rsplit", "rstrip", "split", "splitlines", "startswith", "strip", "swapcase", "title", "upper",
        "zfill",
    ]
    static let dictMethods: Set<String> = ["get", "items", "keys", "values", "copy"]
    static let dictMutators: Set<String> = ["clear", "pop", "popitem", "setdefault", "update"]
    static let listMethods: Set<String> = ["count", "index", "copy"]
    static let listMutators: Set<String> = ["append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort"]

    static func unsafe(_ obj: JValue, _ name: String) -> JValue {
        .undefined(UndefinedInfo(hint: "access to attribute '\(name)' of '\(obj.typeName)' object is unsafe.", unsafe: true))
    }

    /// The Python attribute `name` of `obj`, if it has one (methods and loop fields).
    func attribute(_ obj: JValue, _ name: String) -> JValue? {
        func method() -> JValue { .callable(CallableBox(.method(obj, name))) }
        switch obj {
        case .string:
            return Self.stringMethods.contains(name) ? method() : nil
        case .dict:
            if Self.dictMethods.contains(name) { return method() }
            if Self.dictMutators.contains(name) { return Self.unsafe(obj, name) }
            return nil
        case .list(let l):
            if l.kind == .list && Self.listMethods.contains(name) { return method() }
            if l.kind == .tuple && (name == "count" || name == "index") { return method() }
            if l.kind == .list && Self.listMutators.contains(name) { return Self.unsafe(obj, name) }
            return nil
        case .namespace(let ns):
            return ns.values[name]
        case .bool, .int, .double:
            if name == "real" { if case .double = obj { return obj }; return .int(obj.intValue!) }
            if name == "imag" { if case .double = obj { return .double(0) }; return .int(0) }
            return nil
        case .loop(let l):
            let n = l.items.count
            switch name {
            case "index0": return .int(l.index0)
            case "index": return .int(l.index0 + 1)
            case "revindex": return .int(n - l.index0)
            case "revindex0": return .int(n - l.index0 - 1)
            case "first": return .bool(l.index0 == 0)
            case "last": return .bool(l.index0 == n - 1)
            case "length": return .int(n)
            case "depth": return .int(l.depth0 + 1)
            case "depth0": return .int(l.depth0)
            case "previtem": return l.index0 > 0 ? l.items[l.index0 - 1] : .undefined("there is no previous item")
            case "nextitem": return l.index0 + 1 < n ? l.items[l.index0 + 1] : .undefined("there is no next item")
            case "cycle", "changed": return method()
            default: return nil
            }
        default:
            return nil
        }
    }

    func getattr(_ obj: JValue, _ name: String) throws -> JValue {
        if case .undefined(let u) = obj { throw undefinedError(u) }
        if let a = attribute(obj, name) { return a }
        if case .dict(let d) = obj, let v = d.lookup(name) { return v }
        return Self.missing(obj, .str(name))
    }

    func getitem(_ obj: JValue, _ key: JValue) throws -> JValue {
        switch obj {
        case .undefined(let u):
            throw undefinedError(u)
        case .dict(let d):
            if let v = d.lookup(key) { return v }
        case .list(let l):
            if let i = key.intValue, l.kind == .list || l.kind == .tuple {
                let j = i < 0 ? i + l.items.count : i
                if j >= 0 && j < l.items.count { return l.items[j] }
            }
        case .string(let s):
            if let i = key.intValue {
                let offs = s.scalarOffsets()
                let n = offs.count - 1
                let j = i < 0 ? i + n : i
                if j >= 0 && j < n { return .string(s.slice(offs[j], offs[j + 1])) }
            }
        default:
            break
        }
        if case .string(let ks) = key, let a = attribute(obj, ks.string) { return a }
        return Self.missing(obj, key)
    }

    func slice(_ obj: JValue, _ start: JValue, _ stop: JValue, _ step: JValue) throws -> JValue {
        switch obj {
        case .undefined(let u):
            throw undefinedError(u)
        case .string(let s):
            return .string(try Py.sliceString(s, start, stop, step))
        case .list(let l) where l.kind == .list || l.kind == .tuple:
            let idx = try Py.sliceIndices(length: l.items.count, start: start, stop: stop, step: step)
            return .list(ListBox(idx.map { l.items[$0] }, kind: l.kind))
        default:
            return .undefined("'\(obj.typeName)' object is not subscriptable")
        }
    }

    // MARK: calls

    func callValue(_ callee: JValue, _ args: [JValue], _ kwargs: [(String, JValue)], caller: JValue?) throws -> JValue {
        switch callee {
        case .callable(let c):
            switch c.kind {
            case .macro(let m): return try invoke(m, args, kwargs, caller: caller)
            case .builtin(let name): return try callGlobal(name, args, kwargs)
            case .method(let recv, let name): return try callMethod(recv, name, args, kwargs)
            }
        case .loop(let l):
            guard let recurse = l.recurse else { throw ValueError.message("the loop is not recursive (use 'recursive' to call loop())") }
            guard args.count == 1, kwargs.isEmpty else { throw ValueError.message("loop() takes exactly one argument") }
            return .string(try recurse(args[0]))
        case .undefined(let u):
            throw undefinedError(u)
        default:
            throw ValueError.message("'\(callee.typeName)' object is not callable")
        }
    }

    func invoke(_ m: Macro, _ args: [JValue], _ kwargs: [(String, JValue)], caller: JValue?) throws -> JValue {
        callDepth += 1
        defer { callDepth -= 1 }
        if callDepth > limits.maxCallDepth {
            throw ValueError.message("macro '\(m.name)': recursion deeper than \(limits.maxCallDepth) calls")
        }
        let scope = JScope(parent: m.closure)
        var kw = kwargs
        if args.count > m.params.count && !m.catchVarargs {
            throw ValueError.message("macro '\(m.name)' takes not more than \(m.params.count) argument(s)")
        }
        for (i, p) in m.params.enumerated() {
            if i < args.count {
                if kw.contains(where: { $0.0 == p }) { throw ValueError.message("macro '\(m.name)' got multiple values for argument '\(p)'") }
                scope[p] = args[i]
            } else if let k = kw.firstIndex(where: { $0.0 == p }) {
                scope[p] = kw[k].1
                kw.remove(at: k)
            } else if let d = m.defaults[i] {
                scope[p] = try eval(d, scope)
            } else {
                scope[p] = .undefined("parameter '\(p)' was not provided")
            }
        }
        if m.acceptsCaller {
            if let caller {
                scope["caller"] = caller
            } else if let k = kw.firstIndex(where: { $0.0 == "caller" }) {
                scope["caller"] = kw[k].1
                kw.remove(at: k)
            } else {
                scope["caller"] = .undefined("No caller defined")
            }
        } else if caller != nil {
            throw ValueError.message("macro '\(m.name)' was called from a call block but does not use caller()")
        }
        if m.catchVarargs {
            scope["varargs"] = .tuple(args.count > m.params.count ? Array(args[m.params.count...]) : [])
        }
        if m.catchKwargs {
            scope["kwargs"] = .dict(DictBox(keys: kw.map { .str($0.0) }, values: kw.map { $0.1 }))
        } else if let extra = kw.first {
            throw ValueError.message("macro '\(m.name)' takes no keyword argument '\(extra.0)'")
        }
        return .string(try capture { _ = try exec(m.body, scope) })
    }
}
