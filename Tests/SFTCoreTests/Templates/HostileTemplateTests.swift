// Malformed and hostile templates end with a clear SFTError.template, never a crash or a hang:
// unclosed blocks, unknown filters and tags, endless recursion, huge loops, output and memory
// bombs, deep nesting, and sandbox escapes through Python attributes.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class HostileTemplateTests: XCTestCase {
    /// Asserts that parsing or rendering fails with a template error whose message contains `fragment`.
    func assertFails(_ src: String, _ fragment: String, limits: TemplateLimits = TemplateLimits(),
                     file: StaticString = #filePath, line: UInt = #line) {
        assertFails(src, [fragment], limits: limits, file: file, line: line)
    }

    func assertFails(_ src: String, _ fragments: [String], limits: TemplateLimits = TemplateLimits(),
                     file: StaticString = #filePath, line: UInt = #line) {
        let start = Date()
        do {
            let t = try ChatTemplate(source: src, limits: limits)
            _ = try t.render(messages: [ChatMessage(role: "user", content: "hi")], addGenerationPrompt: false)
            XCTFail("\(src.debugDescription) rendered without error", file: file, line: line)
        } catch SFTError.template(let l, let c, let message) {
            XCTAssert(fragments.contains { message.contains($0) }, "\(src.debugDescription): message '\(message)' lacks '\(fragments)'", file: file, line: line)
            XCTAssert(l >= 1 && c >= 1, file: file, line: line)
        } catch {
            XCTFail("\(src.debugDescription): unexpected error \(error)", file: file, line: line)
        }
        XCTAssertLessThan(Date().timeIntervalSince(start), 30, "\(src.debugDescription) took too long", file: file, line: line)
    }

    func testUnclosedBlocksAndTags() {
        assertFails("{% if true %}x", "never closed")
        assertFails("{% for m in messages %}{% if m %}x{% endfor %}", "unexpected tag 'endfor'")
        assertFails("{% macro m() %}x", "never closed")
        assertFails("{{ messages", "unclosed tag")
        assertFails("{# comment", "comment")
        assertFails("{% raw %}x", "raw")
        assertFails("{% endif %}", "unknown tag 'endif'")
        assertFails("{{ (1, 2 }}", "unexpected '}'")
        assertFails("{{ 'unterminated }}", "unterminated string")
    }

    func testUnknownFiltersTestsAndTags() {
        assertFails("{{ messages | shout }}", "no filter named 'shout'")
        assertFails("{{ messages is shouting }}", "no test named 'shouting'")
        assertFails("{% if true %}{{ 1 | shout }}{% endif %}", "no filter named 'shout'")
        assertFails("{% include 'other.jinja' %}", "cannot load other templates")
        assertFails("{% extends 'base' %}", "cannot load other templates")
        assertFails("{% frobnicate %}", "unknown tag 'frobnicate'")
        assertFails("{{ 1 | random }}", "not supported")
    }

    func testEndlessRecursionIsCut() {
        // Cut by the call-depth limit, or (in debug builds, whose frames are larger) by the
        // stack budget first.
        assertFails("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", ["recursion deeper than", "nested too deeply"])
        assertFails("{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n + 1) }}{% endmacro %}{{ a(0) }}", ["recursion deeper than", "nested too deeply"])
        assertFails("{% for x in [[1]] recursive %}{{ loop(x) }}{% endfor %}", "iterable")
        assertFails("{% for x in [[[1]]] recursive %}{{ loop([x]) }}{% endfor %}", ["recursion deeper than", "nested too deeply"])
    }

    func testHugeLoopsHitTheStepLimit() {
        assertFails("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "step limit")
        assertFails("{% for i in range(1000000) %}{% endfor %}", "Range too big")
        assertFails("{% set ns = namespace(n=0) %}{% for i in range(100000) %}{% for j in range(100000) %}{% set ns.n = ns.n + 1 %}{% endfor %}{% endfor %}",
                    "step limit", limits: TemplateLimits(maxSteps: 100_000))
    }

    func testOutputAndMemoryBombsAreRefused() {
        assertFails("{{ 'x' * 1000000000000 }}", "too long")
        assertFails("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "too long")
        assertFails("{% for i in range(100000) %}{{ 'y' * 100000 }}{% endfor %}", "output larger than")
        assertFails("{{ [0] * 100000000 }}", "too long")
        assertFails("{{ 'a' | center(2000000000) }}", "too large")
        assertFails("{% set ns = namespace(a=[]) %}{% for i in range(100000) %}{% set ns.a = [ns.a] %}{% endfor %}", "nested")
        assertFails("{{ ('ab' * 5000000) | replace('a', 'aaaaaaaaaaaaaaaaaaaaaaaa') }}", "too long")
    }

    func testDeepSyntaxNestingIsRefusedWithoutCrashing() {
        assertFails("{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}", "nested too deeply")
        assertFails("{{ " + String(repeating: "not ", count: 5000) + "x }}", "nested too deeply")
        assertFails("{{ " + String(repeating: "[", count: 5000) + String(repeating: "]", count: 5000) + " }}", "nested too deeply")
        assertFails(String(repeating: "{% if true %}", count: 1000) + String(repeating: "{% endif %}", count: 1000), "nested too deeply")
    }

    func testSandboxRefusesMutationAndPrivateAttributes() {
        assertFails("{{ messages.append(1) }}", "unsafe")
        assertFails("{{ messages[0].update({'role': 'x'}) }}", "unsafe")
        assertFails("{% set ns = namespace() %}{% set ns._secret = 1 %}", "underscore")
        assertFails("{{ messages.__class__.__mro__() }}", "has no attribute")
        assertFails("{{ raise_exception('template says no') }}", "template says no")
    }

    func testInvalidUTF8AndControlBytesDoNotCrash() throws {
        let weird = String(decoding: [0x7B, 0x7B, 0x20, 0x27, 0xFF, 0xFE, 0x27, 0x20, 0x7D, 0x7D, 0x00, 0x01], as: UTF8.self)
        let r = try ChatTemplate(source: weird).render(messages: [], addGenerationPrompt: false)
        XCTAssertEqual(r.text, "\u{FFFD}\u{FFFD}\u{0}\u{1}")
    }
}

extension HostileTemplateTests {
    func testQuadraticTrapsStayFast() {
        // Worst-case substring searches and list growth: must finish in well under the limit.
        let src = """
        {%- set hay = 'a' * 2000000 -%}{%- set needle = 'a' * 100000 ~ 'b' -%}
        {{- needle in hay }}{{ hay.find(needle) }}{{ hay.rsplit(needle) | length }}{{ hay.count('aab') }}
        {%- set ns = namespace(l=[1]) %}{% for i in range(40) %}{% set ns.l = ns.l + ns.l %}{% endfor %}
        """
        assertFails(src, "list too long")
    }
}

extension HostileTemplateTests {
    /// With the stack budget lowered, deep templates on a thread with a 512 KiB stack end with
    /// an error instead of overflowing it (whether they fit depends on the build's frame sizes).
    func testSmallThreadStacksGetErrorsNotCrashes() {
        let sources = [
            "{% macro m(n) %}{% if n > 0 %}[{{ m(n - 1) | trim }}]{% endif %}{% endmacro %}{{ m(1000) }}",
            "{{ " + String(repeating: "(", count: 90) + "1" + String(repeating: ")", count: 90) + " }}",
            String(repeating: "{% if true %}", count: 95) + "x" + String(repeating: "{% endif %}", count: 95),
            "{% for x in [[[[[[1]]]]]] recursive %}{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}{% endif %}{% endfor %}",
        ]
        final class Box: @unchecked Sendable { var outcomes: [String] = [] }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var limits = TemplateLimits()
            limits.maxStackBytes = 256 << 10
            for src in sources {
                do {
                    let r = try ChatTemplate(source: src, limits: limits).render(messages: [], addGenerationPrompt: false)
                    box.outcomes.append("ok \(r.text)")
                } catch SFTError.template(_, _, let message) {
                    box.outcomes.append(message)
                } catch {
                    box.outcomes.append("unexpected \(error)")
                }
            }
            done.signal()
        }
        thread.stackSize = 512 << 10
        thread.start()
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success)
        let outcomes = box.outcomes
        XCTAssertEqual(outcomes.count, sources.count)
        XCTAssert(outcomes[0].contains("recursion deeper than") || outcomes[0].contains("nested too deeply"), outcomes[0])
        for o in outcomes[1...2] { XCTAssert(o == "ok 1" || o == "ok x" || o.contains("nested too deeply"), o) }
        XCTAssertEqual(outcomes[3], "ok 1")
    }
}
