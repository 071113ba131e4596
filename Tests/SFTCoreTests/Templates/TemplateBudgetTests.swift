// The template sandbox budgets all work (issue #18 item 2): builtins validate numeric arguments,
// values have a size cap counted with sharing, printing / comparing / sorting / encoding a value
// is charged to the step limit, and expression trees and namespace chains stay shallow enough
// to evaluate and free without deep recursion. Each case ends fast with a positioned error.
import Foundation
import SFTCore
import XCTest

extension HostileTemplateTests {
    /// Renders `src` and returns the text, failing the test on an error or when it is slow.
    func renders(_ src: String, limits: TemplateLimits = TemplateLimits(), file: StaticString = #filePath, line: UInt = #line) -> String? {
        let start = Date()
        defer { XCTAssertLessThan(Date().timeIntervalSince(start), 10, "\(src.prefix(80)) took too long", file: file, line: line) }
        do {
            return try ChatTemplate(source: src, limits: limits).render(messages: [], addGenerationPrompt: false).text
        } catch {
            XCTFail("\(src.prefix(80)): \(error)", file: file, line: line)
            return nil
        }
    }

    func testNumericBuiltinsValidateTheirArguments() {
        assertFails("{{ '12' | int(base=99) }}", "base must be >= 2 and <= 36")
        assertFails("{{ '12' | int(base=1) }}", "base must be")
        assertFails("{{ '12' | int(base=-7) }}", "base must be")
        XCTAssertEqual(renders("{{ '0x1f' | int(base=0) }} {{ 'z' | int(base=36) }} {{ '11' | int(base=2) }}"), "31 35 3")
        assertFails("{{ [1, 2, 3] | slice(10**12) | list }}", "too many")
        assertFails("{{ [1, 2, 3] | batch(10**12, 0) | list }}", "too large")
        XCTAssertEqual(renders("{{ [1, 2, 3] | slice(5) | list }}"), "[[1], [2], [3], [], []]")
        assertFails("{{ '%*d' % (10**12, 1) }}", "width too big")
        assertFails("{{ '%.*s' % (-10**12, 'abc') }}", "width too big")
        // Int.min and Int.max arguments end in values or errors, never a trap.
        XCTAssertEqual(renders("{{ 'abc' | truncate(9223372036854775807) }}"), "abc")
        XCTAssertEqual(renders("{{ 5 | round(-400) }} {{ 1.5 | round(-400) }} {{ 15 | round(-1) }} {{ 5 | round(-9223372036854775807 - 1) }}"), "0 0.0 20 0")
        assertFails("{{ 9223372036854775807 | round(-1) }}", "integer overflow")
        assertFails("{{ '{:.99999999999999999999f}'.format(1.0) }}", "precision too large")
        XCTAssertEqual(renders("{{ [1, 2, 3][1::9223372036854775807] }} {{ 'abc'[::-9223372036854775807] }}"), "[2] c")
        assertFails("{{ range(-9223372036854775807 - 1, 9223372036854775807) | length }}", "Range too big")
        XCTAssertEqual(renders("{{ range(-9223372036854775807 - 1, -9223372036854775807 + 2) | list }}"),
                       "[-9223372036854775808, -9223372036854775807, -9223372036854775806]")
    }

    func testAValueDoubled60TimesIsRefusedEarly() {
        assertFails("{% set ns = namespace(v=[1]) %}{% for i in range(60) %}{% set ns.v = [ns.v, ns.v] %}{% endfor %}", "value too large")
        assertFails("{% set ns = namespace(v='x') %}{% for i in range(60) %}{% set ns.v = {'a': ns.v, 'b': ns.v} %}{% endfor %}", "value too large")
        assertFails("{% set ns = namespace(v='abcd') %}{% for i in range(60) %}{% set ns.v = (ns.v, ns.v) %}{% endfor %}{{ ns.v }}", "value too large")
        // Namespaces count what they hold, too.
        assertFails("{% set ns = namespace(v=namespace(x=1)) %}{% for i in range(60) %}{% set ns.v = namespace(a=ns.v, b=ns.v) %}{% endfor %}",
                    ["value too large", "nested more than", "step limit"])
    }

    func testPrintingComparingSortingAndEncodingAreCharged() {
        // Each value holds 3M elements (15 × 100k ints and their entries: inside the size cap,
        // cheap in memory through sharing); reading one is 3M steps of work.
        let big = "{% set big = [range(100000) | list] * 15 %}{% set other = [range(100000) | list] * 15 %}"
        let limits = TemplateLimits(maxSteps: 1_000_000)
        assertFails(big + "{{ big }}", "step limit", limits: limits)
        assertFails(big + "{{ big == other }}", "step limit", limits: limits)
        assertFails(big + "{{ big in [other] }}", "step limit", limits: limits)
        assertFails(big + "{{ big | sort | length }}", "step limit", limits: limits)
        assertFails(big + "{{ (big + other) | length }}", "value too large", limits: limits)
        assertFails(big + "{{ big | tojson | length }}", "step limit", limits: limits)
        assertFails(big + "{{ big | unique | list | length }}", "step limit", limits: limits)
        assertFails(big + "{{ 'x' ~ big }}", "step limit", limits: limits)
        assertFails(big + "{{ big is eq(other) }}", "step limit", limits: limits)
        // Reading only the top level stays cheap.
        XCTAssertEqual(renders(big + "{{ big | length }} {{ big | first | length }}", limits: limits), "15 100000")
    }

    func testASelfContainingNamespacePrintsWithoutRecursingForever() {
        let once = renders("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}")
        XCTAssertTrue(once?.hasPrefix("<Namespace {'me': <Namespace {'me': ") ?? false, once ?? "")
        XCTAssertTrue(once?.contains("...") ?? false)
        // Two self references: printing would be exponential without the depth cut.
        XCTAssertNotNil(renders("{% set ns = namespace() %}{% set ns.a = ns %}{% set ns.b = ns %}{{ ns }}{{ ns == ns }}"))
        assertFails("{% set ns = namespace() %}{% for i in range(1000) %}{% set ns.me = ns %}{% endfor %}", ["nested more than", "value too large"])
        assertFails("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns | tojson }}", "not JSON serializable")
    }

    func testLongNamespaceChainsAreRefusedBeforeTheyGetDeep() {
        // 100k nested namespaces would overflow the stack when freed.
        assertFails("{% set ns = namespace(p=none) %}{% for i in range(100000) %}{% set ns.p = namespace(p=ns.p) %}{% endfor %}", "nested more than")
        assertFails("{% set ns = namespace(p=none) %}{% for i in range(100000) %}{% set ns.p = [ns.p] %}{% endfor %}", "nested more than")
    }

    func testA200kTermExpressionIsAParseErrorNotAStackOverflow() {
        let terms = 200_000
        assertFails("{{ 1" + String(repeating: " + 1", count: terms) + " }}", "expression nested too deeply")
        assertFails("{{ x" + String(repeating: " | first", count: terms) + " }}", "expression nested too deeply")
        assertFails("{{ x" + String(repeating: ".a", count: terms) + " }}", "expression nested too deeply")
        assertFails("{{ x" + String(repeating: "[0]", count: terms) + " }}", "expression nested too deeply")
        assertFails("{{ 1" + String(repeating: " and 1", count: terms) + " }}", "expression nested too deeply")
        assertFails("{% if 1" + String(repeating: " * 1", count: terms) + " %}{% endif %}", "expression nested too deeply")
        // Flat forms stay fine: `~` chains and comparisons are one node.
        XCTAssertEqual(renders("{{ 'a'" + String(repeating: " ~ 'a'", count: 999) + " }}")?.count, 1000)
        XCTAssertEqual(renders("{{ 1" + String(repeating: " + 1", count: 400) + " }}"), "401")
    }
}
