// The Jinja syntax tree: what JinjaParser builds and JinjaInterpreter walks. Node kinds follow
// jinja2's nodes.py (Getattr, Getitem, Filter, Test, Compare, CondExpr, For, If, Macro, ...);
// every node keeps the byte offset it started at, for error messages.
import SFTKernels

struct JExpr {
    indirect enum Kind {
        case literal(JValue)
        case name(String)
        case list([JExpr])
        case tuple([JExpr])
        case dict([(JExpr, JExpr)])
        case getattr(JExpr, String)
        case getitem(JExpr, JExpr)
        /// `a[start:stop:step]`; only appears as the index of `getitem`.
        case slice(JExpr?, JExpr?, JExpr?)
        case call(JExpr, JArguments)
        case filter(JExpr, String, JArguments)
        case test(JExpr, String, JArguments)
        case not(JExpr)
        case neg(JExpr)
        case pos(JExpr)
        case binary(String, JExpr, JExpr)
        case and(JExpr, JExpr)
        case or(JExpr, JExpr)
        case concat([JExpr])
        case compare(JExpr, [(String, JExpr)])
        case condexpr(test: JExpr, then: JExpr, otherwise: JExpr?)
    }

    let kind: Kind
    let offset: Int
    /// Levels in this tree (1 for a leaf), from the children's stored depths: the parser caps
    /// it, so evaluating and freeing a tree never recurses deeper than that.
    let depth: Int

    init(kind: Kind, offset: Int) {
        self.kind = kind
        self.offset = offset
        var d = 0
        func see(_ e: JExpr?) { if let e { d = max(d, e.depth) } }
        switch kind {
        case .literal, .name: break
        case .list(let xs), .tuple(let xs), .concat(let xs): for x in xs { see(x) }
        case .dict(let pairs): for (k, v) in pairs { see(k); see(v) }
        case .getattr(let x, _), .not(let x), .neg(let x), .pos(let x): see(x)
        case .getitem(let x, let i): see(x); see(i)
        case .slice(let a, let b, let c): see(a); see(b); see(c)
        case .call(let x, let a), .filter(let x, _, let a), .test(let x, _, let a): see(x); d = max(d, a.depth)
        case .binary(_, let a, let b), .and(let a, let b), .or(let a, let b): see(a); see(b)
        case .compare(let x, let ops): see(x); for (_, y) in ops { see(y) }
        case .condexpr(let t, let a, let b): see(t); see(a); see(b)
        }
        depth = d + 1
    }
}

struct JArguments {
    var positional: [JExpr] = []
    var keywords: [(String, JExpr)] = []
    var star: JExpr?
    var starStar: JExpr?

    /// The deepest argument expression.
    var depth: Int {
        var d = max(star?.depth ?? 0, starStar?.depth ?? 0)
        for e in positional { d = max(d, e.depth) }
        for (_, e) in keywords { d = max(d, e.depth) }
        return d
    }
}

/// What `{% set %}` and `{% for %}` assign to.
indirect enum JTarget {
    case name(String)
    case tuple([JTarget])
    /// `ns.attr` (namespace attribute).
    case namespaceAttr(String, String)
}

struct ForLoop {
    let target: JTarget
    let iterable: JExpr
    let condition: JExpr?
    let body: [JStmt]
    let otherwise: [JStmt]
    let recursive: Bool
}

struct MacroDef {
    let name: String
    let params: [String]
    let defaults: [JExpr?]
    let body: [JStmt]
    let catchVarargs: Bool
    let catchKwargs: Bool
    let acceptsCaller: Bool
}

struct JStmt {
    indirect enum Kind {
        /// Literal template text.
        case text(TString)
        case print([JExpr])
        case ifChain([(JExpr, [JStmt])], otherwise: [JStmt])
        case forLoop(ForLoop)
        case set(JTarget, JExpr)
        case setBlock(JTarget, filters: [(String, JArguments, Int)], body: [JStmt])
        case macro(MacroDef)
        /// `{% call(params) callee(args) %}body{% endcall %}`.
        case callBlock(caller: MacroDef, call: JExpr)
        case filterBlock([(String, JArguments, Int)], body: [JStmt])
        case with([(JTarget, JExpr)], body: [JStmt])
        /// `{% block %}`, `{% generation %}`: the body renders in place.
        case scoped([JStmt], newScope: Bool)
        case breakLoop
        case continueLoop
    }

    let kind: Kind
    let offset: Int
}
