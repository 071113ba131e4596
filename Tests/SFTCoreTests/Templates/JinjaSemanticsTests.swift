// Small templates that pin down jinja2 semantics one feature at a time (whitespace control,
// scoping, operators, filters, tests, methods, errors), against the outputs Python jinja2
// gave in transformers' environment (semantics.json, tools/make_template_fixtures.py).
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class JinjaSemanticsTests: XCTestCase {
    func testSmallTemplatesMatchJinja2() throws {
        let doc = try TemplateFixtures.json("semantics.json")
        let messages = try doc["messages"]!.arrayValue!.map { try ChatMessage(json: $0) }
        let bos = doc["bos_token"]!.stringValue!, eos = doc["eos_token"]!.stringValue!
        var count = 0
        for c in doc["cases"]!.arrayValue! {
            let source = c["template"]!.stringValue!
            let result = Result { () throws -> String in
                var t = try ChatTemplate(source: source)
                t.now = { TemplateFixtures.fixedNow }
                return try t.render(messages: messages, addGenerationPrompt: false, bosToken: bos, eosToken: eos).text
            }
            switch (result, c["text"]?.stringValue, c["error"]?.stringValue) {
            case (.success(let got), let want?, _):
                XCTAssertEqual(got, want, "template: \(source.debugDescription)")
            case (.failure(let e), _, _?):
                guard case SFTError.template = e else { XCTFail("\(source.debugDescription): wrong error type \(e)"); break }
            case (.success(let got), nil, let err?):
                XCTFail("\(source.debugDescription): jinja2 raised '\(err)', we rendered \(got.debugDescription)")
            case (.failure(let e), _?, _):
                XCTFail("\(source.debugDescription): unexpected error \(e)")
            default:
                XCTFail("malformed fixture")
            }
            count += 1
        }
        XCTAssertGreaterThan(count, 100)
    }

    func testErrorsNameTheTemplateLineAndColumn() {
        let cases: [(String, Int, Int)] = [
            ("line one\n{{ 5 // 0 }}", 2, 6),
            ("{% for x in xs %}\n  {{ x }}\n", 1, 4),           // unclosed for: points at the opening tag
            ("ok\n\n   {{ x | nosuchfilter }}", 3, 11),
            ("{{ 'é' }}{{ 1 + }}", 1, 17),
            ("a\n{% if true %}\n{{ raise_exception('stop here') }}\n{% endif %}", 3, 4),
        ]
        for (src, line, column) in cases {
            do {
                let t = try ChatTemplate(source: src)
                _ = try t.render(messages: [], addGenerationPrompt: false)
                XCTFail("\(src.debugDescription) should fail")
            } catch SFTError.template(let l, let c, let m) {
                XCTAssertEqual(l, line, "\(src.debugDescription): \(m)")
                XCTAssertEqual(c, column, "\(src.debugDescription): \(m)")
            } catch {
                XCTFail("\(src.debugDescription): wrong error \(error)")
            }
        }
    }
}
