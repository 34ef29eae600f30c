import ArgumentParser

/// `--duration`, `--warmup`, `--size` and `--inflight`, shared by the load modes.
struct LoadOptions: ParsableArguments {
    @Option(help: "Seconds to measure.") var duration = 10.0
    @Option(help: "Seconds of load before measuring (not counted).") var warmup = 1.0
    @Option(help: "Bytes per message (the JSON text; small sizes are rounded up to the message's fixed part).")
    var size = 256
    @Option(help: "Exchanges each pair, room or connection keeps under way with --rate max.")
    var inflight = 1

    func validateLoad() throws {
        guard duration > 0 else { throw ValidationError("--duration must be positive") }
        guard warmup >= 0 else { throw ValidationError("--warmup must not be negative") }
        guard size >= 0, size <= 60 * 1024 else { throw ValidationError("--size must be 0-61440") }
        guard inflight >= 1 else { throw ValidationError("--inflight must be at least 1") }
    }
}
