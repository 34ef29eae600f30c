import Foundation
import NIOConcurrencyHelpers
import UnixSignals

/// SIGINT and SIGTERM as a request to stop holding, for `signal bench connect --hold-until-signal`:
/// the first one sets `requested` (the run then ends its hold and reports as usual); a second one
/// exits at once.
final class StopSignal: Sendable {
    private let flag: NIOLockedValueBox<Bool>
    private let listener: Task<Void, Never>

    init() {
        let flag = NIOLockedValueBox(false)
        self.flag = flag
        self.listener = Task {
            for await _ in await UnixSignalsSequence(trapping: .sigint, .sigterm) {
                let again = flag.withLockedValue { requested in
                    defer { requested = true }
                    return requested
                }
                if again { exit(1) }
            }
        }
    }

    deinit { listener.cancel() }

    /// Whether a stop was asked for.
    var requested: Bool { flag.withLockedValue { $0 } }
}
