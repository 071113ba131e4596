// sftctl: the command-line front of sft. Parses arguments, calls SFTCore, prints; no logic of
// its own. One file per command; each registers itself in `commands` below.
import Foundation
import SFTCore
import SFTKernels

/// A subcommand: `sftctl NAME ...`.
struct Command: Sendable {
    let name: String
    let summary: String
    /// Full help text, printed for `--help`.
    let help: String
    /// Flags that take no value (everything else takes one).
    let booleanFlags: Set<String>
    let run: @Sendable (Arguments) throws -> Void
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
/// Ends the process, or, in a data-parallel job (mpirun/srun), every rank of it: the other
/// ranks would otherwise wait for this one until their collective timeout.
func fail(_ message: String, code: Int32) -> Never {
    if let group = existingWorldCollective, group.size > 1 {
        writeStderr("sftctl \(name) (rank \(group.rank) of \(group.size)): " + message)
        group.abort(code: code)
    }
    writeStderr("sftctl \(name): " + message)
    exit(code)
}
do {
    let args = try Arguments(rest, booleanFlags: command.booleanFlags.union(["json"]))
    try command.run(args)
    try existingWorldCollective?.finish()
} catch let e as UsageError {
    fail("\(e.description)\n(see sftctl \(name) --help)", code: 2)
} catch {
    fail("error: \(error)", code: 1)
}
