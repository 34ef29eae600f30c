import NIOCore

/// One request to the server API, as the HTTP layer read it.
public struct APIRequest: Sendable {
    /// `GET`, `POST`, `DELETE`, …
    public var method: String
    /// The request target (`/v1/rooms/lobby`, a query string is ignored).
    public var uri: String
    /// The `Authorization` header, if any.
    public var authorization: String?
    /// The body (empty when there is none).
    public var body: ByteBuffer
    /// The body was longer than ``APIRouter/Configuration/maxBodyBytes`` (its bytes were not kept).
    public var bodyTooLarge: Bool

    public init(
        method: String,
        uri: String,
        authorization: String?,
        body: ByteBuffer = ByteBuffer(),
        bodyTooLarge: Bool = false
    ) {
        self.method = method
        self.uri = uri
        self.authorization = authorization
        self.body = body
        self.bodyTooLarge = bodyTooLarge
    }
}

/// What the API answers: a status, a JSON body, and extra headers (`Allow`, `Retry-After`,
/// `WWW-Authenticate`).
public struct APIResponse: Sendable, Equatable {
    public var status: Int
    public var body: ByteBuffer
    public var headers: [String: String]

    public init(status: Int, body: ByteBuffer, headers: [String: String] = [:]) {
        self.status = status
        self.body = body
        self.headers = headers
    }

    /// The body as a string (tests, logs).
    public var text: String { String(buffer: body) }
}

/// A call on the backend (``ServerAPIBackend``), with names already qualified by the key's tenant.
public enum APICall: Sendable, Equatable {
    case publishToPeer(String, prefix: ByteBuffer)
    case publishToRoom(String, prefix: ByteBuffer)
    case listRooms
    case room(String)
    case session(String)
    case kick(String)
}

/// What the backend answered to an ``APICall``.
public enum APIOutcome: Sendable, Equatable {
    case published(APIPublishCount?)
    case rooms([APIRoomSummary])
    case members([APIRoomMember]?)
    case session(APIPeerSession?)
    case kicked(Bool)
}

/// The server API's decisions, with no I/O: authentication (``APIKeys``), the per-key rate limit, the
/// routes, validation of names and bodies, and the JSON of every answer. The HTTP layer hands it a request
/// (``route(_:now:)``); it answers at once or names the backend call to make, and renders the call's
/// outcome (``render(_:tenant:outcome:)``). Docs/server-api.md and Docs/openapi.yaml describe the API.
public struct APIRouter: Sendable {
    /// The API's settings (`--api-key-file`, `--api-rate-burst`, `--api-rate-per-second`).
    public struct Configuration: Sendable {
        public var keys: APIKeys
        /// Largest request body accepted (413 above): 64 KiB, the size of a client's largest message.
        public var maxBodyBytes: Int = 64 * 1024
        /// Calls one key may make at once, and per second sustained (429 beyond).
        public var rateBurst: Int = 100
        public var ratePerSecond: Int = 50

        public init(keys: APIKeys) {
            self.keys = keys
        }
    }

    /// What to do with a request.
    public enum Decision: Sendable, Equatable {
        case respond(APIResponse)
        case call(APICall, tenant: Tenant)
    }

    public let configuration: Configuration
    private let ratePolicy: RateLimiter.Policy
    /// One bucket per key (by its line in the key file).
    private var buckets: [Int: RateLimiter] = [:]

    public init(configuration: Configuration) {
        self.configuration = configuration
        self.ratePolicy = RateLimiter.Policy(
            burst: max(1, configuration.rateBurst),
            ratePerSecond: max(1, configuration.ratePerSecond),
            maxStrikes: Int.max
        )
    }

    /// Decides a request: 413, 401, 429, 404, 405 and 400 at once, or the backend call to make.
    public mutating func route(_ request: APIRequest, now: UInt64) -> Decision {
        if request.bodyTooLarge {
            return .respond(
                Self.error(413, "payload_too_large", "the body is over \(configuration.maxBodyBytes) bytes")
            )
        }
        guard let key = configuration.keys.authorize(request.authorization) else {
            var response = Self.error(401, "unauthorized", "send a valid API key as Authorization: Bearer KEY")
            response.headers["WWW-Authenticate"] = "Bearer"
            return .respond(response)
        }
        var bucket = buckets[key.line] ?? RateLimiter(policy: ratePolicy, now: now)
        let decision = bucket.take(now: now, policy: ratePolicy)
        buckets[key.line] = bucket
        guard decision == .allow else {
            var response = Self.error(
                429,
                "rate_limited",
                "slow down: at most \(configuration.ratePerSecond) calls/s per key"
            )
            response.headers["Retry-After"] = "1"
            return .respond(response)
        }
        return Self.resolve(request, tenant: key.tenant)
    }

    /// The route of an authenticated request.
    static func resolve(_ request: APIRequest, tenant: Tenant) -> Decision {
        var path = Substring(request.uri)
        if let query = path.firstIndex(of: "?") { path = path[..<query] }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count >= 3, parts[0].isEmpty, parts[1] == "v1" else { return .respond(notFound) }
        let method = request.method
        func allow(_ methods: String, _ body: () -> Decision) -> Decision {
            guard methods.split(separator: ",").contains(Substring(method)) else {
                var response = Self.error(405, "method_not_allowed", "\(method) is not allowed here; use \(methods)")
                response.headers["Allow"] = methods.replacingComma()
                return .respond(response)
            }
            return body()
        }
        func name(_ part: Substring, _ field: String, _ body: (String) -> Decision) -> Decision {
            let local = String(part)
            guard Identifier.isValid(local) else {
                return .respond(
                    Self.error(400, "bad_request", "\(field) must be 1-64 characters of [A-Za-z0-9._~-]", field: field)
                )
            }
            return body(tenant.qualify(local))
        }
        switch (parts[2], parts.count) {
        case ("rooms", 3):
            return allow("GET") { .call(.listRooms, tenant: tenant) }
        case ("rooms", 4):
            return allow("GET") { name(parts[3], "room") { .call(.room($0), tenant: tenant) } }
        case ("rooms", 5) where parts[4] == "messages":
            return allow("POST") {
                name(parts[3], "room") { room in
                    Self.message(request.body) { data in
                        .call(
                            .publishToRoom(
                                room,
                                prefix: ServerMessage.serverMessagePrefix(data: data, room: String(parts[3]))
                            ),
                            tenant: tenant
                        )
                    }
                }
            }
        case ("peers", 4):
            return allow("GET,DELETE") {
                name(parts[3], "peer") { peer in
                    .call(method == "DELETE" ? .kick(peer) : .session(peer), tenant: tenant)
                }
            }
        case ("peers", 5) where parts[4] == "messages":
            return allow("POST") {
                name(parts[3], "peer") { peer in
                    Self.message(request.body) { data in
                        .call(
                            .publishToPeer(
                                peer,
                                prefix: ServerMessage.serverMessagePrefix(data: data, to: String(parts[3]))
                            ),
                            tenant: tenant
                        )
                    }
                }
            }
        default:
            return .respond(notFound)
        }
    }

    /// Reads a message body: a JSON object (strict: no duplicate members, at most 32 levels) whose `data`
    /// (any JSON value) is what recipients get; other members are ignored.
    static func message(_ body: ByteBuffer, _ next: (ByteBuffer) -> Decision) -> Decision {
        guard body.readableBytes > 0 else {
            return .respond(error(400, "bad_request", "the body must be a JSON object with \"data\"", field: "body"))
        }
        guard String(validating: body.readableBytesView, as: UTF8.self) != nil else {
            return .respond(error(400, "bad_request", "the body is not valid UTF-8", field: "body"))
        }
        let found: Result<JSONField?, JSONSyntaxError> = body.withUnsafeReadableBytes { bytes in
            do throws(JSONSyntaxError) {
                return .success(try JSONScanner.objectFields(in: bytes).first { $0.key == "data" })
            } catch {
                return .failure(error)
            }
        }
        switch found {
        case .failure(let syntax):
            return .respond(
                error(400, "bad_request", "the body is not acceptable JSON: \(syntax.reason)", field: "body")
            )
        case .success(nil):
            return .respond(error(400, "bad_request", "\"data\" is required (any JSON value)", field: "data"))
        case .success(let field?):
            return next(
                body.getSlice(at: body.readerIndex + field.valueStart, length: field.valueEnd - field.valueStart)!
            )
        }
    }

    // MARK: Answers

    static let notFound = error(404, "not_found", "no such endpoint (see Docs/openapi.yaml)")

    /// The answer to a call, from the backend's outcome. Names leave through ``Tenant/display(_:)``.
    public static func render(_ call: APICall, tenant: Tenant, outcome result: Result<APIOutcome, APIBackendError>)
        -> APIResponse
    {
        let outcome: APIOutcome
        switch result {
        case .failure(.unavailable):
            var response = error(503, "unavailable", "the hub cannot answer now; retry")
            response.headers["Retry-After"] = "1"
            return response
        case .success(let value):
            outcome = value
        }
        var json = JSONObjectWriter()
        switch (call, outcome) {
        case (.publishToPeer(let peer, _), .published(nil)):
            return error(404, "not_found", "peer \"\(Tenant.display(peer))\" has no session", field: "peer")
        case (.publishToRoom(let room, _), .published(nil)):
            return error(404, "not_found", "room \"\(Tenant.display(room))\" has no members", field: "room")
        case (_, .published(let count?)):
            json.number("delivered", count.delivered)
            json.number("queued", count.queued)
        case (_, .rooms(let rooms)):
            json.array("rooms", rooms.filter { tenant.owns($0.room) }) { entry, room in
                entry.string("room", String(Tenant.display(room.room)))
                entry.number("members", room.members)
            }
        case (.room(let room), .members(nil)):
            return error(404, "not_found", "room \"\(Tenant.display(room))\" has no members", field: "room")
        case (.room(let room), .members(let members?)):
            json.string("room", String(Tenant.display(room)))
            json.array("members", members) { entry, member in
                entry.string("peer", String(Tenant.display(member.peer)))
                entry.raw("meta", member.meta)
            }
        case (.session(let peer), .session(nil)), (.kick(let peer), .kicked(false)):
            return error(404, "not_found", "peer \"\(Tenant.display(peer))\" has no session", field: "peer")
        case (_, .session(let session?)):
            json.string("peer", String(Tenant.display(session.peer)))
            json.bool("connected", session.connected)
            json.strings("rooms", session.rooms.map { String(Tenant.display($0)) })
            if let node = session.node { json.string("node", node) }
        case (.kick(let peer), .kicked(true)):
            json.string("peer", String(Tenant.display(peer)))
            json.bool("kicked", true)
        default:
            return error(500, "internal", "unexpected answer from the backend")
        }
        return APIResponse(status: 200, body: json.finish())
    }

    /// `{"error":CODE,"message":…[,"field":…]}` with `status`.
    public static func error(_ status: Int, _ code: String, _ message: String, field: String? = nil) -> APIResponse {
        var json = JSONObjectWriter()
        json.string("error", code)
        json.string("message", message)
        if let field { json.string("field", field) }
        return APIResponse(status: status, body: json.finish())
    }
}

extension String {
    fileprivate func replacingComma() -> String {
        self.split(separator: ",").joined(separator: ", ")
    }
}

/// Writes one JSON object member by member.
struct JSONObjectWriter {
    private(set) var buffer = ByteBufferAllocator().buffer(capacity: 128)
    private var first = true

    init() {
        buffer.writeInteger(UInt8(ascii: "{"))
    }

    private mutating func key(_ name: String) {
        if !first { buffer.writeInteger(UInt8(ascii: ",")) }
        first = false
        buffer.writeJSONString(name)
        buffer.writeInteger(UInt8(ascii: ":"))
    }

    mutating func string(_ name: String, _ value: String) {
        key(name)
        buffer.writeJSONString(value)
    }

    mutating func number(_ name: String, _ value: Int) {
        key(name)
        buffer.writeString(String(value))
    }

    mutating func bool(_ name: String, _ value: Bool) {
        key(name)
        buffer.writeString(value ? "true" : "false")
    }

    /// A literal (`null`, `true`, …) as it is.
    mutating func rawLiteral(_ name: String, _ literal: String) {
        key(name)
        buffer.writeString(literal)
    }

    /// Raw JSON bytes (`{}` when nil).
    mutating func raw(_ name: String, _ value: ByteBuffer?) {
        key(name)
        if let value { buffer.writeImmutableBuffer(value) } else { buffer.writeStaticString("{}") }
    }

    mutating func strings(_ name: String, _ values: [String]) {
        key(name)
        buffer.writeInteger(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            buffer.writeJSONString(value)
        }
        buffer.writeInteger(UInt8(ascii: "]"))
    }

    mutating func array<Element>(
        _ name: String,
        _ values: [Element],
        _ entry: (inout JSONObjectWriter, Element) -> Void
    ) {
        key(name)
        buffer.writeInteger(UInt8(ascii: "["))
        for (index, value) in values.enumerated() {
            if index > 0 { buffer.writeInteger(UInt8(ascii: ",")) }
            var object = JSONObjectWriter()
            entry(&object, value)
            buffer.writeImmutableBuffer(object.finish())
        }
        buffer.writeInteger(UInt8(ascii: "]"))
    }

    mutating func finish() -> ByteBuffer {
        var done = buffer
        done.writeInteger(UInt8(ascii: "}"))
        return done
    }
}
