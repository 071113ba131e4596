// The Jinja syntax tree: what JinjaParser builds and JinjaInterpreter walks. Node kinds follow
// jinja2's nodes.py (Getattr, Getitem, Filter, Test, Compare, CondExpr, For, If, Macro, ...);
// every node keeps the byte offset it started at, for error messages.

struct Expr {
    indirect enum Kind {
        case literal(Value)
        case name(String)
        case list([Expr])
        case tuple([Expr])
        case dict([(Expr, Expr)])
        case getattr(Expr, String)
        case getitem(Expr, Expr)
        /// `a[start:stop:step]`; only appears as the index of `getitem`.
        case slice(Expr?, Expr?, Expr?)
        case call(Expr, Arguments)
        case filter(Expr, String, Arguments)
        case test(Expr, String, Arguments)
        case not(Expr)
        case neg(Expr)
        case pos(Expr)
        case binary(String, Expr, Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case concat([Expr])
        case compare(Expr, [(String, Expr)])
        case condexpr(test: Expr, then: Expr, otherwise: Expr?)
    }

    let kind: Kind
    let offset: Int
}

struct Arguments {
    var positional: [Expr] = []
    var keywords: [(String, Expr)] = []
    var star: Expr?
    var starStar: Expr?
}

/// What `{% set %}` and `{% for %}` assign to.
indirect enum Target {
    case name(String)
    case tuple([Target])
    /// `ns.attr` (namespace attribute).
    case namespaceAttr(String, String)
}

struct ForLoop {
    let target: Target
    let iterable: Expr
    let condition: Expr?
    let body: [Stmt]
    let otherwise: [Stmt]
    let recursive: Bool
}

struct MacroDef {
    let name: String
    let params: [String]
    let defaults: [Expr?]
    let body: [Stmt]
    let catchVarargs: Bool
    let catchKwargs: Bool
    let acceptsCaller: Bool
}

struct Stmt {
    indirect enum Kind {
        /// Literal template text.
        case text(TString)
        case print([Expr])
        case ifChain([(Expr, [Stmt])], otherwise: [Stmt])
        case forLoop(ForLoop)
        case set(Target, Expr)
        case setBlock(Target, filters: [(String, Arguments, Int)], body: [Stmt])
        case macro(MacroDef)
        /// `{% call(params) callee(args) %}body{% endcall %}`.
        case callBlock(caller: MacroDef, call: Expr)
        case filterBlock([(String, Arguments, Int)], body: [Stmt])
        case with([(Target, Expr)], body: [Stmt])
        /// `{% block %}`, `{% generation %}`: the body renders in place.
        case scoped([Stmt], newScope: Bool)
        case breakLoop
        case continueLoop
    }

    let kind: Kind
    let offset: Int
}
