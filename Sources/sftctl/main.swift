// sftctl: the command-line front of sft. Parses arguments, calls SFTCore, prints; no logic of
// its own. One file per command; each registers itself in `commands` below.
import Foundation
import SFTCore

/// A subcommand: `sftctl NAME ...`.
struct Command {
    let name: String
    let summary: String
    /// Full help text, printed for `--help`.
    let help: String
    /// Flags that take no value (everything else takes one).
    let booleanFlags: Set<String>
    let run: (Arguments) throws -> Void
}

let commands: [Command] = [
    // one line per command, sorted by name
    benchCommand,
    chatCommand,
    dataCommand,
    evalCommand,
    exportCommand,
    finetuneCommand,
    generateCommand,
    inspectCommand,
    mergeCommand,
    templateCommand,
    tokenizeCommand,
]

func usage() -> String {
    var s = "sftctl \(sftVersion) — supervised finetuning of LLMs\n\nusage: sftctl COMMAND [options]   (sftctl COMMAND --help)\n\ncommands:\n"
    for c in commands { s += "  \(c.name.padding(toLength: 12, withPad: " ", startingAt: 0)) \(c.summary)\n" }
    return s
}

let argv = Array(CommandLine.arguments.dropFirst())
guard let name = argv.first, name != "--help", name != "-h" else { print(usage(), terminator: ""); exit(0) }
if name == "--version" { print(sftVersion); exit(0) }
guard let command = commands.first(where: { $0.name == name }) else {
    writeStderr("sftctl: unknown command '\(name)'\n\n" + usage()); exit(2)
}
let rest = Array(argv.dropFirst())
if rest.contains("--help") || rest.contains("-h") { print(command.help); exit(0) }
do {
    let args = try Arguments(rest, booleanFlags: command.booleanFlags.union(["json"]))
    try command.run(args)
} catch let e as UsageError {
    writeStderr("sftctl \(name): \(e.description)\n(see sftctl \(name) --help)"); exit(2)
} catch {
    writeStderr("sftctl \(name): error: \(error)"); exit(1)
}
