import NIOCore
import NIOEmbedded
import Testing

@testable import SignalRedis

/// The request/reply matching, deadlines and close handling of `RedisCommandHandler`, on an
/// `EmbeddedChannel` with virtual time.
@Suite struct RedisCommandHandlerTests {
    final class Harness {
        let channel: EmbeddedChannel
        var pushes: [RESPValue] = []

        init(push: Bool = false) throws {
            channel = EmbeddedChannel()
            var handler: RedisCommandHandler!
            if push {
                handler = RedisCommandHandler(address: "redis://test:1", onRoundTrip: nil) { [unowned self] value, _ in
                    guard value.array?.first?.string == "message" else { return false }
                    pushes.append(value)
                    return true
                }
            } else {
                handler = RedisCommandHandler(address: "redis://test:1", onRoundTrip: nil)
            }
            try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(RESPFrameDecoder()))
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        }

        deinit {
            // Fails whatever is still in flight, so no promise is leaked.
            _ = try? channel.finish(acceptAlreadyClosed: true)
        }

        var now: NIODeadline { channel.embeddedEventLoop.now }

        func send(_ command: [any RESPEncodable], timeout: TimeAmount = .seconds(1)) throws -> EventLoopFuture<
            RESPValue
        > {
            var bytes = ByteBuffer()
            RESPEncoder().encodeCommand(command, into: &bytes)
            let promise = channel.eventLoop.makePromise(of: RESPValue.self)
            try channel.writeOutbound(
                RedisRequest(
                    bytes: bytes,
                    replies: 1,
                    responder: .one(promise),
                    deadline: now + timeout,
                    timeout: timeout
                )
            )
            return promise.futureResult
        }

        func sendMany(_ commands: [[any RESPEncodable]], timeout: TimeAmount = .seconds(1)) throws -> EventLoopFuture<
            [RESPValue]
        > {
            var bytes = ByteBuffer()
            for command in commands { RESPEncoder().encodeCommand(command, into: &bytes) }
            let promise = channel.eventLoop.makePromise(of: [RESPValue].self)
            try channel.writeOutbound(
                RedisRequest(
                    bytes: bytes,
                    replies: commands.count,
                    responder: .many(promise),
                    deadline: now + timeout,
                    timeout: timeout
                )
            )
            return promise.futureResult
        }

        func reply(_ wire: String) throws {
            try channel.writeInbound(ByteBuffer(string: wire))
        }

        func written() throws -> String {
            var all = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { all += String(buffer: buffer) }
            return all
        }
    }

    func outcome<Value>(_ future: EventLoopFuture<Value>) -> Result<Value, any Error>? {
        var result: Result<Value, any Error>?
        future.assumeIsolated().whenComplete { result = $0 }
        return result
    }

    func code<Value>(_ future: EventLoopFuture<Value>) -> RedisError.Code? {
        guard case .failure(let error) = outcome(future) else { return nil }
        return (error as? RedisError)?.code
    }

    @Test func repliesAreMatchedToRequestsInOrder() throws {
        let harness = try Harness()
        let first = try harness.send(["GET", "a"])
        let batch = try harness.sendMany([["INCR", "n"], ["BAD"], ["GET", "missing"]])
        let last = try harness.send(["PING"])
        #expect(
            try harness.written() == "*2\r\n$3\r\nGET\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n*1\r\n$3\r\nBAD\r\n"
                + "*2\r\n$3\r\nGET\r\n$7\r\nmissing\r\n*1\r\n$4\r\nPING\r\n"
        )
        try harness.reply("$1\r\n1\r\n:5\r\n-ERR unknown")
        #expect(try outcome(first)?.get() == .bulkString(ByteBuffer(string: "1")))
        #expect(outcome(batch) == nil, "the batch waits for all three replies")
        try harness.reply(" command\r\n$-1\r\n+PONG\r\n")
        let replies = try outcome(batch)?.get()
        #expect(replies?.count == 3)
        #expect(replies?[0] == .integer(5))
        #expect(replies?[1].errorMessage == "ERR unknown command")
        #expect(replies?[2] == .null)
        #expect(try outcome(last)?.get().string == "PONG")
    }

    @Test func aCommandPastItsDeadlineTimesOutAloneAndItsLateReplyIsDropped() throws {
        let harness = try Harness()
        let slow = try harness.send(["GET", "slow"], timeout: .milliseconds(100))
        let behind = try harness.send(["PING"], timeout: .seconds(5))
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(99))
        #expect(outcome(slow) == nil)
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(code(slow) == .timeout)
        #expect(outcome(behind) == nil, "the command behind keeps its own deadline")
        #expect(harness.channel.isActive)
        // The late reply is the slow command's, not the next one's: dropped; PING gets its own.
        try harness.reply("$4\r\nlate\r\n+PONG\r\n")
        #expect(try outcome(behind)?.get().string == "PONG")
        let next = try harness.send(["GET", "x"])
        try harness.reply("$1\r\ny\r\n")
        #expect(try outcome(next)?.get().string == "y")
        #expect(harness.channel.isActive)
    }

    @Test func aTimedOutCallerThatSendsOrClosesAtOnceDoesNotUpsetTheTimer() throws {
        // Each timed-out caller sends more at once (as a batcher does when a batch fails), or closes:
        // the handler's pass over its queue must not see the queue change under it.
        for closes in [false, true] {
            // The embedded loop runs everything on this thread.
            nonisolated(unsafe) let harness = try Harness()
            nonisolated(unsafe) var sent: [EventLoopFuture<RESPValue>] = []
            for index in 0..<8 {
                let future = try harness.send(["GET", "k\(index)"], timeout: .milliseconds(100))
                future.whenFailure { _ in
                    if closes {
                        harness.channel.close(promise: nil)
                    } else if let more = try? harness.send(["PING"], timeout: .seconds(5)) {
                        sent.append(more)
                    }
                }
            }
            harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
            #expect(sent.count == (closes ? 0 : 8))
            #expect(harness.channel.isActive == !closes)
        }
    }

    @Test func aReplyMissingLongAfterItsDeadlineClosesTheConnection() throws {
        let harness = try Harness()
        let slow = try harness.sendMany([["GET", "a"], ["GET", "b"]], timeout: .milliseconds(100))
        let behind = try harness.send(["PING"], timeout: .seconds(20))
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(100))
        #expect(code(slow) == .timeout)
        // One of the two late replies arrives; the second never does.
        try harness.reply("$-1\r\n")
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(9_999))
        #expect(harness.channel.isActive && outcome(behind) == nil)
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(code(behind) == .connectionClosed, "a connection that stopped answering is taken for dead")
        #expect(!harness.channel.isActive)
    }

    @Test func theTimerFollowsTheEarliestDeadline() throws {
        let harness = try Harness()
        let long = try harness.send(["GET", "a"], timeout: .seconds(10))
        let short = try harness.send(["GET", "b"], timeout: .milliseconds(50))
        try harness.reply("$-1\r\n")
        #expect(try outcome(long)?.get() == .null)
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(50))
        #expect(code(short) == .timeout)
    }

    @Test func answeredCommandsDoNotTimeOut() throws {
        let harness = try Harness()
        let first = try harness.send(["PING"], timeout: .milliseconds(10))
        try harness.reply("+PONG\r\n")
        let second = try harness.send(["PING"], timeout: .seconds(1))
        harness.channel.embeddedEventLoop.advanceTime(by: .milliseconds(500))
        #expect(try outcome(first)?.get().string == "PONG")
        #expect(outcome(second) == nil)
        #expect(harness.channel.isActive)
    }

    @Test func inFlightCommandsFailWhenTheConnectionCloses() throws {
        let harness = try Harness()
        let a = try harness.send(["GET", "a"])
        let b = try harness.sendMany([["GET", "b"], ["GET", "c"]])
        try harness.reply("$-1\r\n$-1\r\n")
        try harness.channel.close().wait()
        #expect(try outcome(a)?.get() == .null)
        #expect(code(b) == .connectionClosed)
    }

    @Test func anUnexpectedReplyIsAProtocolError() throws {
        let harness = try Harness()
        try harness.reply("+OK\r\n")
        #expect(!harness.channel.isActive)
    }

    @Test func malformedBytesFailWhatIsInFlight() throws {
        let harness = try Harness()
        let pending = try harness.send(["GET", "a"])
        try? harness.reply("?nonsense\r\n")
        #expect(code(pending) == .protocolError)
        #expect(!harness.channel.isActive)
    }

    @Test func pushesBypassTheQueue() throws {
        let harness = try Harness(push: true)
        let ping = try harness.send(["PING"])
        try harness.reply("*3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$2\r\nhi\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n")
        #expect(harness.pushes.count == 1)
        #expect(try outcome(ping)?.get().array?.first?.string == "pong")
    }
}
