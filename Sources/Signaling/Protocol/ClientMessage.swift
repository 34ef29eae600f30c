import NIOCore

/// The addressed signal types of protocol v1.
public enum SignalType: String, Sendable, CaseIterable {
    case offer, answer, candidate, bye, message
}

/// A request that broke the protocol: answered with `{"type":"error",…}`, the connection stays open.
public struct ProtocolError: Error, Sendable, Equatable {
    public var code: ErrorCode
    public var message: String
    /// The request's `id`, when it could be read.
    public var requestID: String?

    public init(_ code: ErrorCode, _ message: String, requestID: String? = nil) {
        self.code = code
        self.message = message
        self.requestID = requestID
    }
}

/// A signal ready to relay: the client's own bytes minus the server-owned fields.
public struct SignalEnvelope: Sendable {
    public var type: SignalType
    /// Recipient peer id (absent for a room broadcast `message`).
    public var to: String?
    /// Room scope (required for a broadcast `message`, optional otherwise).
    public var room: String?
    /// `"volatile":true` (**extension**): delivered only to recipients connected now, never sequenced,
    /// buffered for resume or queued for an away session (typing indicators, cursors).
    public var volatile: Bool = false
    /// `{` followed by every member of the original message except `from` and `seq`, separated by commas
    /// (no comma after the last). When the client wrote its members separated by bare commas and sent no
    /// `from` or `seq`, this is a slice of the received message (its bytes up to the end of the last
    /// member), so nothing is copied until the relayed message is built.
    public var members: ByteBuffer

    /// ``members`` followed by a comma: appending `"from":"…","seq":N}` yields the message a recipient
    /// gets, with no re-encoding.
    public var relayPrefix: ByteBuffer {
        var prefix = ByteBufferAllocator().buffer(capacity: members.readableBytes + 1)
        prefix.writeImmutableBuffer(members)
        prefix.writeInteger(UInt8(ascii: ","))
        return prefix
    }
}

/// What a client asked for.
public enum ClientRequest: Sendable {
    case join(room: String, meta: ByteBuffer?)
    /// `{"type":"update","room":…,"meta":{…}}` (**extension**): the peer's new `meta` in a room it is in;
    /// the other members get `peer-updated`.
    case update(room: String, meta: ByteBuffer)
    case leave(room: String)
    case signal(SignalEnvelope)
    case ping
    case received(seq: UInt64)
    /// `{"type":"auth","token":…}`: a fresh token for the session, sent before the current one expires.
    /// Handled by the connection's auth layer (``AuthenticatedSession``), which hands the backend a
    /// ``grant(_:)`` once the token is verified.
    case auth(token: String)
    /// Never decoded from the wire: the session now holds a token granting these rooms (a token refreshed
    /// in band, or the token a resume presented), so rooms it no longer grants are left, with `peer-left`
    /// to their other members. Queued in order with the connection's requests.
    case grant(RoomGrant)
}

/// A decoded, validated client message.
public struct ClientMessage: Sendable {
    public var id: String?
    public var request: ClientRequest
}

/// Decodes and validates client messages against the v1 schemas (see `Docs/protocol.md`).
public struct MessageDecoder: Sendable {
    /// Deepest nesting accepted anywhere in a message. 32 levels is far beyond any SDP or candidate
    /// object and keeps scanning cost linear and stack use small.
    public var maxDepth: Int
    /// Largest accepted `meta` object on `join` and `update`, in bytes (the contract's 1 KiB).
    public var maxMetaBytes: Int

    /// Longest token accepted in an `auth` message (the same bound as the upgrade's token).
    public static let maxTokenBytes = 8192

    public init(maxDepth: Int = 32, maxMetaBytes: Int = 1024) {
        self.maxDepth = maxDepth
        self.maxMetaBytes = maxMetaBytes
    }

    /// Decodes one text message.
    public func decode(_ buffer: ByteBuffer) -> Result<ClientMessage, ProtocolError> {
        buffer.withUnsafeReadableBytes { bytes in
            self.decode(bytes: bytes, buffer: buffer)
        }
    }

    private func decode(bytes: UnsafeRawBufferPointer, buffer: ByteBuffer) -> Result<ClientMessage, ProtocolError> {
        let fields: [JSONField]
        do {
            fields = try JSONScanner.objectFields(in: bytes, maxDepth: self.maxDepth)
        } catch {
            return .failure(ProtocolError(.badMessage, "invalid JSON: \(error.reason) at byte \(error.offset)"))
        }
        let reader = FieldReader(bytes: bytes, fields: fields)

        var id: String? = nil
        if let idField = reader.field("id") {
            guard idField.kind == .string else {
                return .failure(ProtocolError(.badMessage, "'id' must be a string"))
            }
            let value = reader.string(idField)
            guard value.utf8.count <= 64 else {
                return .failure(ProtocolError(.badMessage, "'id' is longer than 64 bytes"))
            }
            id = value
        }
        func fail(_ code: ErrorCode, _ message: String) -> Result<ClientMessage, ProtocolError> {
            .failure(ProtocolError(code, message, requestID: id))
        }
        guard let typeField = reader.field("type") else { return fail(.badMessage, "missing 'type'") }
        guard typeField.kind == .string else { return fail(.badMessage, "'type' must be a string") }
        let type = reader.string(typeField)

        switch type {
        case "ping":
            return .success(ClientMessage(id: id, request: .ping))
        case "received":
            guard let seqField = reader.field("seq") else { return fail(.badMessage, "missing 'seq'") }
            guard seqField.kind == .number, let seq = reader.unsignedInteger(seqField) else {
                return fail(.badMessage, "'seq' must be a non-negative integer")
            }
            return .success(ClientMessage(id: id, request: .received(seq: seq)))
        case "join", "update":
            let room: String
            switch reader.identifier("room") {
            case .success(let value): room = value
            case .failure(let error): return fail(.badMessage, error.message)
            }
            var meta: ByteBuffer? = nil
            if let metaField = reader.field("meta"), metaField.kind != .null {
                guard metaField.kind == .object else { return fail(.badMessage, "'meta' must be an object") }
                let length = metaField.valueEnd - metaField.valueStart
                guard length <= self.maxMetaBytes else {
                    return fail(.tooLarge, "'meta' is \(length) bytes; the limit is \(self.maxMetaBytes)")
                }
                meta = buffer.getSlice(at: buffer.readerIndex + metaField.valueStart, length: length)
            }
            guard type == "update" else {
                return .success(ClientMessage(id: id, request: .join(room: room, meta: meta)))
            }
            guard let meta else { return fail(.badMessage, "'update' needs a 'meta' object") }
            return .success(ClientMessage(id: id, request: .update(room: room, meta: meta)))
        case "auth":
            guard let tokenField = reader.field("token") else { return fail(.badMessage, "missing 'token'") }
            guard tokenField.kind == .string else { return fail(.badMessage, "'token' must be a string") }
            let token = reader.string(tokenField)
            guard !token.isEmpty, token.utf8.count <= Self.maxTokenBytes else {
                return fail(.badMessage, "'token' must be 1-\(Self.maxTokenBytes) bytes")
            }
            return .success(ClientMessage(id: id, request: .auth(token: token)))
        case "leave":
            switch reader.identifier("room") {
            case .success(let room): return .success(ClientMessage(id: id, request: .leave(room: room)))
            case .failure(let error): return fail(.badMessage, error.message)
            }
        default:
            break
        }

        guard let signalType = SignalType(rawValue: type) else {
            return fail(.unknownType, "unknown message type \"\(type.prefix(64))\"")
        }
        var to: String? = nil
        if reader.field("to") != nil || signalType != .message {
            switch reader.identifier("to") {
            case .success(let value): to = value
            case .failure(let error): return fail(.badMessage, error.message)
            }
        }
        var room: String? = nil
        if reader.field("room") != nil {
            switch reader.identifier("room") {
            case .success(let value): room = value
            case .failure(let error): return fail(.badMessage, error.message)
            }
        }
        switch signalType {
        case .offer, .answer:
            guard let sdp = reader.field("sdp") else { return fail(.badMessage, "missing 'sdp'") }
            guard sdp.kind == .string else { return fail(.badMessage, "'sdp' must be a string") }
        case .candidate:
            guard let candidate = reader.field("candidate") else {
                return fail(.badMessage, "missing 'candidate' (use null for end-of-candidates)")
            }
            switch candidate.kind {
            case .null: break
            case .object:
                if let problem = reader.candidateProblem(candidate) { return fail(.badMessage, problem) }
            default:
                return fail(.badMessage, "'candidate' must be an object or null")
            }
        case .bye:
            break
        case .message:
            guard reader.field("data") != nil else { return fail(.badMessage, "missing 'data'") }
            guard to != nil || room != nil else { return fail(.badMessage, "'message' needs 'to' or 'room'") }
        }

        // The members to relay: the original bytes, without the server-owned members. The same pass finds
        // `volatile`, so a signal without it costs one key comparison per member more, nothing else.
        let (compact, volatileField) = Self.scanSignal(fields, in: bytes)
        var volatile = false
        if let volatileField {
            guard volatileField.kind == .bool else { return fail(.badMessage, "'volatile' must be true or false") }
            volatile = bytes[volatileField.valueStart] == UInt8(ascii: "t")
        }
        let members: ByteBuffer
        if compact {
            members = buffer.getSlice(at: buffer.readerIndex, length: fields[fields.count - 1].valueEnd)!
        } else {
            var rebuilt = ByteBufferAllocator().buffer(capacity: bytes.count)
            rebuilt.writeInteger(UInt8(ascii: "{"))
            for field in fields where field.key != "from" && field.key != "seq" {
                if rebuilt.readableBytes > 1 { rebuilt.writeInteger(UInt8(ascii: ",")) }
                rebuilt.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[field.keyStart..<field.valueEnd]))
            }
            members = rebuilt
        }
        let envelope = SignalEnvelope(type: signalType, to: to, room: room, volatile: volatile, members: members)
        return .success(ClientMessage(id: id, request: .signal(envelope)))
    }
}

extension MessageDecoder {
    /// One pass over a signal's members: whether they are *compact* — the message starts with `{` directly
    /// followed by its first member, its members are separated by bare commas, and none is `from` or
    /// `seq`, so its bytes up to the end of the last member are exactly the members to relay — and its
    /// `volatile` member, if any.
    fileprivate static func scanSignal(_ fields: [JSONField], in bytes: UnsafeRawBufferPointer) -> (
        compact: Bool, volatile: JSONField?
    ) {
        guard let first = fields.first else { return (false, nil) }
        var compact = first.keyStart == 1 && bytes[0] == UInt8(ascii: "{")
        var volatile: JSONField? = nil
        var previousEnd = -1
        for field in fields {
            if field.key == "from" || field.key == "seq" {
                compact = false
            } else if field.key == "volatile" {
                volatile = field
            }
            if compact && previousEnd >= 0
                && (field.keyStart != previousEnd + 1 || bytes[previousEnd] != UInt8(ascii: ","))
            {
                compact = false
            }
            previousEnd = field.valueEnd
        }
        return (compact, volatile)
    }
}

/// Typed access to the members of one scanned object.
private struct FieldReader {
    let bytes: UnsafeRawBufferPointer
    let fields: [JSONField]

    func field(_ name: String) -> JSONField? {
        for field in fields where field.key == name { return field }
        return nil
    }

    func string(_ field: JSONField) -> String {
        JSONScanner.decodeString(bytes, start: field.valueStart, end: field.valueEnd, hasEscapes: field.hasEscapes)
    }

    func unsignedInteger(_ field: JSONField) -> UInt64? {
        let raw = String(
            decoding: UnsafeRawBufferPointer(rebasing: bytes[field.valueStart..<field.valueEnd]),
            as: UTF8.self
        )
        return UInt64(raw)
    }

    /// A required peer id or room name.
    func identifier(_ name: String) -> Result<String, ProtocolError> {
        guard let field = self.field(name) else { return .failure(ProtocolError(.badMessage, "missing '\(name)'")) }
        guard field.kind == .string else { return .failure(ProtocolError(.badMessage, "'\(name)' must be a string")) }
        let value = self.string(field)
        guard Identifier.isValid(value) else {
            return .failure(ProtocolError(.badMessage, "'\(name)' must be 1-64 characters of [A-Za-z0-9._~-]"))
        }
        return .success(value)
    }

    /// Checks an ICE candidate object: `candidate` string, `sdpMid` string/null, `sdpMLineIndex`
    /// non-negative integer/null, `usernameFragment` string/null. Returns a problem, or nil.
    func candidateProblem(_ field: JSONField) -> String? {
        let slice = UnsafeRawBufferPointer(rebasing: bytes[field.valueStart..<field.valueEnd])
        guard let inner = try? JSONScanner.objectFields(in: slice) else { return "'candidate' is not a valid object" }
        let reader = FieldReader(bytes: slice, fields: inner)
        guard let candidate = reader.field("candidate"), candidate.kind == .string else {
            return "'candidate.candidate' must be a string"
        }
        if let mid = reader.field("sdpMid"), mid.kind != .string, mid.kind != .null {
            return "'candidate.sdpMid' must be a string or null"
        }
        if let index = reader.field("sdpMLineIndex"), index.kind != .null {
            guard index.kind == .number, let value = reader.unsignedInteger(index), value <= 65535 else {
                return "'candidate.sdpMLineIndex' must be a non-negative integer or null"
            }
        }
        if let ufrag = reader.field("usernameFragment"), ufrag.kind != .string, ufrag.kind != .null {
            return "'candidate.usernameFragment' must be a string or null"
        }
        return nil
    }
}
