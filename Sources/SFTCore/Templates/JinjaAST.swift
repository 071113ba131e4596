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
}

struct JArguments {
    var positional: [JExpr] = []
    var keywords: [(String, JExpr)] = []
    var star: JExpr?
    var starStar: JExpr?
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
