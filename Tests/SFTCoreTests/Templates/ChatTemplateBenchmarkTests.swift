// Rendering time grows linearly with conversation length: 10, 100, 1000, 4000 turns (a turn is
// a user and an assistant message) through SmolLM2's template, the built-in chatml, and
// Qwen2.5's tool template when ../shared/chat-templates is present. Numbers go to
// BENCHMARKS.md ("Chat templates"); run with -c release.
import Foundation
import SFTCore
import SFTKernels
import XCTest

final class ChatTemplateBenchmarkTests: XCTestCase {
    func conversation(turns: Int) -> [ChatMessage] {
        var m = [ChatMessage(role: "system", content: "You are a helpful assistant.")]
        for i in 0..<turns {
            m.append(ChatMessage(role: "user", content: "Question \(i): what is \(i) squared, and why does it matter? Explain briefly."))
            m.append(ChatMessage(role: "assistant", content: "\(i) squared is \(i * i). It matters because squares grow quickly; see the table.\n- a\n- b"))
        }
        return m
    }

    func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    func seconds(_ t: ChatTemplate, _ messages: [ChatMessage]) throws -> Double {
        var best = Double.infinity
        for _ in 0..<5 {
            // CPU time of this thread: the machine is shared, wall time would measure the neighbours.
            let start = cpuSeconds()
            let r = try t.render(messages: messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
            best = min(best, cpuSeconds() - start)
            XCTAssertEqual(r.messageSpans.count, messages.count)
        }
        return best
    }

    func testRenderingTimeIsLinearInConversationLength() throws {
        var templates: [(String, ChatTemplate)] = [("chatml (built-in)", try ChatTemplate.named("chatml"))]
        if let smol = TemplateFixtures.source("smollm2.jinja") { templates.append(("SmolLM2", try ChatTemplate(source: smol))) }
        if let qwen = TemplateFixtures.source("qwen2.5-instruct.jinja") { templates.append(("Qwen2.5", try ChatTemplate(source: qwen))) }
        for (name, t) in templates {
            var times: [Int: Double] = [:]
            for turns in [10, 100, 1000, 4000] { times[turns] = try seconds(t, conversation(turns: turns)) }
            let line = [10, 100, 1000, 4000].map { "\($0) turns \(String(format: "%.2f", times[$0]! * 1000)) ms" }.joined(separator: ", ")
            print("chat template \(name): \(line); per turn at 1000: \(String(format: "%.1f", times[1000]! / 1000 * 1e6)) µs")
            // Linear: n times the turns, at most about twice n times the CPU time.
            XCTAssertLessThan(times[4000]!, 8 * times[1000]!, name)
            XCTAssertLessThan(times[1000]!, 25 * times[100]!, name)
        }
    }
}
