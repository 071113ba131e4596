// The Jinja parser: tokens to the syntax tree of JinjaAST.swift. A port of the grammar in
// jinja2's parser.py, including its operator precedence, lowest first:
//
//   x if c else y  <  or  <  and  <  not  <  comparisons, in, not in  <  + -  <  ~
//   <  * / // %  <  **  <  unary - +  <  postfix (. [] ()) then filters | and tests `is`
//
// so `a + b | trim` is `a + (b | trim)`, and `**` is left-associative as in jinja2. Statements:
// if/elif/else, for (with `if` filter, `else`, `recursive`), set (incl. `ns.attr` and block
// form), macro, call, filter, with, block, print, break/continue (loop controls), generation
// (transformers' assistant-mask tag, rendered transparently). Tags that load other templates
// (include, import, extends) are refused: templates have no file access.
//
// Unknown filters and tests are errors at parse time, except inside `if` tests and bodies and
// inline if-expressions, where jinja2 defers them to run time; we do the same.
import SFTKernels

struct JinjaParser {
    private var tokens: [JToken]
    private var i = 0
    private var loopDepth = 0
    private var soft = false
    private var depth = 0
    /// Open block tags (name, offset), innermost last, for "never closed" errors.
    private var open: [(String, Int)] = []

    static let maxNesting = 200
    /// Deepest expression tree (a chain like `1 + 1 + ... + 1` nests one level per term).
    static let maxExpressionDepth = 500
    /// Builds syntax nodes, capping their depth.
    private let nodes = NodeBuilder()
    /// Stack the parser's recursion may use.
    private let maxStackBytes: UInt
    private var stackBase: UInt = 0

    init(tokens: [JToken], maxStackBytes: Int) {
        self.tokens = tokens
        self.maxStackBytes = UInt(max(0, maxStackBytes))
    }

    static func parse(_ tokens: [JToken], maxStackBytes: Int) throws -> [JStmt] {
        var p = JinjaParser(tokens: tokens, maxStackBytes: maxStackBytes)
        let body = try p.subparse(end: nil)
        try p.checkExpressionDepth()
        return body
    }

    // MARK: token helpers

    private var current: JToken { tokens[i] }
    private var peek: JToken { tokens[min(i + 1, tokens.count - 1)] }

    @discardableResult
    private mutating func advance() -> JToken {
        let t = tokens[i]
        if i < tokens.count - 1 { i += 1 }
        return t
    }

    private func fail(_ message: String, at offset: Int? = nil) -> TemplateError {
        TemplateError(offset: offset ?? current.offset, message: message)
    }

    private mutating func expectOp(_ op: String) throws {
        guard current.isOp(op) else { throw fail("expected '\(op)', got \(current.describe)") }
        advance()
    }

    private mutating func expectName() throws -> JToken {
        guard current.kind == .name else { throw fail("expected a name, got \(current.describe)") }
        return advance()
    }

    private mutating func expectName(_ n: String) throws {
        guard current.isName(n) else { throw fail("expected '\(n)', got \(current.describe)") }
        advance()
    }

    private mutating func expectKind(_ k: JTokenKind) throws {
        guard current.kind == k else {
            let what = k == .blockEnd ? "'%}'" : k == .variableEnd ? "'}}'" : "\(k)"
            throw fail("expected \(what), got \(current.describe)")
        }
        advance()
    }

    private mutating func skipOp(_ op: String) -> Bool {
        if current.isOp(op) { advance(); return true }
        return false
    }

    private mutating func skipName(_ n: String) -> Bool {
        if current.isName(n) { advance(); return true }
        return false
    }

    private mutating func enter() throws {
        depth += 1
        if depth > Self.maxNesting { throw fail("template nested too deeply (more than \(Self.maxNesting) levels)") }
        if stackBase == 0 { stackBase = JinjaInterpreter.stackPosition() }
        let here = JinjaInterpreter.stackPosition()
        if stackBase > here && stackBase - here > maxStackBytes {
            throw fail("template nested too deeply for the parser's stack budget")
        }
    }

    private func checkExpressionDepth() throws {
        if let at = nodes.tooDeepAt {
            throw fail("expression nested too deeply (more than \(Self.maxExpressionDepth) levels)", at: at)
        }
    }

    // MARK: statements

    /// Statements up to one of `end` (left as the current token) or the end of the template.
    private mutating func subparse(end: [String]?) throws -> [JStmt] {
        try enter()
        defer { depth -= 1 }
        var body: [JStmt] = []
        while current.kind != .eof {
            let tok = current
            switch tok.kind {
            case .data:
                advance()
                body.append(JStmt(kind: .text(TString(bytes: tok.data)), offset: tok.offset))
            case .variableBegin:
                advance()
                let e = try parseTuple(withCondexpr: true)
                try expectKind(.variableEnd)
                body.append(JStmt(kind: .print([e]), offset: tok.offset))
            case .blockBegin:
                advance()
                if let end, current.kind == .name, end.contains(current.text) { return body }
                let s = try parseStatement()
                try expectKind(.blockEnd)
                body.append(s)
            default:
                throw fail("unexpected \(tok.describe)")
            }
        }
        if let end {
            if let (name, offset) = open.last {
                throw fail("unexpected end of template: '{% \(name) %}' was never closed (expected '\(end.joined(separator: "' or '"))')", at: offset)
            }
            throw fail("unexpected end of template, expected '\(end.joined(separator: "' or '"))'")
        }
        return body
    }

    /// Skips the optional colon, expects `%}`, parses a body up to `end`.
    private mutating func parseBody(_ end: [String], dropNeedle: Bool = false) throws -> [JStmt] {
        _ = skipOp(":")
        try expectKind(.blockEnd)
        let body = try subparse(end: end)
        if dropNeedle { advance() }
        return body
    }

    private mutating func withOpen<T>(_ name: String, _ offset: Int, _ f: (inout JinjaParser) throws -> T) rethrows -> T {
        open.append((name, offset))
        defer { open.removeLast() }
        return try f(&self)
    }

    private mutating func parseStatement() throws -> JStmt {
        let tok = current
        guard tok.kind == .name else { throw fail("tag name expected, got \(tok.describe)") }
        switch tok.text {
        case "if": return try withOpen("if", tok.offset) { try $0.parseIf() }
        case "for": return try withOpen("for", tok.offset) { try $0.parseFor() }
        case "set": return try withOpen("set", tok.offset) { try $0.parseSet() }
        case "macro": return try withOpen("macro", tok.offset) { try $0.parseMacro() }
        case "call": return try withOpen("call", tok.offset) { try $0.parseCallBlock() }
        case "filter": return try withOpen("filter", tok.offset) { try $0.parseFilterBlock() }
        case "with": return try withOpen("with", tok.offset) { try $0.parseWith() }
        case "block": return try withOpen("block", tok.offset) { try $0.parseBlock() }
        case "generation":
            return try withOpen("generation", tok.offset) { p in
                p.advance()
                let body = try p.parseBody(["endgeneration"], dropNeedle: true)
                // transformers renders the body as a call block: its own scope, like a macro.
                return JStmt(kind: .scoped(body, newScope: true), offset: tok.offset)
            }
        case "print":
            advance()
            var exprs: [JExpr] = []
            while current.kind != .blockEnd {
                if !exprs.isEmpty { try expectOp(",") }
                exprs.append(try parseExpression())
            }
            return JStmt(kind: .print(exprs), offset: tok.offset)
        case "break", "continue":
            advance()
            guard loopDepth > 0 else { throw fail("'\(tok.text)' outside of a for loop", at: tok.offset) }
            return JStmt(kind: tok.text == "break" ? .breakLoop : .continueLoop, offset: tok.offset)
        case "include", "import", "from", "extends":
            throw fail("'{% \(tok.text) %}' is not supported: chat templates cannot load other templates", at: tok.offset)
        case "autoescape", "do":
            throw fail("'{% \(tok.text) %}' is not supported in chat templates", at: tok.offset)
        default:
            if let (name, _) = open.last {
                throw fail("unexpected tag '\(tok.text)' inside '{% \(name) %}'", at: tok.offset)
            }
            throw fail("unknown tag '\(tok.text)'", at: tok.offset)
        }
    }

    private mutating func parseIf() throws -> JStmt {
        let start = advance().offset
        let saved = soft
        soft = true
        defer { soft = saved }
        var branches: [(JExpr, [JStmt])] = []
        var otherwise: [JStmt] = []
        while true {
            let test = try parseTuple(withCondexpr: false)
            let body = try parseBody(["elif", "else", "endif"])
            branches.append((test, body))
            let t = advance()
            if t.text == "elif" { continue }
            if t.text == "else" { otherwise = try parseBody(["endif"], dropNeedle: true) }
            break
        }
        return JStmt(kind: .ifChain(branches, otherwise: otherwise), offset: start)
    }

    private mutating func parseFor() throws -> JStmt {
        let start = advance().offset
        let target = try parseAssignTarget(extraEnd: ["in"])
        try expectName("in")
        let iterable = try parseTuple(withCondexpr: false, extraEnd: ["recursive"])
        var condition: JExpr?
        if skipName("if") { condition = try parseExpression() }
        let recursive = skipName("recursive")
        let saved = soft
        soft = false
        defer { soft = saved }
        loopDepth += 1
        let body = try parseBody(["endfor", "else"])
        loopDepth -= 1
        var otherwise: [JStmt] = []
        if advance().text == "else" {
            otherwise = try parseBody(["endfor"], dropNeedle: true)
        }
        return JStmt(kind: .forLoop(ForLoop(target: target, iterable: iterable, condition: condition, body: body,
                                           otherwise: otherwise, recursive: recursive)), offset: start)
    }

    private mutating func parseSet() throws -> JStmt {
        let start = advance().offset
        let target = try parseAssignTarget(withNamespace: true)
        if skipOp("=") {
            let e = try parseTuple()
            return JStmt(kind: .set(target, e), offset: start)
        }
        let filters = try parseFilterChain(startInline: false)
        let saved = soft
        soft = false
        defer { soft = saved }
        let body = try parseBody(["endset"], dropNeedle: true)
        return JStmt(kind: .setBlock(target, filters: filters, body: body), offset: start)
    }

    private mutating func parseSignature() throws -> ([String], [JExpr?]) {
        var params: [String] = []
        var defaults: [JExpr?] = []
        try expectOp("(")
        while !current.isOp(")") {
            if !params.isEmpty { try expectOp(",") }
            let name = try expectName()
            if skipOp("=") {
                defaults.append(try parseExpression())
            } else if defaults.contains(where: { $0 != nil }) {
                throw fail("non-default argument follows default argument", at: name.offset)
            } else {
                defaults.append(nil)
            }
            params.append(name.text)
        }
        try expectOp(")")
        return (params, defaults)
    }

    private mutating func macroBody(_ end: String) throws -> [JStmt] {
        let savedLoop = loopDepth, savedSoft = soft
        loopDepth = 0
        soft = false
        defer { loopDepth = savedLoop; soft = savedSoft }
        return try parseBody([end], dropNeedle: true)
    }

    private func makeMacro(name: String, params: [String], defaults: [JExpr?], body: [JStmt]) -> MacroDef {
        var names = Set<String>()
        collectNames(body, into: &names)
        return MacroDef(name: name, params: params, defaults: defaults, body: body,
                        catchVarargs: names.contains("varargs"), catchKwargs: names.contains("kwargs"),
                        acceptsCaller: names.contains("caller"))
    }

    private mutating func parseMacro() throws -> JStmt {
        let start = advance().offset
        let name = try expectName().text
        let (params, defaults) = try parseSignature()
        let body = try macroBody("endmacro")
        return JStmt(kind: .macro(makeMacro(name: name, params: params, defaults: defaults, body: body)), offset: start)
    }

    private mutating func parseCallBlock() throws -> JStmt {
        let start = advance().offset
        var params: [String] = [], defaults: [JExpr?] = []
        if current.isOp("(") { (params, defaults) = try parseSignature() }
        let call = try parseExpression()
        guard case .call = call.kind else { throw fail("expected a macro call after 'call'", at: call.offset) }
        let body = try macroBody("endcall")
        return JStmt(kind: .callBlock(caller: makeMacro(name: "caller", params: params, defaults: defaults, body: body), call: call),
                    offset: start)
    }

    private mutating func parseFilterBlock() throws -> JStmt {
        let start = advance().offset
        let filters = try parseFilterChain(startInline: true)
        let saved = soft
        soft = false
        defer { soft = saved }
        let body = try parseBody(["endfilter"], dropNeedle: true)
        return JStmt(kind: .filterBlock(filters, body: body), offset: start)
    }

    private mutating func parseWith() throws -> JStmt {
        let start = advance().offset
        var pairs: [(JTarget, JExpr)] = []
        while current.kind != .blockEnd {
            if !pairs.isEmpty { try expectOp(",") }
            let t = try parseAssignTarget()
            try expectOp("=")
            pairs.append((t, try parseExpression()))
        }
        let saved = soft
        soft = false
        defer { soft = saved }
        let body = try parseBody(["endwith"], dropNeedle: true)
        return JStmt(kind: .with(pairs, body: body), offset: start)
    }

    private mutating func parseBlock() throws -> JStmt {
        let start = advance().offset
        let name = try expectName().text
        _ = skipName("scoped")
        _ = skipName("required")
        let saved = soft
        soft = false
        defer { soft = saved }
        let body = try parseBody(["endblock"], dropNeedle: true)
        _ = skipName(name)
        return JStmt(kind: .scoped(body, newScope: true), offset: start)
    }

    // MARK: assignment targets

    private mutating func parseAssignTarget(extraEnd: [String] = [], withNamespace: Bool = false) throws -> JTarget {
        var items: [JTarget] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnd) { break }
            items.append(try parseTargetPrimary(withNamespace: withNamespace))
            if current.isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            guard let t = items.first else { throw fail("expected an assignment target, got \(current.describe)") }
            return t
        }
        return .tuple(items)
    }

    private mutating func parseTargetPrimary(withNamespace: Bool) throws -> JTarget {
        let tok = current
        if tok.kind == .name {
            if ["true", "false", "True", "False", "none", "None"].contains(tok.text) {
                throw fail("can't assign to constant '\(tok.text)'")
            }
            advance()
            if withNamespace && current.isOp(".") {
                advance()
                let attr = try expectName()
                return .namespaceAttr(tok.text, attr.text)
            }
            return .name(tok.text)
        }
        if tok.isOp("(") {
            advance()
            var items: [JTarget] = []
            while !current.isOp(")") {
                if !items.isEmpty { try expectOp(",") }
                if current.isOp(")") { break }
                items.append(try parseTargetPrimary(withNamespace: false))
            }
            try expectOp(")")
            return items.count == 1 ? items[0] : .tuple(items)
        }
        throw fail("can't assign to \(tok.describe)")
    }

    private func isTupleEnd(_ extra: [String]) -> Bool {
        switch current.kind {
        case .variableEnd, .blockEnd: return true
        case .op: return current.text == ")"
        case .name: return extra.contains(current.text)
        default: return false
        }
    }

    // MARK: expressions

    mutating func parseTuple(withCondexpr: Bool = true, extraEnd: [String] = [], explicitParentheses: Bool = false) throws -> JExpr {
        let start = current.offset
        var items: [JExpr] = []
        var isTuple = false
        while true {
            if !items.isEmpty { try expectOp(",") }
            if isTupleEnd(extraEnd) { break }
            items.append(withCondexpr ? try parseExpression() : try parseOr())
            if current.isOp(",") { isTuple = true } else { break }
        }
        if !isTuple {
            if let e = items.first { return e }
            if !explicitParentheses { throw fail("expected an expression, got \(current.describe)") }
        }
        return nodes.make(kind: .tuple(items), offset: start)
    }

    mutating func parseExpression() throws -> JExpr {
        try enter()
        defer { depth -= 1 }
        let e = try parseCondexpr()
        try checkExpressionDepth()
        return e
    }

    private mutating func parseCondexpr() throws -> JExpr {
        let start = current.offset
        var expr = try parseOr()
        while skipName("if") {
            let saved = soft
            soft = true
            defer { soft = saved }
            let test = try parseOr()
            var otherwise: JExpr?
            if skipName("else") { otherwise = try parseCondexpr() }
            expr = nodes.make(kind: .condexpr(test: test, then: expr, otherwise: otherwise), offset: start)
        }
        return expr
    }

    private mutating func parseOr() throws -> JExpr {
        var left = try parseAnd()
        while current.isName("or") {
            let off = advance().offset
            left = nodes.make(kind: .or(left, try parseAnd()), offset: off)
        }
        return left
    }

    private mutating func parseAnd() throws -> JExpr {
        var left = try parseNot()
        while current.isName("and") {
            let off = advance().offset
            left = nodes.make(kind: .and(left, try parseNot()), offset: off)
        }
        return left
    }

    private mutating func parseNot() throws -> JExpr {
        if current.isName("not") {
            let off = advance().offset
            try enter()
            defer { depth -= 1 }
            return nodes.make(kind: .not(try parseNot()), offset: off)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> JExpr {
        let start = current.offset
        let expr = try parseMath1()
        var ops: [(String, JExpr)] = []
        while true {
            if current.kind == .op, ["==", "!=", "<", "<=", ">", ">="].contains(current.text) {
                let op = advance().text
                ops.append((op, try parseMath1()))
            } else if skipName("in") {
                ops.append(("in", try parseMath1()))
            } else if current.isName("not") && peek.isName("in") {
                advance(); advance()
                ops.append(("notin", try parseMath1()))
            } else {
                break
            }
        }
        return ops.isEmpty ? expr : nodes.make(kind: .compare(expr, ops), offset: start)
    }

    private mutating func parseMath1() throws -> JExpr {
        var left = try parseConcat()
        while current.isOp("+") || current.isOp("-") {
            let t = advance()
            left = nodes.make(kind: .binary(t.text, left, try parseConcat()), offset: t.offset)
        }
        return left
    }

    private mutating func parseConcat() throws -> JExpr {
        let start = current.offset
        var args = [try parseMath2()]
        while skipOp("~") { args.append(try parseMath2()) }
        return args.count == 1 ? args[0] : nodes.make(kind: .concat(args), offset: start)
    }

    private mutating func parseMath2() throws -> JExpr {
        var left = try parsePow()
        while current.kind == .op, ["*", "/", "//", "%"].contains(current.text) {
            let t = advance()
            left = nodes.make(kind: .binary(t.text, left, try parsePow()), offset: t.offset)
        }
        return left
    }

    private mutating func parsePow() throws -> JExpr {
        var left = try parseUnary()
        while current.isOp("**") {
            let t = advance()
            left = nodes.make(kind: .binary("**", left, try parseUnary()), offset: t.offset)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool = true) throws -> JExpr {
        try enter()
        defer { depth -= 1 }
        var node: JExpr
        if current.isOp("-") {
            let off = advance().offset
            node = nodes.make(kind: .neg(try parseUnary(withFilter: false)), offset: off)
        } else if current.isOp("+") {
            let off = advance().offset
            node = nodes.make(kind: .pos(try parseUnary(withFilter: false)), offset: off)
        } else {
            node = try parsePrimary()
        }
        node = try parsePostfix(node)
        if withFilter { node = try parseFilterExpr(node) }
        return node
    }

    private mutating func parsePrimary() throws -> JExpr {
        let tok = current
        switch tok.kind {
        case .name:
            advance()
            switch tok.text {
            case "true", "True": return nodes.make(kind: .literal(.bool(true)), offset: tok.offset)
            case "false", "False": return nodes.make(kind: .literal(.bool(false)), offset: tok.offset)
            case "none", "None": return nodes.make(kind: .literal(.none), offset: tok.offset)
            default: return nodes.make(kind: .name(tok.text), offset: tok.offset)
            }
        case .string:
            advance()
            var s = tok.text
            while current.kind == .string { s += advance().text }
            return nodes.make(kind: .literal(.str(s)), offset: tok.offset)
        case .integer:
            advance()
            return nodes.make(kind: .literal(.int(tok.int)), offset: tok.offset)
        case .float:
            advance()
            return nodes.make(kind: .literal(.double(tok.double)), offset: tok.offset)
        case .op where tok.text == "(":
            advance()
            let e = try parseTuple(explicitParentheses: true)
            try expectOp(")")
            return e
        case .op where tok.text == "[":
            advance()
            var items: [JExpr] = []
            while !current.isOp("]") {
                if !items.isEmpty { try expectOp(",") }
                if current.isOp("]") { break }
                items.append(try parseExpression())
            }
            try expectOp("]")
            return nodes.make(kind: .list(items), offset: tok.offset)
        case .op where tok.text == "{":
            advance()
            var pairs: [(JExpr, JExpr)] = []
            while !current.isOp("}") {
                if !pairs.isEmpty { try expectOp(",") }
                if current.isOp("}") { break }
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
            }
            try expectOp("}")
            return nodes.make(kind: .dict(pairs), offset: tok.offset)
        default:
            throw fail("unexpected \(tok.describe)")
        }
    }

    private mutating func parsePostfix(_ start: JExpr) throws -> JExpr {
        var node = start
        while true {
            if current.isOp(".") || current.isOp("[") {
                node = try parseSubscript(node)
            } else if current.isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }

    private mutating func parseFilterExpr(_ start: JExpr) throws -> JExpr {
        var node = start
        while true {
            if current.isOp("|") {
                advance()
                let (name, args, off) = try parseOneFilter()
                node = nodes.make(kind: .filter(node, name, args), offset: off)
            } else if current.isName("is") {
                node = try parseTest(node)
            } else if current.isOp("(") {
                node = try parseCall(node)
            } else {
                return node
            }
        }
    }

    private mutating func parseSubscript(_ node: JExpr) throws -> JExpr {
        let tok = advance()
        if tok.isOp(".") {
            let attr = advance()
            if attr.kind == .name { return nodes.make(kind: .getattr(node, attr.text), offset: tok.offset) }
            if attr.kind == .integer {
                return nodes.make(kind: .getitem(node, nodes.make(kind: .literal(.int(attr.int)), offset: attr.offset)), offset: tok.offset)
            }
            throw fail("expected a name or number after '.', got \(attr.describe)", at: attr.offset)
        }
        var args: [JExpr] = []
        while !current.isOp("]") {
            if !args.isEmpty { try expectOp(",") }
            args.append(try parseSubscribed())
        }
        try expectOp("]")
        let index = args.count == 1 ? args[0] : nodes.make(kind: .tuple(args), offset: tok.offset)
        return nodes.make(kind: .getitem(node, index), offset: tok.offset)
    }

    private mutating func parseSubscribed() throws -> JExpr {
        let start = current.offset
        var parts: [JExpr?] = []
        if current.isOp(":") {
            advance()
            parts = [nil]
        } else {
            let e = try parseExpression()
            if !current.isOp(":") { return e }
            advance()
            parts = [e]
        }
        if current.isOp(":") {
            parts.append(nil)
        } else if !current.isOp("]") && !current.isOp(",") {
            parts.append(try parseExpression())
        } else {
            parts.append(nil)
        }
        if current.isOp(":") {
            advance()
            if !current.isOp("]") && !current.isOp(",") { parts.append(try parseExpression()) } else { parts.append(nil) }
        } else {
            parts.append(nil)
        }
        return nodes.make(kind: .slice(parts[0], parts[1], parts[2]), offset: start)
    }

    private mutating func parseCallArgs() throws -> JArguments {
        let open = current.offset
        try expectOp("(")
        var args = JArguments()
        var requireComma = false
        while !current.isOp(")") {
            if requireComma {
                try expectOp(",")
                if current.isOp(")") { break }
            }
            if current.isOp("*") {
                guard args.star == nil, args.starStar == nil else { throw fail("invalid syntax for function call", at: open) }
                advance()
                args.star = try parseExpression()
            } else if current.isOp("**") {
                guard args.starStar == nil else { throw fail("invalid syntax for function call", at: open) }
                advance()
                args.starStar = try parseExpression()
            } else if current.kind == .name && peek.isOp("=") {
                guard args.starStar == nil else { throw fail("invalid syntax for function call", at: open) }
                let key = advance().text
                advance()
                args.keywords.append((key, try parseExpression()))
            } else {
                guard args.star == nil, args.starStar == nil, args.keywords.isEmpty else {
                    throw fail("positional argument follows keyword argument", at: current.offset)
                }
                args.positional.append(try parseExpression())
            }
            requireComma = true
        }
        try expectOp(")")
        return args
    }

    private mutating func parseCall(_ node: JExpr) throws -> JExpr {
        let args = try parseCallArgs()
        return nodes.make(kind: .call(node, args), offset: node.offset)
    }

    private mutating func parseOneFilter() throws -> (String, JArguments, Int) {
        let tok = try expectName()
        var name = tok.text
        while current.isOp(".") { advance(); name += "." + (try expectName().text) }
        if !soft && !JinjaBuiltins.filterNames.contains(name) {
            throw fail("no filter named '\(name)'", at: tok.offset)
        }
        let args = current.isOp("(") ? try parseCallArgs() : JArguments()
        return (name, args, tok.offset)
    }

    private mutating func parseFilterChain(startInline: Bool) throws -> [(String, JArguments, Int)] {
        var chain: [(String, JArguments, Int)] = []
        var inline = startInline
        while current.isOp("|") || inline {
            if !inline { advance() }
            chain.append(try parseOneFilter())
            inline = false
        }
        return chain
    }

    private mutating func parseTest(_ node: JExpr) throws -> JExpr {
        let isTok = advance()
        let negated = skipName("not")
        let tok = try expectName()
        var name = tok.text
        while current.isOp(".") { advance(); name += "." + (try expectName().text) }
        if !soft && !JinjaBuiltins.testNames.contains(name) {
            throw fail("no test named '\(name)'", at: tok.offset)
        }
        var args = JArguments()
        if current.isOp("(") {
            args = try parseCallArgs()
        } else if [.name, .string, .integer, .float].contains(current.kind) || current.isOp("[") || current.isOp("{"),
                  !current.isName("else"), !current.isName("or"), !current.isName("and") {
            if current.isName("is") { throw fail("you cannot chain multiple tests with 'is'") }
            let arg = try parsePostfix(try parsePrimary())
            args.positional = [arg]
        }
        let test = nodes.make(kind: .test(node, name, args), offset: isTok.offset)
        return negated ? nodes.make(kind: .not(test), offset: isTok.offset) : test
    }

    // MARK: name collection (which of varargs / kwargs / caller a macro body uses)

    private func collectNames(_ stmts: [JStmt], into names: inout Set<String>) {
        for s in stmts {
            switch s.kind {
            case .text, .breakLoop, .continueLoop: break
            case .print(let es): es.forEach { collectNames($0, into: &names) }
            case .ifChain(let branches, let otherwise):
                for (t, b) in branches { collectNames(t, into: &names); collectNames(b, into: &names) }
                collectNames(otherwise, into: &names)
            case .forLoop(let f):
                collectNames(f.iterable, into: &names)
                if let c = f.condition { collectNames(c, into: &names) }
                collectNames(f.body, into: &names)
                collectNames(f.otherwise, into: &names)
            case .set(_, let e): collectNames(e, into: &names)
            case .setBlock(_, let filters, let body):
                filters.forEach { collectNames($0.1, into: &names) }
                collectNames(body, into: &names)
            case .macro(let m): collectNames(m.body, into: &names)
            case .callBlock(let caller, let call):
                collectNames(call, into: &names)
                collectNames(caller.body, into: &names)
            case .filterBlock(let filters, let body):
                filters.forEach { collectNames($0.1, into: &names) }
                collectNames(body, into: &names)
            case .with(let pairs, let body):
                pairs.forEach { collectNames($0.1, into: &names) }
                collectNames(body, into: &names)
            case .scoped(let body, _): collectNames(body, into: &names)
            }
        }
    }

    private func collectNames(_ a: JArguments, into names: inout Set<String>) {
        a.positional.forEach { collectNames($0, into: &names) }
        a.keywords.forEach { collectNames($0.1, into: &names) }
        if let s = a.star { collectNames(s, into: &names) }
        if let s = a.starStar { collectNames(s, into: &names) }
    }

    private func collectNames(_ e: JExpr, into names: inout Set<String>) {
        switch e.kind {
        case .literal: break
        case .name(let n): names.insert(n)
        case .list(let xs), .tuple(let xs), .concat(let xs): xs.forEach { collectNames($0, into: &names) }
        case .dict(let pairs): pairs.forEach { collectNames($0.0, into: &names); collectNames($0.1, into: &names) }
        case .getattr(let x, _), .not(let x), .neg(let x), .pos(let x): collectNames(x, into: &names)
        case .getitem(let a, let b), .binary(_, let a, let b), .and(let a, let b), .or(let a, let b):
            collectNames(a, into: &names); collectNames(b, into: &names)
        case .slice(let a, let b, let c): [a, b, c].compactMap { $0 }.forEach { collectNames($0, into: &names) }
        case .call(let f, let args), .filter(let f, _, let args), .test(let f, _, let args):
            collectNames(f, into: &names); collectNames(args, into: &names)
        case .compare(let x, let ops): collectNames(x, into: &names); ops.forEach { collectNames($0.1, into: &names) }
        case .condexpr(let t, let a, let b):
            collectNames(t, into: &names); collectNames(a, into: &names)
            if let b { collectNames(b, into: &names) }
        }
    }
}

/// Makes syntax nodes for the parser. A node that would nest deeper than
/// `JinjaParser.maxExpressionDepth` is recorded (`tooDeepAt`, reported when the expression
/// ends) and replaced by a leaf, so a 200k-term expression never builds a 200k-deep tree.
final class NodeBuilder {
    private(set) var tooDeepAt: Int?

    func make(kind: JExpr.Kind, offset: Int) -> JExpr {
        let e = JExpr(kind: kind, offset: offset)
        guard e.depth > JinjaParser.maxExpressionDepth else { return e }
        if tooDeepAt == nil { tooDeepAt = offset }
        return JExpr(kind: .literal(.none), offset: offset)
    }
}
