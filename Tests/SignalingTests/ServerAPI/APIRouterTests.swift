import NIOCore
import Testing

@testable import Signaling

@Suite struct APIRouterTests {
    static let key = "0123456789abcdef-key"
    static let acme = "0123456789abcdef-acme"

    static func router(burst: Int = 100, perSecond: Int = 50) throws -> APIRouter {
        var configuration = APIRouter.Configuration(keys: try APIKeys(file: "\(key)\n\(acme) acme\n"))
        configuration.rateBurst = burst
        configuration.ratePerSecond = perSecond
        return APIRouter(configuration: configuration)
    }

    static func request(_ method: String, _ uri: String, key: String? = Self.key, body: String = "") -> APIRequest {
        APIRequest(
            method: method,
            uri: uri,
            authorization: key.map { "Bearer " + $0 },
            body: ByteBuffer(string: body)
        )
    }

    func respond(_ decision: APIRouter.Decision) -> APIResponse? {
        if case .respond(let response) = decision { return response }
        return nil
    }

    @Test func routesEveryEndpointToItsCall() throws {
        var router = try Self.router()
        let cases: [(String, String, String, APICall)] = [
            ("GET", "/v1/rooms", "", .listRooms),
            ("GET", "/v1/rooms/lobby?x=1", "", .room("lobby")),
            ("GET", "/v1/peers/bob", "", .session("bob")),
            ("DELETE", "/v1/peers/bob", "", .kick("bob")),
            (
                "POST", "/v1/peers/bob/messages", #"{"data":{"call":"incoming"}}"#,
                .publishToPeer(
                    "bob",
                    prefix: ByteBuffer(
                        string: #"{"type":"message","to":"bob","data":{"call":"incoming"},"from":"@server","seq":"#
                    )
                )
            ),
            (
                "POST", "/v1/rooms/lobby/messages", #" {"data":null,"extra":1} "#,
                .publishToRoom(
                    "lobby",
                    prefix: ByteBuffer(string: #"{"type":"message","room":"lobby","data":null,"from":"@server","seq":"#)
                )
            ),
        ]
        for (method, uri, body, call) in cases {
            #expect(router.route(Self.request(method, uri, body: body), now: 0) == .call(call, tenant: .default))
        }
    }

    @Test func qualifiesNamesWithTheKeysTenant() throws {
        var router = try Self.router()
        let acme = Tenant("acme")!
        #expect(
            router.route(Self.request("GET", "/v1/peers/bob", key: Self.acme), now: 0)
                == .call(.session("acme/bob"), tenant: acme)
        )
        let decision = router.route(
            Self.request("POST", "/v1/rooms/lobby/messages", key: Self.acme, body: #"{"data":1}"#),
            now: 0
        )
        guard case .call(.publishToRoom(let room, let prefix), let tenant) = decision else {
            Issue.record("not a publish: \(decision)")
            return
        }
        #expect(room == "acme/lobby" && tenant == acme)
        #expect(String(buffer: prefix).contains(#""room":"lobby""#), "the recipient sees its own tenant's name")
    }

    @Test func refusesWithoutAValidKey() throws {
        var router = try Self.router()
        for key in [nil, "wrong-key-0123456789", ""] as [String?] {
            let response = respond(router.route(Self.request("GET", "/v1/rooms", key: key), now: 0))
            #expect(response?.status == 401)
            #expect(response?.headers["WWW-Authenticate"] == "Bearer")
            #expect(response?.text.contains(#""error":"unauthorized""#) == true)
        }
    }

    @Test(
        arguments: [
            ("GET", "/v2/rooms", "", 404, nil),
            ("GET", "/v1/rooms/", "", 400, "room"),
            ("GET", "/v1/nothing", "", 404, nil),
            ("GET", "/", "", 404, nil),
            ("GET", "/v1/peers/bob/messages/x", "", 404, nil),
            ("POST", "/v1/rooms", "", 405, nil),
            ("PUT", "/v1/peers/bob", "", 405, nil),
            ("GET", "/v1/peers/bob/messages", "", 405, nil),
            ("GET", "/v1/peers/b%40b", "", 400, "peer"),
            ("GET", "/v1/peers/@server", "", 400, "peer"),
            ("GET", "/v1/rooms/" + String(repeating: "r", count: 65), "", 400, "room"),
            ("POST", "/v1/peers/bob/messages", "", 400, "body"),
            ("POST", "/v1/peers/bob/messages", "[1]", 400, "body"),
            ("POST", "/v1/peers/bob/messages", #"{"data":1,"data":2}"#, 400, "body"),
            ("POST", "/v1/peers/bob/messages", #"{"data":1} x"#, 400, "body"),
            ("POST", "/v1/peers/bob/messages", #"{"payload":1}"#, 400, "data"),
        ] as [(String, String, String, Int, String?)]
    )
    func answersBadRequestsAtOnce(method: String, uri: String, body: String, status: Int, field: String?) throws {
        var router = try Self.router()
        let response = respond(router.route(Self.request(method, uri, body: body), now: 0))
        #expect(response?.status == status)
        if let field { #expect(response?.text.contains(#""field":"\#(field)""#) == true, "\(response?.text ?? "")") }
        if status == 405 { #expect(response?.headers["Allow"] != nil) }
    }

    @Test func refusesInvalidUTF8() throws {
        var router = try Self.router()
        var body = ByteBuffer(string: #"{"data":""#)
        body.writeBytes([0xC3, 0x28])
        body.writeString(#""}"#)
        let request = APIRequest(
            method: "POST",
            uri: "/v1/rooms/r/messages",
            authorization: "Bearer \(Self.key)",
            body: body
        )
        #expect(respond(router.route(request, now: 0))?.status == 400)
    }

    @Test func refusesATooLargeBodyBeforeAnythingElse() throws {
        var router = try Self.router()
        let request = APIRequest(method: "POST", uri: "/v1/rooms/r/messages", authorization: nil, bodyTooLarge: true)
        let response = respond(router.route(request, now: 0))
        #expect(response?.status == 413)
        #expect(response?.text.contains("payload_too_large") == true)
    }

    @Test func limitsTheRatePerKey() throws {
        var router = try Self.router(burst: 3, perSecond: 2)
        let statuses = (0..<5).map { _ in respond(router.route(Self.request("GET", "/v1/rooms"), now: 0))?.status }
        #expect(statuses == [nil, nil, nil, 429, 429])
        #expect(
            respond(router.route(Self.request("GET", "/v1/rooms", key: Self.acme), now: 0)) == nil,
            "each key has its own bucket"
        )
        #expect(respond(router.route(Self.request("GET", "/v1/rooms"), now: 500_000_000)) == nil, "refilled")
        let limited = respond(router.route(Self.request("GET", "/v1/rooms"), now: 500_000_000))
        #expect(limited?.status == 429 && limited?.headers["Retry-After"] == "1")
    }

    @Test func rendersOutcomesWithDisplayNames() {
        let acme = Tenant("acme")!
        func render(_ call: APICall, _ outcome: APIOutcome, tenant: Tenant = .default) -> (Int, String) {
            let response = APIRouter.render(call, tenant: tenant, outcome: .success(outcome))
            return (response.status, response.text)
        }
        let prefix = ByteBuffer()
        #expect(
            render(.publishToRoom("r", prefix: prefix), .published(APIPublishCount(delivered: 2, queued: 1)))
                == (200, #"{"delivered":2,"queued":1}"#)
        )
        #expect(render(.publishToPeer("acme/bob", prefix: prefix), .published(nil), tenant: acme).0 == 404)
        #expect(
            render(
                .listRooms,
                .rooms([.init(room: "acme/lobby", members: 2), .init(room: "lobby", members: 1)]),
                tenant: acme
            )
                == (200, #"{"rooms":[{"room":"lobby","members":2}]}"#),
            "a tenant sees only its own rooms"
        )
        #expect(
            render(.listRooms, .rooms([.init(room: "acme/lobby", members: 2), .init(room: "lobby", members: 1)]))
                == (200, #"{"rooms":[{"room":"lobby","members":1}]}"#)
        )
        #expect(
            render(
                .room("r"),
                .members([.init(peer: "a", meta: ByteBuffer(string: #"{"n":1}"#)), .init(peer: "b", meta: nil)])
            ) == (200, #"{"room":"r","members":[{"peer":"a","meta":{"n":1}},{"peer":"b","meta":{}}]}"#)
        )
        #expect(render(.room("r"), .members(nil)).0 == 404)
        #expect(
            render(
                .session("acme/bob"),
                .session(.init(peer: "acme/bob", connected: false, rooms: ["acme/r"], node: "n1")),
                tenant: acme
            )
                == (200, #"{"peer":"bob","connected":false,"rooms":["r"],"node":"n1"}"#)
        )
        #expect(render(.session("bob"), .session(nil)).0 == 404)
        #expect(render(.kick("bob"), .kicked(true)) == (200, #"{"peer":"bob","kicked":true}"#))
        #expect(render(.kick("bob"), .kicked(false)).0 == 404)
        let unavailable = APIRouter.render(.listRooms, tenant: .default, outcome: .failure(.unavailable))
        #expect(unavailable.status == 503 && unavailable.headers["Retry-After"] == "1")
    }
}
