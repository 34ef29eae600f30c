import Foundation
import NIOCore
import Testing

@testable import Signaling

/// TURN credentials (coturn's `use-auth-secret` form), `--ice-server` values, the per-session `iceServers`
/// of `welcome` and the `ice-servers` refresh.
@Suite struct TurnCredentialsTests {
    /// Vectors computed independently with Python:
    ///
    ///     import hmac, hashlib, base64
    ///     base64.b64encode(hmac.new(b'turn-shared-secret-for-tests-0123456789',
    ///                               b'1767225600:alice', hashlib.sha1).digest())
    ///     # b'1aVxI7klWYnq8yJiY06XD/E7Mlw='
    ///     base64.b64encode(hmac.new(b'north', b'1700000000:p-Abc~1', hashlib.sha1).digest())
    ///     # b'X7wetqo0HFU7U9dyvu6yteQP8Z8='
    @Test(arguments: [
        ("turn-shared-secret-for-tests-0123456789", "1767225600:alice", "1aVxI7klWYnq8yJiY06XD/E7Mlw="),
        ("north", "1700000000:p-Abc~1", "X7wetqo0HFU7U9dyvu6yteQP8Z8="),
    ])
    func credentialIsBase64OfHMACSHA1(secret: String, username: String, expected: String) {
        #expect(TurnCredentialIssuer.credential(secret: secret, username: username) == expected)
    }

    @Test func usernameIsExpiryColonPeerAndTheFirstSecretSigns() {
        let issuer = TurnCredentialIssuer(
            urls: ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp"],
            secrets: ["turn-shared-secret-for-tests-0123456789", "the-retiring-secret-0123456789"],
            ttl: 600
        )
        let server = issuer.iceServer(peer: "alice", now: Date(timeIntervalSince1970: 1_767_225_000.7))
        #expect(server.urls == issuer.urls)
        #expect(server.username == "1767225600:alice")
        #expect(server.credential == "1aVxI7klWYnq8yJiY06XD/E7Mlw=")
        #expect(issuer.refreshNanos == 480_000_000_000)
    }

    @Test func iceServerValues() throws {
        #expect(try IceServer.parse("stun:stun.example.org:3478") == IceServer(urls: ["stun:stun.example.org:3478"]))
        #expect(try IceServer.parse("stun:stun.example.org:3478").json == #"{"urls":"stun:stun.example.org:3478"}"#)
        let turn = try IceServer.parse(
            "turn:t.example.org:3478?transport=udp,turns:t.example.org:5349;username=app;credential=s\"3"
        )
        #expect(
            turn
                == IceServer(
                    urls: ["turn:t.example.org:3478?transport=udp", "turns:t.example.org:5349"],
                    username: "app",
                    credential: "s\"3"
                )
        )
        #expect(
            turn.json
                == #"{"urls":["turn:t.example.org:3478?transport=udp","turns:t.example.org:5349"],"username":"app","credential":"s\"3"}"#
        )
        let fromFile = try IceServer.parse("turn:t:3478;username=u;credential-file=/pass") { path in
            #expect(path == "/pass")
            return "from-file\nignored\n"
        }
        #expect(fromFile.credential == "from-file")
        for bad in [
            "turn:t:3478", "turn:t:3478;username=u", "stun:s;credential=c", "http://x", "", "stun:s;user=u", "stun:s;x",
        ] {
            #expect(throws: IceServer.ParseError.self, "\(bad)") { try IceServer.parse(bad) }
        }
        #expect(IceServer.json([]) == "[]")
    }

    @Test func welcomeCarriesStaticEntriesThenThisSessionsCredentials() throws {
        let issuer = TurnCredentialIssuer(urls: ["turn:127.0.0.1:3478"], secrets: ["north"], ttl: 100)
        let now = Date(timeIntervalSince1970: 1_699_999_900)
        var template = WelcomeTemplate(
            heartbeatInterval: 25,
            heartbeatTimeout: 60,
            iceServersJSON: #"[{"urls":"stun:stun.example.org"}]"#,
            limitsJSON: "{}",
            turn: issuer
        )
        let servers = try #require(
            JSONSerialization.jsonObject(with: Data(template.iceServers(peer: "p-Abc~1", now: now).utf8))
                as? [[String: Any]]
        )
        #expect(servers.count == 2)
        #expect(servers[0]["urls"] as? String == "stun:stun.example.org")
        #expect(servers[1]["urls"] as? [String] == ["turn:127.0.0.1:3478"])
        #expect(servers[1]["username"] as? String == "1700000000:p-Abc~1")
        #expect(servers[1]["credential"] as? String == "X7wetqo0HFU7U9dyvu6yteQP8Z8=")

        template.iceServersJSON = "[]"
        let message = try #require(
            JSONSerialization.jsonObject(
                with: Data(String(buffer: template.iceServersMessage(peer: "p-Abc~1", now: now)).utf8)
            )
                as? [String: Any]
        )
        #expect(message["type"] as? String == "ice-servers")
        let only = try #require((message["iceServers"] as? [[String: Any]])?.first)
        #expect(only["credential"] as? String == "X7wetqo0HFU7U9dyvu6yteQP8Z8=")

        let welcome = try #require(
            JSONSerialization.jsonObject(
                with: Data(String(buffer: template.render(peer: "bob", session: "s", resumed: false, gap: false)).utf8)
            )
                as? [String: Any]
        )
        let minted = try #require((welcome["iceServers"] as? [[String: Any]])?.first)
        let username = try #require(minted["username"] as? String)
        #expect(username.hasSuffix(":bob"))
        #expect(minted["credential"] as? String == TurnCredentialIssuer.credential(secret: "north", username: username))
    }

    @Test func welcomeWithoutTURNIsUnchanged() {
        let template = WelcomeTemplate(
            heartbeatInterval: 25,
            heartbeatTimeout: 60,
            iceServersJSON: "[]",
            limitsJSON: "{}"
        )
        #expect(template.iceServers(peer: "alice") == "[]")
    }

    @Test func scheduleRefreshesEachOpenConnectionEveryPeriod() {
        var schedule = IceRefreshSchedule(periodNanos: 100)
        schedule.add(ConnectionID(1), peer: "alice", now: 0)
        schedule.add(ConnectionID(2), peer: "bob", now: 30)
        #expect(schedule.due(now: 99).isEmpty)
        #expect(schedule.due(now: 100).map(\.peer) == ["alice"])
        schedule.remove(ConnectionID(2))
        #expect(schedule.due(now: 150).isEmpty, "a closed connection is not refreshed")
        #expect(schedule.due(now: 199).isEmpty)
        #expect(schedule.due(now: 205).map(\.connection) == [ConnectionID(1)], "due again one period after its refresh")
        #expect(schedule.count == 1)
        schedule.remove(ConnectionID(1))
        #expect(schedule.due(now: 10_000).isEmpty)
    }
}

/// The `ice-servers` refresh over a real server: a TTL of 2 s refreshes at 1.6 s.
@Suite(.serialized) struct TurnRefreshIntegrationTests {
    @Test func welcomeCredentialsAreRefreshedBeforeTheyExpire() async throws {
        let hub = try await TestHub {
            $0.turn = TurnCredentialIssuer(
                urls: ["turn:127.0.0.1:3478"],
                secrets: ["turn-shared-secret-for-tests"],
                ttl: 2
            )
        }
        defer { Task { await hub.stop() } }
        let alice = try await hub.connect("peer=alice")
        let welcome = try await alice.next("welcome")
        let first = try #require((welcome["iceServers"] as? [[String: Any]])?.first)
        let firstUsername = try #require(first["username"] as? String)
        let expiry = try #require(Int(firstUsername.split(separator: ":")[0]))
        #expect(abs(Double(expiry) - Date().timeIntervalSince1970 - 2) < 1.5)
        #expect(firstUsername.hasSuffix(":alice"))

        let started = Date()
        let refresh = try await alice.next("ice-servers", timeout: 4)
        let elapsed = Date().timeIntervalSince(started)
        #expect(elapsed > 1.0 && elapsed < 3.0, "refreshed at 80 % of the TTL (took \(elapsed) s)")
        let fresh = try #require((refresh["iceServers"] as? [[String: Any]])?.first)
        let username = try #require(fresh["username"] as? String)
        #expect(username.hasSuffix(":alice"))
        #expect(Int(username.split(separator: ":")[0])! > expiry)
        #expect(
            fresh["credential"] as? String
                == TurnCredentialIssuer.credential(secret: "turn-shared-secret-for-tests", username: username)
        )
        // and again, one period later
        _ = try await alice.next("ice-servers", timeout: 3)
    }
}
