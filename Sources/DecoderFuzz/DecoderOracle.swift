import NIOCore
import Signaling

/// What must hold for every input to the protocol message decoder, whatever the bytes.
///
/// Beyond "never crashes" (which libFuzzer and the bounds checks of a debug build watch):
/// - `MessageDecoder.decode` accepts only what `JSONScanner` accepts as one JSON object;
/// - a decoded signal relays as one valid JSON object whose `from` and `seq` are the server's, once
///   each, whatever `from`/`seq` members, escapes or duplicates the client sent (no smuggled `from`);
/// - every error reply is a valid JSON object with the decoder's error code and `id`;
/// - a `join`'s or `update`'s `meta` is a JSON object within the size limit.
enum DecoderOracle {
    static let decoder = MessageDecoder()
    static let server = "p-fuzz\"\\"

    /// Checks one input; traps (so libFuzzer records the input) when an invariant breaks. Returns what
    /// the decoder made of it (e.g. `offer`, `join`, `error:bad-message`), for statistics.
    @discardableResult
    static func check(_ bytes: UnsafeRawBufferPointer) -> String {
        let scanned = try? JSONScanner.objectFields(in: bytes, maxDepth: decoder.maxDepth)
        _ = try? JSONScanner.validate(bytes, maxDepth: decoder.maxDepth)
        let buffer = ByteBuffer(bytes: bytes)
        switch decoder.decode(buffer) {
        case .success(let message):
            require(scanned != nil, "decoded a message the scanner rejects")
            if let id = message.id { require(id.utf8.count <= 64, "id longer than 64 bytes") }
            switch message.request {
            case .signal(let envelope):
                checkRelay(envelope)
                return envelope.type.rawValue
            case .join(let room, let meta):
                require(Identifier.isValid(room), "invalid room accepted")
                if let meta {
                    require(meta.readableBytes <= decoder.maxMetaBytes, "meta over the limit")
                    let kind = meta.withUnsafeReadableBytes { try? JSONScanner.validate($0, maxDepth: 64) }
                    require(kind == .object, "meta is not a JSON object")
                }
                return "join"
            case .update(let room, let meta):
                require(Identifier.isValid(room), "invalid room accepted")
                require(meta.readableBytes <= decoder.maxMetaBytes, "meta over the limit")
                let kind = meta.withUnsafeReadableBytes { try? JSONScanner.validate($0, maxDepth: 64) }
                require(kind == .object, "meta is not a JSON object")
                return "update"
            case .leave(let room):
                require(Identifier.isValid(room), "invalid room accepted")
                return "leave"
            case .ping:
                return "ping"
            case .received:
                return "received"
            case .auth(let token):
                require(!token.isEmpty && token.utf8.count <= MessageDecoder.maxTokenBytes, "token over the limit")
                return "auth"
            case .grant:
                fail("a grant decoded from the wire")
            }
        case .failure(let error):
            let reply = ServerMessage.error(error)
            let fields = reply.withUnsafeReadableBytes { try? JSONScanner.objectFields(in: $0) }
            require(fields != nil, "error reply is not a valid JSON object")
            let byKey = Dictionary(fields!.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
            require(string(byKey["code"], in: reply) == error.code.rawValue, "error reply has the wrong code")
            require(string(byKey["id"], in: reply) == error.requestID, "error reply has the wrong id")
            return "error:" + error.code.rawValue
        }
    }

    private static func checkRelay(_ envelope: SignalEnvelope) {
        if let to = envelope.to { require(Identifier.isValid(to), "invalid 'to' accepted") }
        if let room = envelope.room { require(Identifier.isValid(room), "invalid 'room' accepted") }
        require(envelope.to != nil || envelope.room != nil, "signal with neither 'to' nor 'room'")
        let relayed = ServerMessage.sequenced(ServerMessage.signalPrefix(envelope, from: server), seq: 42)
        let fields = relayed.withUnsafeReadableBytes {
            try? JSONScanner.objectFields(in: $0, maxDepth: decoder.maxDepth)
        }
        guard let fields else {
            fail("relayed signal is not one valid JSON object: \(String(buffer: relayed).prefix(200))")
        }
        require(fields.filter { $0.key == "from" }.count == 1, "relayed signal has more or less than one 'from'")
        require(fields.filter { $0.key == "seq" }.count == 1, "relayed signal has more or less than one 'seq'")
        let byKey = Dictionary(fields.map { ($0.key, $0) }, uniquingKeysWith: { a, _ in a })
        require(string(byKey["from"], in: relayed) == server, "relayed 'from' is not the server's")
        require(
            byKey["seq"].map {
                String(buffer: relayed.getSlice(at: $0.valueStart, length: $0.valueEnd - $0.valueStart)!)
            } == "42",
            "relayed 'seq' is not the server's"
        )
        require(string(byKey["type"], in: relayed) == envelope.type.rawValue, "relayed 'type' changed")
        // A volatile signal goes out without `seq`: still one object, with the server's `from` only.
        let volatile = ServerMessage.volatileRelayed(envelope.members, from: server)
        let volatileFields = volatile.withUnsafeReadableBytes {
            try? JSONScanner.objectFields(in: $0, maxDepth: decoder.maxDepth)
        }
        require(volatileFields != nil, "volatile relay is not one valid JSON object")
        require(
            volatileFields!.filter { $0.key == "from" }.count == 1,
            "volatile relay has more or less than one 'from'"
        )
        require(!volatileFields!.contains { $0.key == "seq" }, "volatile relay has a 'seq'")
    }

    private static func string(_ field: JSONField?, in buffer: ByteBuffer) -> String? {
        guard let field, field.kind == .string else { return nil }
        return buffer.withUnsafeReadableBytes {
            JSONScanner.decodeString($0, start: field.valueStart, end: field.valueEnd, hasEscapes: field.hasEscapes)
        }
    }

    private static func require(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fail(message()) }
    }

    private static func fail(_ message: String) -> Never {
        fatalError("decoder invariant broken: \(message)")
    }
}
