import NIOCore
import NIOPosix
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

/// The client against a real redis-server: protocol negotiation, pipelining, authentication, database
/// selection, typed errors, timeouts and a lost connection. Futures complete on the connection's loop, a
/// second group from the caller's.
@Suite("Redis connection", .serialized, .timeLimit(.minutes(5)))
struct RedisConnectionTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)

    @Test func negotiatesRESP3AndPipelinesInOrder() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(redis.configuration, on: Self.group.next())
        #expect(connection.protocolVersion == 3)
        #expect(
            try await connection.send(["SET", "greeting", .bytes(ByteBuffer(string: "hé\r\n"))]) == .simpleString("OK"))
        #expect(try await connection.send(["GET", "greeting"]) == .bulkString(ByteBuffer(string: "hé\r\n")))
        #expect(try await connection.send(["GET", "missing"]) == .null)
        // RESP3 types: HGETALL answers a map.
        _ = try await connection.send(["HSET", "h", "a", "1"])
        #expect(
            try await connection.send(["HGETALL", "h"])
                == .map([(.bulkString(ByteBuffer(string: "a")), .bulkString(ByteBuffer(string: "1")))]))
        // 1,000 commands sent without waiting: replies come back matched, in order.
        let futures = (0..<1000).map { _ in connection.sendFuture(["INCR", "counter"]) }
        var results: [Int64] = []
        for future in futures { results.append(try await future.get().int ?? -1) }
        #expect(results == Array(1...1000))
        await connection.close()
    }

    @Test func fallsBackToRESP2WhereHelloIsUnknown() async throws {
        let redis = try await RedisServerProcess.start(["--rename-command", "HELLO", ""])
        defer { redis.stop() }
        var configuration = redis.configuration
        configuration.database = 2
        let connection = try await RedisConnection.connect(configuration, on: Self.group.next())
        #expect(connection.protocolVersion == 2)
        _ = try await connection.send(["HSET", "h", "a", "1"])
        #expect(
            try await connection.send(["HGETALL", "h"])
                == .array([.bulkString(ByteBuffer(string: "a")), .bulkString(ByteBuffer(string: "1"))]))
        let info = try await connection.send(["CLIENT", "INFO"]).string ?? ""
        #expect(info.contains("db=2"))
        await connection.close()
    }

    @Test func authenticatesAndSelects() async throws {
        let redis = try await RedisServerProcess.start(["--requirepass", "a-redis-password"])
        defer { redis.stop() }
        var configuration = redis.configuration
        configuration.password = "a-redis-password"
        configuration.database = 3
        let connection = try await RedisConnection.connect(configuration, on: Self.group.next())
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
        #expect((try await connection.send(["CLIENT", "INFO"]).string ?? "").contains("db=3"))
        await connection.close()
        configuration.password = "wrong"
        await #expect(throws: RedisError.self) {
            _ = try await RedisConnection.connect(configuration, on: Self.group.next())
        }
    }

    @Test func errorsAreTypedAndLeaveTheConnectionUsable() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(redis.configuration, on: Self.group.next())
        _ = try await connection.send(["SET", "text", "abc"])
        await #expect(throws: RedisError.server("ERR value is not an integer or out of range")) {
            _ = try await connection.send(["INCR", "text"])
        }
        #expect(try await connection.send(["PING"]) == .simpleString("PONG"))
        await connection.close()
    }

    /// A slow command (here a BLPOP that blocks its connection) times out alone: a command sent behind it
    /// keeps its own deadline and gets its reply, and the connection stays.
    @Test func aSlowCommandTimesOutAloneAndTheOnesBehindItAreAnswered() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        var configuration = redis.configuration
        configuration.commandTimeout = .seconds(2)
        let connection = try await RedisConnection.connect(configuration, on: Self.group.next())
        let slow = connection.sendFuture(["BLPOP", "nothing-here", "3"])
        try await Task.sleep(for: .milliseconds(1500))
        let behind = connection.sendFuture(["PING"])
        await #expect(throws: RedisError.timeout) { _ = try await slow.get() }
        #expect(try await behind.get() == .simpleString("PONG"))
        #expect(connection.isActive)
        #expect(
            try await connection.send(["ECHO", "still in order"]) == .bulkString(ByteBuffer(string: "still in order")))
        await connection.close()
    }

    @Test func aCommandWithoutReplyTimesOutAndAPausedServerIsNoHang() async throws {
        let redis = try await RedisServerProcess.start()
        defer {
            redis.signal(SIGCONT)
            redis.stop()
        }
        var configuration = redis.configuration
        configuration.commandTimeout = .milliseconds(300)
        let connection = try await RedisConnection.connect(configuration, on: Self.group.next())
        redis.signal(SIGSTOP)
        let started = ContinuousClock.now
        await #expect(throws: RedisError.timeout) { _ = try await connection.send(["PING"]) }
        #expect(ContinuousClock.now - started < .seconds(5))
        // Still unanswered after twice the timeout: the link is stuck, closed.
        try await eventually("the timed-out connection closed") { !connection.isActive }
        await #expect(throws: RedisError.connectionLost) { _ = try await connection.send(["PING"]) }
        redis.signal(SIGCONT)
        let again = try await RedisConnection.connect(configuration, on: Self.group.next())
        #expect(try await again.send(["PING"]) == .simpleString("PONG"))
        await again.close()
    }

    @Test func aLostConnectionFailsWhatIsPending() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let connection = try await RedisConnection.connect(redis.configuration, on: Self.group.next())
        let admin = try await RedisConnection.connect(redis.configuration, on: Self.group.next())
        let blocked = connection.sendFuture(["BLPOP", "never", "0"])
        _ = try await admin.send(["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"])
        // Sent, then the link broke: it may have run (replyLost), unlike a command never sent (connectionLost).
        await #expect(throws: RedisError.replyLost) { _ = try await blocked.get() }
        await #expect(throws: RedisError.connectionLost) { _ = try await connection.send(["PING"]) }
        await admin.close()
    }

    @Test func pushesReachTheHandler() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let received = AsyncStream<RESPValue>.makeStream()
        let subscriber = try await RedisConnection.connect(
            redis.configuration, on: Self.group.next(), onPush: { received.continuation.yield($0) })
        _ = try await subscriber.send(["SUBSCRIBE", "news"])
        let publisher = try await RedisConnection.connect(redis.configuration, on: Self.group.next())
        #expect(try await publisher.send(["PUBLISH", "news", "hello"]) == .integer(1))
        var iterator = received.stream.makeAsyncIterator()
        var message: RESPValue?
        while let push = await iterator.next() {
            if push.elements?.first?.string == "message" {
                message = push
                break
            }
        }
        #expect(message?.elements?.map { $0.string } == ["message", "news", "hello"])
        await subscriber.close()
        await publisher.close()
    }
}
