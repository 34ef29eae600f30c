import Foundation

/// A fuzz target for the Redis reply decoder (`RESPDecoder`, which `RESPFrameDecoder` runs in the
/// pipeline); see ``RESPOracle`` for what it checks and Docs/security.md ("Fuzzing") for how to run it.
///
/// With libFuzzer (coverage-guided; libFuzzer provides `main`):
///
///     swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -DLIBFUZZER \
///         --product resp-fuzz --scratch-path .build/fuzz
///     .build/fuzz/release/resp-fuzz -runs=1000000 -max_len=4096 .build/fuzz-corpus-resp
///
/// Without it (a plain `swift build` builds this too): a seeded mutational/generational loop,
///
///     .build/debug/resp-fuzz --runs 1000000 --seed 1
@_cdecl("LLVMFuzzerTestOneInput")
public func respFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    RESPOracle.check(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

#if !LIBFUZZER
    @main
    struct RESPFuzz {
        static func main() {
            var runs = 100_000
            var seed: UInt64 = 1
            var corpus: String?
            var arguments = CommandLine.arguments.dropFirst().makeIterator()
            while let argument = arguments.next() {
                switch argument {
                case "--runs": runs = arguments.next().flatMap { Int($0) } ?? runs
                case "--seed": seed = arguments.next().flatMap { UInt64($0) } ?? seed
                case "--corpus": corpus = arguments.next()
                default:
                    print(
                        "usage: resp-fuzz [--runs N] [--seed S] [--corpus DIR]   (a libFuzzer build takes libFuzzer's flags)"
                    )
                    print(
                        "  --corpus DIR writes the N generated inputs to DIR instead of checking them (a libFuzzer seed corpus)"
                    )
                    return
                }
            }
            var generator = RESPInputs(seed: seed)
            if let corpus {
                for run in 1...max(1, runs) {
                    let input = generator.input()
                    _ = FileManager.default.createFile(atPath: "\(corpus)/seed-\(seed)-\(run)", contents: Data(input))
                }
                print("\(runs) inputs written to \(corpus)")
                return
            }
            let started = ContinuousClock.now
            var bytes = 0
            var outcomes: [String: Int] = [:]
            for run in 1...max(1, runs) {
                let input = generator.input()
                bytes += input.count
                let outcome = input.withUnsafeBytes { RESPOracle.check($0) }
                let parts = outcome.split(separator: ":")
                outcomes[String(parts[0]), default: 0] += 1
                outcomes["value:" + parts[1], default: 0] += 1
                if run % 100_000 == 0 {
                    print("resp-fuzz: \(run) inputs (\(bytes) bytes), \(ContinuousClock.now - started)")
                }
            }
            print(
                "resp-fuzz: \(runs) inputs from seed \(seed) in \(ContinuousClock.now - started), no invariant broken"
            )
            print(
                "outcomes: "
                    + outcomes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            )
        }
    }
#endif
