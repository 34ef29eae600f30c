/// A fuzz target for the protocol message decoder (`MessageDecoder.decode` and `JSONScanner`); see
/// ``DecoderOracle`` for what it checks and Docs/security.md ("Fuzzing") for how to run it.
///
/// With libFuzzer (coverage-guided; libFuzzer provides `main`):
///
///     swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -DLIBFUZZER \
///         --product decoder-fuzz --scratch-path .build/fuzz
///     .build/fuzz/release/decoder-fuzz -runs=1000000 -max_len=70000 .build/fuzz-corpus
///
/// Without it (a plain `swift build` builds this too): a seeded mutational/generational loop,
///
///     .build/debug/decoder-fuzz --runs 1000000 --seed 1
import NIOCore

@_cdecl("LLVMFuzzerTestOneInput")
public func decoderFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    DecoderOracle.check(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if !LIBFUZZER
    @main
    struct DecoderFuzz {
        static func main() {
            var runs = 100_000
            var seed: UInt64 = 1
            var arguments = CommandLine.arguments.dropFirst().makeIterator()
            while let argument = arguments.next() {
                switch argument {
                case "--runs": runs = arguments.next().flatMap { Int($0) } ?? runs
                case "--seed": seed = arguments.next().flatMap { UInt64($0) } ?? seed
                default:
                    print("usage: decoder-fuzz [--runs N] [--seed S]   (a libFuzzer build takes libFuzzer's flags)")
                    return
                }
            }
            var mutator = Mutator(seed: seed)
            let started = ContinuousClock.now
            var bytes = 0
            var outcomes: [String: Int] = [:]
            for run in 1...max(1, runs) {
                let input = mutator.input()
                bytes += input.count
                outcomes[input.withUnsafeBytes { DecoderOracle.check($0) }, default: 0] += 1
                if run % 100_000 == 0 {
                    print("decoder-fuzz: \(run) inputs (\(bytes) bytes), \(ContinuousClock.now - started)")
                }
            }
            print(
                "decoder-fuzz: \(runs) inputs from seed \(seed) in \(ContinuousClock.now - started), no invariant broken"
            )
            print(
                "outcomes: "
                    + outcomes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            )
        }
    }
#endif
