import NIOCore
import NIOEmbedded
import Testing

@testable import SwitchboardRedis

/// The handler alone, on an `EmbeddedChannel` with a clock the test moves: flushes and deadlines exactly.
@Suite("Redis handler", .timeLimit(.minutes(5)))
struct RedisHandlerTests {
    /// Counts the flushes that reach the socket.
    private final class FlushCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var flushes = 0
        func flush(context: ChannelHandlerContext) {
            flushes += 1
            context.flush()
        }
    }

    private func start(timeout: TimeAmount = .seconds(3)) throws -> (EmbeddedChannel, RedisHandler, FlushCounter) {
        let counter = FlushCounter()
        let handler = RedisHandler(timeout: timeout, onPush: { _ in })
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(counter)
        try channel.pipeline.syncOperations.addHandler(handler)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 6379)).wait()
        return (channel, handler, counter)
    }

    private func send(_ handler: RedisHandler, _ channel: EmbeddedChannel, _ arguments: [RESPArgument])
        -> EventLoopFuture<RESPValue>
    {
        let promise = channel.eventLoop.makePromise(of: RESPValue.self)
        handler.send(arguments, promise: promise)
        return promise.futureResult
    }

    private func outcome(_ future: EventLoopFuture<RESPValue>) -> Result<RESPValue, any Error>? {
        var result: Result<RESPValue, any Error>?
        future.whenComplete { result = $0 }
        return result
    }

    @Test func aBurstOfCommandsLeavesInOneFlushAndRepliesMatchInOrder() throws {
        let (channel, handler, counter) = try start()
        let flushesBefore = counter.flushes
        let first = send(handler, channel, ["PING"])
        let second = send(handler, channel, ["ECHO", "b"])
        let third = send(handler, channel, ["ECHO", "c"])
        #expect(counter.flushes == flushesBefore, "nothing flushed while the burst is being written")
        channel.embeddedEventLoop.run()
        #expect(counter.flushes == flushesBefore + 1)
        var written = ByteBuffer()
        while var part = try channel.readOutbound(as: ByteBuffer.self) { written.writeBuffer(&part) }
        #expect(
            String(buffer: written)
                == "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nb\r\n*2\r\n$4\r\nECHO\r\n$1\r\nc\r\n")
        try channel.writeInbound(ByteBuffer(string: "+PONG\r\n$1\r\nb\r\n$1\r\nc\r\n"))
        #expect(try outcome(first)?.get() == .simpleString("PONG"))
        #expect(try outcome(second)?.get() == .bulkString(ByteBuffer(string: "b")))
        #expect(try outcome(third)?.get() == .bulkString(ByteBuffer(string: "c")))
        _ = try? channel.finish()
    }

    /// Each command keeps its own deadline under the one timer; a late reply is matched and dropped; a
    /// command still unanswered at twice its timeout closes the link.
    @Test func eachCommandTimesOutAtItsOwnDeadlineUnderOneTimer() throws {
        let (channel, handler, _) = try start(timeout: .seconds(3))
        let loop = channel.embeddedEventLoop
        let slow = send(handler, channel, ["BLPOP", "x", "0"])
        loop.advanceTime(by: .seconds(2))
        let behind = send(handler, channel, ["PING"])
        loop.advanceTime(by: .milliseconds(999))
        #expect(outcome(slow) == nil, "not before its 3 s")
        loop.advanceTime(by: .milliseconds(1))
        #expect(throws: RedisError.timeout) { try outcome(slow)?.get() }
        #expect(outcome(behind) == nil, "the one behind keeps its own deadline (5 s)")
        // The slow command's late reply is matched and dropped; the next reply is the one behind's.
        try channel.writeInbound(ByteBuffer(string: "*-1\r\n+PONG\r\n"))
        #expect(try outcome(behind)?.get() == .simpleString("PONG"))
        #expect(channel.isActive)
        // Unanswered at 3 s, then still at 6 s: the link is stuck, closed, and what waits fails.
        let stuck = send(handler, channel, ["PING"])
        let after = send(handler, channel, ["PING"])
        loop.advanceTime(by: .seconds(3))
        #expect(throws: RedisError.timeout) { try outcome(stuck)?.get() }
        #expect(throws: RedisError.timeout) { try outcome(after)?.get() }
        #expect(channel.isActive)
        loop.advanceTime(by: .seconds(3))
        #expect(!channel.isActive)
        _ = try? channel.finish()
    }
}
