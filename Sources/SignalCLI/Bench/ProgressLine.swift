import Foundation
import NIOConcurrencyHelpers

/// The line `signal bench` keeps up to date on stderr while it runs: rewritten in place on a terminal,
/// one line per update otherwise (logs, CI), nothing with `--quiet`.
final class ProgressLine: Sendable {
    private let enabled: Bool
    private let terminal: Bool
    private let shown = NIOLockedValueBox(false)

    init(enabled: Bool) {
        self.enabled = enabled
        self.terminal = isatty(STDERR_FILENO) != 0
    }

    func update(_ text: String) {
        guard enabled else { return }
        if terminal {
            shown.withLockedValue { $0 = true }
            FileHandle.standardError.write(Data("\r\u{1B}[K\(text)".utf8))
        } else {
            FileHandle.standardError.write(Data("\(text)\n".utf8))
        }
    }

    /// Ends the in-place line so what follows starts on a fresh one.
    func finish() {
        guard enabled, terminal, shown.withLockedValue({ $0 }) else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }

    /// A note that is always shown (warnings), on its own line.
    func note(_ text: String) {
        if terminal && shown.withLockedValue({ $0 }) {
            FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        }
        FileHandle.standardError.write(Data("signal bench: \(text)\n".utf8))
    }
}
