/// Deterministic inputs for running the RESP target without libFuzzer: well-formed replies of every
/// RESP2/RESP3 type (nested, pipelined), and mutations of them (bit flips, tokens such as huge or
/// negative lengths, bare CRs, cut-offs, duplicated ranges). The same seed gives the same inputs.
struct RESPInputs {
    private var state: UInt64

    init(seed: UInt64) {
        state = seed &+ 0x9E37_79B9_7F4A_7C15
    }

    /// SplitMix64.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int { Int(next() % UInt64(max(1, n))) }

    mutating func pick<T>(_ items: [T]) -> T { items[below(items.count)] }

    static let tokens = [
        "\r\n", "\r", "\n", "-1", "-2", "0", "9223372036854775807", "9223372036854775808",
        "-9223372036854775808", "99999999999999999999999", "4097", "65537", "*", "$", "%", "~", ">", "|",
        "!", "=", "(", "#", "_", ",", ":", "+", "-", "nan", "inf", "-inf", "1e308", "txt:", "*1\r\n",
        "*-1\r\n", "$-1\r\n", "%1\r\n", "|1\r\n", "*64\r\n", "$65536\r\n",
    ]

    mutating func input() -> [UInt8] {
        var bytes: [UInt8] = []
        for _ in 0..<(1 + below(3)) { bytes += Array(value(depth: 0).utf8) }
        switch below(4) {
        case 0: return bytes
        default: return mutate(bytes, rounds: 1 + below(4))
        }
    }

    mutating func value(depth: Int) -> String {
        let scalar = depth > 6 || below(3) > 0
        if scalar {
            switch below(11) {
            case 0: return "+" + text() + "\r\n"
            case 1: return "-ERR " + text() + "\r\n"
            case 2: return ":" + pick(["0", "-1", "42", "9223372036854775807", "-9223372036854775808"]) + "\r\n"
            case 3:
                let body = text()
                return "$\(body.utf8.count)\r\n\(body)\r\n"
            case 4: return pick(["$-1\r\n", "*-1\r\n", "_\r\n"])
            case 5: return pick(["#t\r\n", "#f\r\n"])
            case 6: return "," + pick(["3.14", "-0", "inf", "-inf", "nan", "1e-300", "10"]) + "\r\n"
            case 7: return "(" + pick(["3492890328409238509324850943850943825024385", "-1", "0"]) + "\r\n"
            case 8:
                let body = "txt:" + text()
                return "=\(body.utf8.count)\r\n\(body)\r\n"
            case 9:
                let body = "ERR " + text()
                return "!\(body.utf8.count)\r\n\(body)\r\n"
            default: return "$0\r\n\r\n"
            }
        }
        let count = below(5)
        let kind = pick(["*", "~", ">", "%", "|"])
        var out = "\(kind)\(count)\r\n"
        let elements = kind == "%" || kind == "|" ? count * 2 : count
        for _ in 0..<elements { out += value(depth: depth + 1) }
        // An attribute annotates the value after it.
        if kind == "|" { out += value(depth: depth + 1) }
        return out
    }

    mutating func text() -> String {
        String((0..<below(12)).map { _ in pick(Array("abcxyz OK:0123\u{e9}")) })
    }

    mutating func mutate(_ input: [UInt8], rounds: Int) -> [UInt8] {
        var bytes = input
        for _ in 0..<rounds {
            let at = below(bytes.count + 1)
            switch below(7) {
            case 0:
                if !bytes.isEmpty { bytes[below(bytes.count)] ^= UInt8(1) << UInt8(below(8)) }
            case 1:
                bytes.insert(contentsOf: Array(pick(Self.tokens).utf8), at: at)
            case 2:
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    bytes.removeSubrange(start..<min(bytes.count, start + 1 + below(8)))
                }
            case 3:
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    let range = start..<min(bytes.count, start + 1 + below(32))
                    bytes.insert(contentsOf: Array(bytes[range]), at: at)
                }
            case 4:
                bytes = Array(bytes.prefix(below(bytes.count + 1)))
            case 5:
                if !bytes.isEmpty { bytes[below(bytes.count)] = pick([0x0D, 0x0A, 0x00, 0xFF, 0x2D, 0x30, 0x39]) }
            default:
                bytes += Array(value(depth: 0).utf8)
            }
        }
        return bytes
    }
}
