import Testing

@testable import SignalRedis

@Suite struct RedisConfigurationTests {
    @Test func parsesHostPortAndDatabase() throws {
        let plain = try RedisConfiguration(url: "redis://10.0.0.5")
        #expect(plain.host == "10.0.0.5" && plain.port == 6379 && plain.database == 0)
        #expect(plain.password == nil && plain.username == nil && plain.tls == nil)

        let full = try RedisConfiguration(url: "redis://cache.internal:7000/3")
        #expect(full.host == "cache.internal" && full.port == 7000 && full.database == 3)
        #expect(full.url == "redis://cache.internal:7000/3")

        let trailingSlash = try RedisConfiguration(url: "REDIS://h:1/")
        #expect(trailingSlash.port == 1 && trailingSlash.database == 0)

        let ipv6 = try RedisConfiguration(url: "redis://[::1]:6380/1")
        #expect(ipv6.host == "::1" && ipv6.port == 6380 && ipv6.database == 1)
        #expect(ipv6.url == "redis://[::1]:6380/1")
    }

    @Test func parsesCredentials() throws {
        let passwordOnly = try RedisConfiguration(url: "redis://:s3cret@localhost:6379")
        #expect(passwordOnly.username == nil && passwordOnly.password == "s3cret")

        let user = try RedisConfiguration(url: "redis://alice:p%40ss%3Aword@localhost/2")
        #expect(user.username == "alice" && user.password == "p@ss:word" && user.database == 2)
        #expect(!user.url.contains("p@ss"), "the URL shown in logs has no password")

        let tls = try RedisConfiguration(url: "rediss://:x@redis.example.com:6380")
        #expect(tls.tls != nil && tls.url.hasPrefix("rediss://"))
    }

    @Test(arguments: [
        "localhost:6379", "http://localhost", "redis://", "redis://:6379", "redis://host:0", "redis://host:99999",
        "redis://host:port", "redis://host/db", "redis://host/-1", "redis://secret@host", "redis://[::1",
        "redis://:p%zz@host", "redis://host?timeout=1",
    ])
    func rejectsBadURLs(_ url: String) {
        #expect {
            _ = try RedisConfiguration(url: url)
        } throws: { error in
            (error as? RedisError)?.code == .invalidURL
        }
    }

    @Test func errorsDoNotShowThePassword() {
        do throws(RedisError) {
            _ = try RedisConfiguration(url: "redis://bob:hunter2@host:notaport")
            Issue.record("expected an error")
        } catch {
            #expect(!error.message.contains("hunter2"))
            #expect(error.message.contains("bob:***@host"))
        }
    }

    @Test func backoffGrowsExponentiallyUpToTheCapWithJitter() {
        let backoff = RedisBackoff(initial: .milliseconds(100), maximum: .seconds(1), jitter: 0.5)
        #expect(backoff.delay(afterFailures: 0) == .zero)
        // With random = 0 there is no jitter: the full delay.
        #expect(backoff.delay(afterFailures: 1, random: 0) == .milliseconds(100))
        #expect(backoff.delay(afterFailures: 2, random: 0) == .milliseconds(200))
        #expect(backoff.delay(afterFailures: 4, random: 0) == .milliseconds(800))
        #expect(backoff.delay(afterFailures: 5, random: 0) == .seconds(1))
        #expect(backoff.delay(afterFailures: 1_000, random: 0) == .seconds(1))
        // Jitter takes off up to half.
        #expect(backoff.delay(afterFailures: 1, random: 0.999) > .milliseconds(50))
        #expect(backoff.delay(afterFailures: 1_000, random: 0.5) == .milliseconds(750))
        let delays = Set((0..<50).map { _ in backoff.delay(afterFailures: 3) })
        #expect(delays.count > 1, "jitter varies the delay")
        #expect(delays.allSatisfy { $0 >= .milliseconds(200) && $0 <= .milliseconds(400) })
    }

    @Test func expirationsUseSecondsWhenWhole() {
        #expect(RedisConnection.expiration(.seconds(30), seconds: "EX", milliseconds: "PX") == ("EX", 30))
        #expect(RedisConnection.expiration(.milliseconds(1500), seconds: "EX", milliseconds: "PX") == ("PX", 1500))
        #expect(RedisConnection.expiration(.microseconds(1), seconds: "EX", milliseconds: "PX") == ("PX", 1))
    }

    @Test func scriptsKnowTheirSHA1() {
        // `echo -n "return 1" | sha1sum`
        #expect(RedisScript("return 1").sha1 == "e0e1f9fabfc9d4800c877a703b823ac0578ff8db")
    }
}
