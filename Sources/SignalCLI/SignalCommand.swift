import ArgumentParser
import Logging

@main
struct SignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal",
        abstract: "A WebRTC signaling hub, its peers, load generator and mesh.",
        discussion: """
            Start a hub with `signal serve`, talk to it with `signal peer`, load it with `signal bench`.
            Every subcommand explains itself with --help.
            """,
        subcommands: [ServeCommand.self, PeerCommand.self, TokenCommand.self, BenchCommand.self, MeshCommand.self]
    )
}

/// `--log-level` shared by the subcommands.
struct LoggingOptions: ParsableArguments {
    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func bootstrap(label: String) -> Logger {
        let level = logLevel
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        return Logger(label: label)
    }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
