import Foundation

/// A fuzz target for what a mesh node reads from other nodes: the link handshake (`LinkFrame`,
/// `LinkHandshake`) and the mesh wire decoder (`MeshWire.decode`), with every message that decodes fed
/// to a running `MeshNode`. See ``MeshWireOracle`` for what it checks and Docs/security.md ("Fuzzing")
/// for how to run it.
///
/// With libFuzzer (coverage-guided; libFuzzer provides `main`):
///
///     swift build -c release --sanitize=fuzzer --sanitize=address -Xswiftc -DLIBFUZZER \
///         --product mesh-wire-fuzz --scratch-path .build/fuzz
///     .build/fuzz/release/mesh-wire-fuzz -runs=1000000 -max_len=4096 .build/fuzz-corpus-mesh
///
/// Without it (a plain `swift build` builds this too): a seeded mutational/generational loop,
///
///     .build/debug/mesh-wire-fuzz --runs 1000000 --seed 1
@_cdecl("LLVMFuzzerTestOneInput")
public func meshWireFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    MeshWireOracle.shared.check(Array(UnsafeRawBufferPointer(start: data, count: size)))
    return 0
}

#if !LIBFUZZER
    @main
    struct MeshWireFuzz {
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
                        "usage: mesh-wire-fuzz [--runs N] [--seed S] [--corpus DIR]   (a libFuzzer build takes libFuzzer's flags)"
                    )
                    print(
                        "  --corpus DIR writes the N generated inputs to DIR instead of checking them (a libFuzzer seed corpus)"
                    )
                    return
                }
            }
            var generator = MeshInputs(seed: seed, oracle: MeshWireOracle.shared)
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
                outcomes[MeshWireOracle.shared.check(input), default: 0] += 1
                if run % 100_000 == 0 {
                    print("mesh-wire-fuzz: \(run) inputs (\(bytes) bytes), \(ContinuousClock.now - started)")
                }
            }
            print(
                "mesh-wire-fuzz: \(runs) inputs from seed \(seed) in \(ContinuousClock.now - started), no invariant broken"
            )
            print(
                "outcomes: "
                    + outcomes.sorted { $0.value > $1.value }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
            )
        }
    }
#endif
