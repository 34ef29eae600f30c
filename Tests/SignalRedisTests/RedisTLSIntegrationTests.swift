import Foundation
import NIOCore
import RedisTestSupport
import Testing

@testable import SignalRedis

/// `rediss://` against a real `redis-server` that speaks only TLS.
@Suite(.serialized, .timeLimit(.minutes(2))) struct RedisTLSIntegrationTests {
    @Test func talksTLSWhenItTrustsTheServersCA() async throws {
        let server = try await RedisTestServer(tls: true)
        var configuration = try RedisConfiguration(url: "rediss://127.0.0.1:\(server.port)/2")
        configuration.tlsCAFile = server.tls!.caCertificate
        let redis = try RedisConnection(
            configuration: configuration,
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
        try await redis.set("secure", to: "yes")
        #expect(try await redis.get("secure", as: String.self) == "yes")
        #expect(try await redis.send("CLIENT", "INFO").string?.contains("db=2") == true)

        let subscriber = try RedisSubscriber(
            configuration: configuration,
            eventLoopGroup: RedisTestServer.group,
            logger: RedisTestServer.logger
        )
        try await subscriber.subscribe(["tls"])
        #expect(try await redis.publish("over tls", to: "tls") == 1)
        var events = subscriber.events.makeAsyncIterator()
        #expect(await events.next() == .message(RedisPubSubMessage(channel: "tls", payload: .init(string: "over tls"))))
        await subscriber.close()
        await redis.close()
    }

    @Test func refusesAServerItDoesNotTrustAndPlainTextToATLSPort() async throws {
        let server = try await RedisTestServer(tls: true)
        let cases = [
            ("rediss://127.0.0.1:\(server.port)", "CERTIFICATE_VERIFY_FAILED"),
            ("redis://127.0.0.1:\(server.port)", "use rediss://"),
        ]
        for (url, reason) in cases {
            var configuration = try RedisConfiguration(url: url)
            configuration.connectTimeout = .seconds(1)
            let redis = try RedisConnection(
                configuration: configuration,
                eventLoopGroup: RedisTestServer.group,
                logger: RedisTestServer.logger
            )
            redis.start()
            #expect(try await eventually { if case .reconnecting = redis.state { true } else { false } }, "\(url)")
            guard case .reconnecting(_, let lastError) = redis.state else { continue }
            #expect(lastError.message.contains("cannot complete the handshake"), "\(lastError)")
            #expect(lastError.message.contains(reason), "\(lastError)")
            let error = await redisError { try await redis.ping(timeout: .milliseconds(300)) }
            #expect(error?.code == .notConnected, "\(url): \(String(describing: error))")
            await redis.close()
        }
        var missingCA = try RedisConfiguration(url: "rediss://127.0.0.1:\(server.port)")
        missingCA.tlsCAFile = server.tls!.directory.appendingPathComponent("missing.pem").path
        #expect {
            _ = try RedisConnection(
                configuration: missingCA,
                eventLoopGroup: RedisTestServer.group,
                logger: RedisTestServer.logger
            )
        } throws: { error in
            (error as? RedisError)?.code == .invalidArgument
        }
    }
}
