// Shared helpers for the chat-template tests: fixture loading (made by
// tools/make_template_fixtures.py) and the location of ../shared/chat-templates.
import Foundation
import SFTCore
import SFTKernels
import XCTest

enum TemplateFixtures {
    static var folder: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("templates")
    }

    static func json(_ name: String) throws -> JSONValue {
        let url = folder.appendingPathComponent(name)
        return try JSONValue(parsing: Data(contentsOf: url), path: url.path)
    }

    /// The real templates of ../shared/chat-templates (relative to the package root, or
    /// $SFT_CHAT_TEMPLATES); nil when absent.
    static var sharedTemplates: URL? {
        if let env = ProcessInfo.processInfo.environment["SFT_CHAT_TEMPLATES"], !env.isEmpty {
            return URL(fileURLWithPath: env)
        }
        // Tests/SFTCoreTests/Templates/TemplateFixtures.swift -> package root
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent()
        for rel in ["../shared/chat-templates", "../../shared/chat-templates"] {
            let u = root.appendingPathComponent(rel).standardizedFileURL
            if FileManager.default.fileExists(atPath: u.path) { return u }
        }
        return nil
    }

    /// The source of a template named in expected.json.
    static func source(_ name: String) -> String? {
        if name == "smollm2.jinja" {
            return try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)
        }
        guard let dir = sharedTemplates else { return nil }
        return try? String(contentsOf: dir.appendingPathComponent(name), encoding: .utf8)
    }

    /// 2024-07-26 14:05:09 local time, the instant the fixtures' strftime_now renders.
    static var fixedNow: Date {
        var t = tm()
        t.tm_year = 2024 - 1900
        t.tm_mon = 6
        t.tm_mday = 26
        t.tm_hour = 14
        t.tm_min = 5
        t.tm_sec = 9
        t.tm_isdst = -1
        return Date(timeIntervalSince1970: TimeInterval(mktime(&t)))
    }
}

extension String {
    /// The UTF-8 bytes in `r` as a string.
    func utf8Slice(_ r: Range<Int>) -> String {
        String(decoding: Array(utf8)[r], as: UTF8.self)
    }

    private static let pythonSpace: Set<Character> = [" ", "\n", "\t", "\r", "\r\n"]

    /// Python's str.strip() for the whitespace these tests use.
    var pythonStripped: String {
        var s = Substring(self)
        while let f = s.first, Self.pythonSpace.contains(f) { s.removeFirst() }
        while let l = s.last, Self.pythonSpace.contains(l) { s.removeLast() }
        return String(s)
    }

    /// Python's str.rstrip().
    var pythonRStripped: String {
        var s = Substring(self)
        while let l = s.last, Self.pythonSpace.contains(l) { s.removeLast() }
        return String(s)
    }
}
