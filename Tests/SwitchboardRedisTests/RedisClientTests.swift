import Foundation
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import NIOSSL
import SwitchboardRedis
import SwitchboardTestSupport
import Testing

/// The pooled, reconnecting client and the pub/sub subscriber against a real redis-server, on a group of
/// their own (not the caller's): restarts, NOSCRIPT, batching, resubscription, TLS and addresses.
@Suite("Redis client and subscriber", .serialized, .timeLimit(.minutes(5)))
struct RedisClientTests {
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
    static let quickBackoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))

    @Test func failsFastWhileRedisIsDownAndReconnectsWhenItIsBack() async throws {
        let redis = try await RedisServerProcess.start()
        let client = RedisClient(
            configuration: redis.configuration, connections: 2, group: Self.group, backoff: Self.quickBackoff)
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        try await redis.stopAndWait()
        let started = ContinuousClock.now
        await #expect(throws: RedisError.self) { _ = try await client.send(["PING"]).get() }
        await #expect(throws: RedisError.self) { _ = try await client.send(["PING"]).get() }
        #expect(ContinuousClock.now - started < .seconds(5), "commands must fail, not wait for Redis")
        let restarted = try await RedisServerProcess.start(port: redis.port)
        defer { restarted.stop() }
        try await eventually("the client reconnected") {
            (try? await client.send(["PING"]).get()) == .simpleString("PONG")
        }
        await client.close()
    }

    @Test func scriptsRunBySHAAndReloadAfterAFlush() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let client = RedisClient(configuration: redis.configuration, connections: 1, group: Self.group)
        let script = RedisScript("return redis.call('incrby', KEYS[1], ARGV[1])")
        #expect(script.sha.count == 40)
        #expect(try await client.run(script, keys: ["n"], arguments: ["2"]).get() == .integer(2))
        #expect(try await client.send(["SCRIPT", "EXISTS", .string(script.sha)]).get().elements == [.integer(1)])
        #expect(try await client.run(script, keys: ["n"], arguments: ["3"]).get() == .integer(5))
        _ = try await client.send(["SCRIPT", "FLUSH"]).get()
        #expect(try await client.run(script, keys: ["n"], arguments: ["1"]).get() == .integer(6))
        let stats = try await client.send(["INFO", "commandstats"]).get().string ?? ""
        // The second run went by SHA alone; the flush cost one EVAL of the source (the first run's
        // EVALSHA got NOSCRIPT too, since the client never sends SCRIPT LOAD).
        #expect(stats.contains("cmdstat_evalsha:calls=3"), "\(stats)")
        #expect(stats.contains("cmdstat_eval:calls=2"), "\(stats)")
        // A script error is a server error, not a lost connection.
        await #expect(throws: RedisError.self) {
            _ = try await client.run(RedisScript("return redis.call('nope')"), keys: [], arguments: []).get()
        }
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        await client.close()
    }

    @Test func subscriptionsAreBatchedAndComeBackAfterTheConnectionIsDropped() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let received = NIOLockedValueBox<[String]>([])
        let changes = NIOLockedValueBox<[RedisSubscriber.ConnectionChange]>([])
        let subscriber = RedisSubscriber(
            configuration: redis.configuration, eventLoop: Self.group.next(), backoff: Self.quickBackoff,
            onMessage: { channel, payload in
                received.withLockedValue { $0.append("\(channel)=\(String(buffer: payload))") }
            },
            onConnectionChange: { change in changes.withLockedValue { $0.append(change) } })
        try await subscriber.start().get()
        // 1,200 channels asked for from another thread: requests that arrive in one tick of the
        // subscriber's loop share a SUBSCRIBE (at most 500 channels each), so a handful, not 1,200.
        let channels = (0..<1200).map { "room-\($0)" }
        let confirmed = channels.map { subscriber.subscribe($0) }
        for future in confirmed { try await future.get() }
        let admin = RedisClient(configuration: redis.configuration, connections: 1, group: Self.group)
        let stats = try await admin.send(["INFO", "commandstats"]).get().string ?? ""
        let calls = stats.split(whereSeparator: \.isNewline).first { $0.hasPrefix("cmdstat_subscribe:calls=") }
            .flatMap { Int($0.dropFirst("cmdstat_subscribe:calls=".count).prefix { $0.isNumber }) }
        #expect((3...50).contains(calls ?? 0), "\(stats)")
        #expect(try await admin.send(["PUBLISH", "room-1199", "one"]).get() == .integer(1))
        try await eventually("the message") { received.withLockedValue { $0 } == ["room-1199=one"] }

        // Redis drops the connection (as it does at the output-buffer limit): lost, then restored with
        // every channel subscribed again.
        _ = try await admin.send(["CLIENT", "KILL", "TYPE", "pubsub"]).get()
        try await eventually("lost and restored") {
            let seen = changes.withLockedValue { $0 }
            return seen.count >= 3 && seen.suffix(2).map { "\($0)" } == ["lost", "restored"]
        }
        let numsub = try await admin.send(["PUBSUB", "NUMSUB", "room-0", "room-1199"]).get().elements ?? []
        #expect(numsub.compactMap(\.int) == [1, 1])
        #expect(try await admin.send(["PUBLISH", "room-0", "two"]).get() == .integer(1))
        try await eventually("a message after resubscribing") {
            received.withLockedValue { $0.last } == "room-0=two"
        }

        // Unsubscribing stops the channel's traffic; the others keep theirs.
        subscriber.unsubscribe("room-0")
        try await eventually("unsubscribed") {
            try await admin.send(["PUBSUB", "NUMSUB", "room-0"]).get().elements?.last?.int == 0
        }
        try await subscriber.shutdown().get()
        await admin.close()
    }

    /// The path to Redis goes silent (no reset, no FIN: a NAT forgot the flow, a virtual IP moved): no read
    /// ever fails, so only the PINGs can tell. The link is found dead within the PING interval plus the
    /// command timeout, reported lost, and made again with every channel subscribed.
    @Test func aSilentLinkIsFoundByItsPingsAndReplaced() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let proxy = try await FaultProxy.start(to: redis.port)
        var configuration = RedisConfiguration(host: "127.0.0.1", port: proxy.port)
        configuration.pingInterval = .milliseconds(200)
        configuration.commandTimeout = .milliseconds(500)
        let received = NIOLockedValueBox<[String]>([])
        let changes = NIOLockedValueBox<[String]>([])
        let subscriber = RedisSubscriber(
            configuration: configuration, eventLoop: Self.group.next(), backoff: Self.quickBackoff,
            onMessage: { _, payload in received.withLockedValue { $0.append(String(buffer: payload)) } },
            onConnectionChange: { change in changes.withLockedValue { $0.append("\(change)") } })
        try await subscriber.start().get()
        try await subscriber.subscribe("room").get()
        let admin = RedisClient(configuration: redis.configuration, connections: 1, group: Self.group)
        #expect(try await admin.send(["PUBLISH", "room", "before"]).get() == .integer(1))
        try await eventually("the first message") { received.withLockedValue { $0 } == ["before"] }

        proxy.blackholeOpenLinks()
        // Redis still counts the subscriber: the silence is on the path, not at either end.
        #expect(try await admin.send(["PUBLISH", "room", "unseen"]).get() == .integer(1))
        try await eventually(timeout: .seconds(15), "the silent link lost and a new one restored") {
            changes.withLockedValue { $0.suffix(2) } == ["lost", "restored"]
        }
        try await eventually("a message over the new link") {
            _ = try await admin.send(["PUBLISH", "room", "after"]).get()
            return received.withLockedValue { $0.last } == "after"
        }
        #expect(!received.withLockedValue { $0 }.contains("unseen"))
        try await subscriber.shutdown().get()
        await admin.close()
        await proxy.stop()
    }

    @Test func aSubscribeWhileRedisIsDownFailsAndIsMadeOnReconnection() async throws {
        let redis = try await RedisServerProcess.start()
        let restored = NIOLockedValueBox(0)
        let subscriber = RedisSubscriber(
            configuration: redis.configuration, eventLoop: Self.group.next(), backoff: Self.quickBackoff,
            onMessage: { _, _ in },
            onConnectionChange: { change in
                if case .restored = change { restored.withLockedValue { $0 += 1 } }
            })
        try await subscriber.start().get()
        try await redis.stopAndWait()
        await #expect(throws: RedisError.self) { try await subscriber.subscribe("late").get() }
        let again = try await RedisServerProcess.start(port: redis.port)
        defer { again.stop() }
        try await eventually("restored") { restored.withLockedValue { $0 } >= 2 }
        let admin = RedisClient(configuration: again.configuration, connections: 1, group: Self.group)
        try await eventually("the wanted channel subscribed") {
            try await admin.send(["PUBSUB", "NUMSUB", "late"]).get().elements?.last?.int == 1
        }
        try await subscriber.shutdown().get()
        await admin.close()
    }

    @Test func speaksTLSToARedissAddress() async throws {
        let pki = try TestPKI()
        try pki.authority("ca")
        try pki.server("redis", signedBy: "ca")
        let port = try RedisServerProcess.freePort()
        let redis = try await RedisServerProcess.start(
            [
                "--port", "0", "--tls-port", "\(port)", "--tls-cert-file", pki.path("redis.pem"),
                "--tls-key-file", pki.path("redis.key"), "--tls-ca-cert-file", pki.path("ca.pem"),
                "--tls-auth-clients", "no",
            ], port: port)
        defer { redis.stop() }
        var configuration = try RedisConfiguration(url: "rediss://localhost:\(port)/2")
        #expect(configuration.tls != nil && configuration.database == 2)
        configuration.tls?.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.path("ca.pem")))
        let client = RedisClient(configuration: configuration, connections: 1, group: Self.group)
        #expect(try await client.send(["PING"]).get() == .simpleString("PONG"))
        #expect((try await client.send(["CLIENT", "INFO"]).get().string ?? "").contains("db=2"))
        await client.close()
        // Without trusting the CA the handshake fails: never a silent plaintext fallback.
        var untrusted = configuration
        untrusted.tls = .makeClientConfiguration()
        let refused = RedisClient(configuration: untrusted, connections: 1, group: Self.group)
        await #expect(throws: (any Error).self) { _ = try await refused.send(["PING"]).get() }
        await refused.close()
    }

    @Test func addressesParse() throws {
        let plain = try RedisConfiguration(url: "redis://10.0.0.5")
        #expect(plain.host == "10.0.0.5" && plain.port == 6379 && plain.password == nil && plain.tls == nil)
        let full = try RedisConfiguration(url: "redis://app:p%40ss:w@cache.internal:6380/4")
        #expect(full.username == "app" && full.password == "p@ss:w" && full.host == "cache.internal")
        #expect(full.port == 6380 && full.database == 4)
        let passwordOnly = try RedisConfiguration(url: "redis://:secret@[::1]:7000")
        #expect(passwordOnly.username == nil && passwordOnly.password == "secret" && passwordOnly.host == "::1")
        #expect(passwordOnly.port == 7000)
        let sentinel = try RedisConfiguration(url: "redis+sentinel://:pw@10.0.0.1,10.0.0.2:26380/cache/3")
        #expect(sentinel.sentinel?.primaryName == "cache" && sentinel.database == 3 && sentinel.password == "pw")
        #expect(sentinel.sentinel?.sentinels.map { "\($0.host):\($0.port)" } == ["10.0.0.1:26379", "10.0.0.2:26380"])
        #expect(sentinel.displayAddress == "redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/cache/3")
        for bad in [
            "http://x", "redis://", "redis://host:0", "redis://host:99999", "redis://host/x", "host:6379",
            "redis+sentinel://host", "redis+sentinel://host:0/p", "redis+sentinel:///p",
        ] {
            #expect(throws: RedisAddressError.self, "\(bad)") { _ = try RedisConfiguration(url: bad) }
        }
        // Errors never show the password.
        let error = #expect(throws: RedisAddressError.self) {
            _ = try RedisConfiguration(url: "redis://:hunter2@host:bad")
        }
        #expect(error.map { !"\($0)".contains("hunter2") && "\($0)".contains("bad port") } == true)
    }

    @Test func backoffGrowsWithJitterUpToItsBound() {
        let backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(2))
        for failures in 1...30 {
            let bound = min(100 << min(failures - 1, 20), 2_000)
            let delays = (0..<50).map { _ in backoff.delay(afterFailures: failures).nanoseconds / 1_000_000 }
            #expect(delays.allSatisfy { (Int64(bound / 2)...Int64(bound)).contains($0) }, "\(failures): \(delays)")
            #expect(Set(delays).count > 1, "jittered")
        }
    }
}
