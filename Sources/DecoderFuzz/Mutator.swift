/// A small deterministic mutational and generational input source for the decoder, for running
/// without libFuzzer (`decoder-fuzz --runs N --seed S`): the same seed gives the same inputs.
struct Mutator {
    private var state: UInt64

    init(seed: UInt64) {
        self.state = seed &+ 0x9E37_79B9_7F4A_7C15
    }

    /// SplitMix64.
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func below(_ n: Int) -> Int {
        Int(next() % UInt64(max(1, n)))
    }

    mutating func chance(_ percent: Int) -> Bool {
        below(100) < percent
    }

    mutating func pick<T>(_ items: [T]) -> T {
        items[below(items.count)]
    }

    /// One input: a mutated seed, a generated message (well-formed for its type or loosely shaped),
    /// or a mutated generated one.
    mutating func input() -> [UInt8] {
        switch below(5) {
        case 0: return mutate(Array(pick(Self.seeds).utf8), rounds: 1 + below(4))
        case 1: return Array(message().utf8)
        case 2, 3: return Array(wellFormed().utf8)
        default: return mutate(Array(wellFormed().utf8), rounds: 1 + below(3))
        }
    }

    // MARK: Mutation

    mutating func mutate(_ input: [UInt8], rounds: Int) -> [UInt8] {
        var bytes = input
        for _ in 0..<rounds {
            let at = below(bytes.count + 1)
            switch below(9) {
            case 0:  // flip a bit
                if !bytes.isEmpty { bytes[below(bytes.count)] ^= UInt8(1) << UInt8(below(8)) }
            case 1:  // an interesting byte
                if !bytes.isEmpty { bytes[below(bytes.count)] = pick(Self.interestingBytes) }
            case 2:  // insert a token
                bytes.insert(contentsOf: Array(pick(Self.tokens).utf8), at: at)
            case 3:  // delete a range
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    bytes.removeSubrange(start..<min(bytes.count, start + 1 + below(16)))
                }
            case 4:  // duplicate a range (duplicate members, repeated values)
                if !bytes.isEmpty {
                    let start = below(bytes.count)
                    let slice = bytes[start..<min(bytes.count, start + 1 + below(64))]
                    bytes.insert(contentsOf: slice, at: at)
                }
            case 5:  // splice with another seed
                let other = Array(pick(Self.seeds).utf8)
                let cut = below(other.count + 1)
                bytes = Array(bytes[..<min(at, bytes.count)]) + other[cut...]
            case 6:  // nest
                let depth = 1 + below(pick([3, 31, 33, 200]))
                bytes.insert(contentsOf: Array(repeating: UInt8(ascii: "["), count: depth), at: at)
                let end = at + depth + below(bytes.count - at - depth + 1)
                bytes.insert(contentsOf: Array(repeating: UInt8(ascii: "]"), count: depth), at: end)
            case 7:  // a long run
                bytes.insert(
                    contentsOf: Array(repeating: pick(Array("9a\\\"{[ ,".utf8)), count: 1 + below(300)),
                    at: at
                )
            default:  // truncate
                bytes.removeSubrange(min(at, bytes.count)...)
            }
        }
        return bytes
    }

    // MARK: Generation

    /// A message of a random type with random members, mostly of plausible shapes.
    mutating func message() -> String {
        var members: [String] = []
        if !chance(5) { members.append("\"type\":" + (chance(90) ? quoted(pick(Self.types)) : value(depth: 1))) }
        for _ in 0..<below(6) {
            let name = pick(Self.fields)
            members.append(quoted(name) + ":" + fieldValue(name))
        }
        if chance(10) { members.append("\"from\":" + value(depth: 1)) }
        if chance(10) { members.append("\"seq\":" + value(depth: 1)) }
        if chance(5), let first = members.first { members.append(first) }  // a duplicate
        if chance(20) { members.shuffle(using: &self) }
        return "{" + members.joined(separator: pick([",", ", ", " ,\n"])) + "}"
    }

    /// A message with the members its type requires (values mostly valid), plus optional extras.
    mutating func wellFormed() -> String {
        let type = pick([
            "offer", "answer", "candidate", "bye", "message", "join", "update", "leave", "ping", "received",
        ])
        var members = ["\"type\":\"\(type)\""]
        switch type {
        case "offer", "answer": members += ["\"to\":" + fieldValue("to"), "\"sdp\":" + fieldValue("sdp")]
        case "candidate": members += ["\"to\":" + fieldValue("to"), "\"candidate\":" + fieldValue("candidate")]
        case "bye": members += ["\"to\":" + fieldValue("to")]
        case "message":
            members.append(chance(50) ? "\"to\":" + fieldValue("to") : "\"room\":" + fieldValue("room"))
            members.append("\"data\":" + value(depth: 1))
        case "join":
            members.append("\"room\":" + fieldValue("room"))
            if chance(50) { members.append("\"meta\":" + fieldValue("meta")) }
        case "update":
            members += ["\"room\":" + fieldValue("room"), "\"meta\":" + fieldValue("meta")]
        case "leave": members.append("\"room\":" + fieldValue("room"))
        case "received": members.append("\"seq\":" + fieldValue("seq"))
        default: break
        }
        for name in ["id", "room", "from", "seq", "sid", "volatile"] where chance(25) {
            if !members.contains(where: { $0.hasPrefix("\"\(name)\":") }) {
                members.append(quoted(name) + ":" + fieldValue(name))
            }
        }
        if chance(10) { members.append("\"fr\\u006fm\":" + value(depth: 1)) }
        if chance(30) { members.shuffle(using: &self) }
        return "{" + members.joined(separator: ",") + "}"
    }

    mutating func fieldValue(_ name: String) -> String {
        guard chance(70) else { return value(depth: 1) }
        switch name {
        case "to", "room":
            return quoted(
                pick([
                    "bob", "r1", "a~b", "A.b_c-9", String(repeating: "x", count: 64), "",
                    String(repeating: "x", count: 65), "ü", "a b", "b\\u006fb",
                ])
            )
        case "id": return chance(80) ? quoted("req-\(below(100))") : value(depth: 1)
        case "sdp": return quoted("v=0\\r\\n" + String(repeating: "a", count: below(200)))
        case "volatile": return chance(70) ? pick(["true", "false"]) : value(depth: 1)
        case "seq": return pick(["0", "1", "18446744073709551615", "18446744073709551616", "-1", "1.5", "1e3"])
        case "candidate":
            return pick([
                "null", "{}",
                "{\"candidate\":\"candidate:1 1 udp 1 1.2.3.4 5 typ host\",\"sdpMid\":\"0\",\"sdpMLineIndex\":0}",
                "{\"candidate\":\"c\",\"sdpMLineIndex\":65536}", "{\"candidate\":\"c\",\"usernameFragment\":null}",
                "{\"candidate\":1}", "\"\"",
            ])
        case "meta":
            return chance(50) ? "{\"name\":\(quoted(String(repeating: "m", count: below(1100))))}" : value(depth: 1)
        default: return value(depth: 1)
        }
    }

    mutating func value(depth: Int) -> String {
        switch below(depth > 6 ? 6 : 8) {
        case 0: return "null"
        case 1: return pick(["true", "false"])
        case 2: return pick(["0", "-0", "1.5e-3", "123456789012345678901234567890", "1e999", "-1"])
        case 3:
            return quoted(
                pick(["", "x", "\\u0000", "\\ud800", "\\udc00\\ud800", "\\ud83d\\ude00", "\\\"", "é", "from"])
            )
        case 4: return quoted(String(repeating: "s", count: below(100)))
        case 5: return "\"\(pick(Self.types))\""
        case 6:
            let n = below(4)
            return "[" + (0..<n).map { _ in value(depth: depth + 1) }.joined(separator: ",") + "]"
        default:
            let n = below(4)
            return "{"
                + (0..<n).map { _ in quoted(pick(Self.fields)) + ":" + value(depth: depth + 1) }.joined(separator: ",")
                + "}"
        }
    }

    func quoted(_ text: String) -> String {
        "\"" + text + "\""
    }

    // MARK: Dictionaries

    static let types = [
        "offer", "answer", "candidate", "bye", "message", "join", "update", "leave", "ping", "received", "welcome",
        "Offer", "",
    ]
    static let fields = [
        "to", "room", "id", "sdp", "candidate", "data", "meta", "seq", "from", "type", "sid", "fr\\u006fm",
    ]
    static let tokens = [
        "\"from\":\"mallory\",", "\"seq\":1,", "\"type\":\"offer\",", "\"to\":\"bob\",", "\"room\":\"r\",", "\\u0000",
        "\\ud800",
        "1e999", "-0", "[", "]", "{", "}", "{\"a\":", "null", "true", ":", ",", "\"", "\\", " ", "\u{0}", "\u{7F}",
        "\"fr\\u006fm\":1,",
        "\"id\":\"x\",", "\"data\":[1,{\"k\":null}],", "\"candidate\":null,", "\"meta\":{},", "\"sdp\":\"v=0\",",
    ]
    static let interestingBytes: [UInt8] = [
        0x00, 0x09, 0x0A, 0x20, 0x22, 0x2C, 0x2D, 0x30, 0x3A, 0x5B, 0x5C, 0x5D, 0x65, 0x7B, 0x7D, 0x7F, 0x80, 0xBF,
        0xC0, 0xC3,
        0xED, 0xF4, 0xFF,
    ]
    static let seeds = [
        #"{"type":"join","room":"r1","meta":{"name":"Alice","tags":["a",1,null]},"id":"j1"}"#,
        #"{"type":"leave","room":"r1","id":"l1"}"#,
        #"{"type":"offer","to":"bob","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n","id":"o1","sid":"call-1"}"#,
        #"{"type":"answer","to":"alice","room":"r1","sdp":"v=0","from":"mallory","seq":99}"#,
        #"{"type":"candidate","to":"bob","candidate":{"candidate":"candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"abcd"}}"#,
        #"{"type":"candidate","to":"bob","candidate":null,"id":"eoc"}"#,
        #"{"type":"bye","to":"bob"}"#,
        #"{"type":"message","room":"r1","data":{"text":"hi \u00e9 \ud83d\ude00","n":-1.5e3,"ok":true}}"#,
        #"{"type":"message","to":"bob","data":[[[[]]]],"id":"m"}"#,
        #"{"type":"ping","id":"p"}"#,
        #"{"type":"received","seq":18446744073709551615}"#,
        #"{"type":"offer","to":"bob","sdp":"x","fr\u006fm":"mallory"}"#,
        #" { "type" : "bye" , "to" : "a.b_c~d-e" } "#,
    ]
}

extension Mutator: RandomNumberGenerator {}
