import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardRedis
import SwitchboardServer
import SwitchboardTestSupport
import Testing

@testable import SwitchboardCluster

/// What a node's broker hands the application, in order.
final class RecordingHandler: BrokerEventHandler {
    enum Event: Equatable {
        case publication(Int, String)
        case join(String)
        case leave(String)
        case resynchronize
    }

    // Lock: guards the events, appended on the broker's loops.
    private let recorded = NIOLockedValueBox<[String: [Event]]>([:])

    func handlePublication(_ publication: Publication, channel: String) {
        recorded.withLockedValue { $0[channel, default: []].append(.publication(publication.offset, publication.data)) }
    }
    func handleJoin(_ member: PresenceMember, channel: String) {
        recorded.withLockedValue { $0[channel, default: []].append(.join(member.clientID)) }
    }
    func handleLeave(_ member: PresenceMember, channel: String) {
        recorded.withLockedValue { $0[channel, default: []].append(.leave(member.clientID)) }
    }
    func handleResynchronize(channel: String) {
        recorded.withLockedValue { $0[channel, default: []].append(.resynchronize) }
    }
    func events(_ channel: String) -> [Event] { recorded.withLockedValue { $0[channel] ?? [] } }
    var offsets: (String) -> [Int] {
        { channel in
            self.events(channel).compactMap { if case .publication(let offset, _) = $0 { offset } else { nil } }
        }
    }
}

/// A node's cluster parts on an event loop group of their own.
struct TestNode {
    let group: MultiThreadedEventLoopGroup
    let broker: RedisBroker
    let presence: RedisPresence
    let handler = RecordingHandler()

    init(_ redis: [RedisServerProcess], id: String, configure: (inout ClusterConfiguration) -> Void = { _ in }) {
        group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var configuration = ClusterConfiguration(redis: redis.map(\.configuration))
        configuration.nodeID = id
        configuration.backoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        configure(&configuration)
        var logger = Logger(label: "cluster-test")
        logger.logLevel = .critical
        broker = RedisBroker(configuration: configuration, group: group, logger: logger)
        presence = RedisPresence(broker: broker, logger: logger)
        broker.attach(handler)
    }

    func start() async throws { try await broker.start().get() }

    func stop() async {
        presence.stop()
        await broker.shutdown()
        try? await group.shutdownGracefully()
    }
}

@Suite("Redis broker and presence", .serialized, .timeLimit(.minutes(5)))
struct RedisBrokerTests {
    /// The callers' loop: another group than either node's, as the hub's loops are.
    let caller = MultiThreadedEventLoopGroup.singleton.next()
    static var history: NamespaceOptions {
        var options = NamespaceOptions()
        options.historySize = 5
        options.historyTTL = .seconds(300)
        return options
    }

    @Test func publicationsReachOnlySubscribedNodesInOffsetOrder() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a")
        let b = TestNode([redis], id: "b")
        try await a.start()
        try await b.start()
        try await a.broker.subscribe(channel: "chat:x", on: caller).get()
        var offsets: [Int] = []
        for i in 1...20 {
            let publication = try await b.broker.publish(
                channel: "chat:x", data: "{\"n\":\(i)}", user: "bob", options: Self.history, on: caller
            ).get()
            offsets.append(publication.offset)
        }
        #expect(offsets == Array(1...20))
        try await eventually("twenty publications on A") { a.handler.offsets("chat:x").count == 20 }
        #expect(a.handler.offsets("chat:x") == Array(1...20))
        #expect(a.handler.events("chat:x").first == .publication(1, "{\"n\":1}"))
        // B never subscribed: Redis sends it nothing, and it delivers nothing.
        let admin = RedisClient(configuration: redis.configuration, connections: 1, group: a.group)
        let numsub = try await admin.send(["PUBSUB", "NUMSUB", "switchboard.channel.chat:x"]).get()
        #expect(numsub.elements?.last?.int == 1)
        #expect(b.handler.events("chat:x").isEmpty)
        // Publications already on their way when A unsubscribes are not delivered: A's loop is held up
        // while they arrive, and the unsubscribe runs before it reads them.
        try await a.broker.subscribe(channel: "chat:barrier", on: caller).get()
        // A's loop is held until the test has published and asked to unsubscribe (bounded: never a hang).
        let release = DispatchSemaphore(value: 0)
        let held = a.group.next().submit { _ = release.wait(timeout: .now() + 30) }
        for i in 21...25 {
            _ = try await b.broker.publish(
                channel: "chat:x", data: "\(i)", user: nil, options: Self.history, on: caller
            )
            .get()
        }
        let unsubscribed = a.broker.unsubscribe(channel: "chat:x", on: caller)
        release.signal()
        try await held.get()
        try await unsubscribed.get()
        _ = try await b.broker.publish(channel: "chat:barrier", data: "0", user: nil, options: Self.history, on: caller)
            .get()
        try await eventually("the barrier") { a.handler.offsets("chat:barrier") == [1] }
        #expect(a.handler.offsets("chat:x") == Array(1...20))
        try await eventually("unsubscribed at Redis") {
            try await admin.send(["PUBSUB", "NUMSUB", "switchboard.channel.chat:x"]).get().elements?.last?.int == 0
        }
        await admin.close()
        await a.stop()
        await b.stop()
    }

    /// The same idempotency key through two nodes: one publication, one offset, one delivery; another key
    /// or another channel publishes; past the window the key publishes again.
    @Test func anIdempotentPublishRepeatedThroughTwoNodesIsMadeOnce() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a")
        let b = TestNode([redis], id: "b")
        try await a.start()
        try await b.start()
        try await a.broker.subscribe(channel: "chat:idem", on: caller).get()
        let key = IdempotencyKey("order-17", window: .seconds(300))
        let first = try await a.broker.publish(
            channel: "chat:idem", data: "{\"n\":1}", user: "ann", options: Self.history, idempotency: key, on: caller
        ).get()
        let repeated = try await b.broker.publish(
            channel: "chat:idem", data: "{\"n\":1}", user: "ann", options: Self.history, idempotency: key, on: caller
        ).get()
        #expect(first.offset == 1)
        #expect(!first.isRepeat)
        #expect(repeated.offset == 1)
        #expect(repeated.isRepeat)
        #expect(repeated.epoch == first.epoch)
        let other = try await b.broker.publish(
            channel: "chat:idem", data: "2", user: nil, options: Self.history,
            idempotency: IdempotencyKey("order-18"), on: caller
        ).get()
        #expect(other.offset == 2)
        let elsewhere = try await b.broker.publish(
            channel: "chat:other", data: "3", user: nil, options: Self.history, idempotency: key, on: caller
        ).get()
        #expect(elsewhere.offset == 1)
        #expect(!elsewhere.isRepeat)
        try await eventually("two publications on A") { a.handler.offsets("chat:idem").count == 2 }
        #expect(a.handler.offsets("chat:idem") == [1, 2])
        let history = try await a.broker.history(
            channel: "chat:idem", since: nil, limit: 10, options: Self.history, on: caller
        ).get()
        #expect(history.publications.map(\.offset) == [1, 2])

        let short = IdempotencyKey("brief", window: .milliseconds(200))
        let once = try await a.broker.publish(
            channel: "chat:idem", data: "4", user: nil, options: Self.history, idempotency: short, on: caller
        ).get()
        try await Task.sleep(for: .milliseconds(400))
        let again = try await b.broker.publish(
            channel: "chat:idem", data: "4", user: nil, options: Self.history, idempotency: short, on: caller
        ).get()
        #expect(once.offset == 3)
        #expect(again.offset == 4, "past its window the key publishes again")
        await a.stop()
        await b.stop()
    }

    /// Occupancy across two nodes through Redis: occupied once, vacated once when both have left; a node
    /// that stops refreshing (died) no longer keeps the channel occupied.
    @Test func occupancyIsReportedOnceForTheClusterAndOutlivesNoDeadNode() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a") { $0.presenceTTL = .milliseconds(600) }
        let b = TestNode([redis], id: "b") { $0.presenceTTL = .milliseconds(600) }
        try await a.start()
        try await b.start()
        let onA = RedisOccupancy(broker: a.broker, logger: Logger(label: "test"))
        let onB = RedisOccupancy(broker: b.broker, logger: Logger(label: "test"))
        onA.start(on: a.group.next())
        onB.start(on: b.group.next())
        #expect(try await onA.join(channel: "chat:o", on: caller).get())
        #expect(try await !onB.join(channel: "chat:o", on: caller).get())
        try await onA.leave(channel: "chat:o", on: caller).get()
        #expect(try await !onA.settle(channel: "chat:o", on: caller).get(), "B is still there")
        // A comes back before the channel was settled: not occupied again.
        #expect(try await !onA.join(channel: "chat:o", on: caller).get())
        try await onA.leave(channel: "chat:o", on: caller).get()
        try await onB.leave(channel: "chat:o", on: caller).get()
        #expect(try await onB.settle(channel: "chat:o", on: caller).get())
        #expect(try await !onA.settle(channel: "chat:o", on: caller).get(), "reported once")
        #expect(try await onB.join(channel: "chat:o", on: caller).get(), "occupied again")

        // B dies (stops refreshing): past its TTL its entry is gone, and A's leave settles the channel.
        #expect(try await !onA.join(channel: "chat:o", on: caller).get())
        onB.stop()
        try await Task.sleep(for: .seconds(2))  // several refreshes of A; B's entry expires (600 ms)
        try await onA.leave(channel: "chat:o", on: caller).get()
        #expect(try await onA.settle(channel: "chat:o", on: caller).get())
        onA.stop()
        await a.stop()
        await b.stop()
    }

    @Test func recoveryIsExactOrHonestlyIncomplete() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a")
        try await a.start()
        let before = try await a.broker.recover(channel: "c", since: nil, options: Self.history, on: caller).get()
        #expect(before.offset == 0 && !before.recovered)
        for i in 1...8 {
            _ = try await a.broker.publish(channel: "c", data: "\(i)", user: nil, options: Self.history, on: caller)
                .get()
        }
        let position = { (offset: Int) in StreamPosition(offset: offset, epoch: before.epoch) }
        // Within history (the last five: 4…8): exactly what was missed.
        let recent = try await a.broker.recover(channel: "c", since: position(5), options: Self.history, on: caller)
            .get()
        #expect(recent.recovered && recent.epoch == before.epoch && recent.offset == 8)
        #expect(recent.publications.map(\.offset) == [6, 7, 8])
        #expect(recent.publications.map(\.data) == ["6", "7", "8"])
        let current = try await a.broker.recover(channel: "c", since: position(8), options: Self.history, on: caller)
            .get()
        #expect(current.recovered && current.publications.isEmpty)
        // Trimmed: offset 2's successor is gone.
        let old = try await a.broker.recover(channel: "c", since: position(2), options: Self.history, on: caller).get()
        #expect(!old.recovered && old.publications.isEmpty)
        // Another epoch, or a position from the future: never recovered.
        let other = try await a.broker.recover(
            channel: "c", since: StreamPosition(offset: 7, epoch: "other"), options: Self.history, on: caller
        ).get()
        #expect(!other.recovered)
        #expect(
            !(try await a.broker.recover(channel: "c", since: position(9), options: Self.history, on: caller).get())
                .recovered)
        // History pages: newest without `since`, oldest after it.
        let page = try await a.broker.history(channel: "c", since: nil, limit: 2, options: Self.history, on: caller)
            .get()
        #expect(page.publications.map(\.offset) == [7, 8])
        let after = try await a.broker.history(channel: "c", since: 4, limit: 2, options: Self.history, on: caller)
            .get()
        #expect(after.publications.map(\.offset) == [5, 6])
        for (since, limit, offsets) in [
            (1, 2, [4, 5]), (6, 10, [7, 8]), (8, 3, []), (3, 5, [4, 5, 6, 7, 8]), (4, 0, []),
        ] as [(Int, Int, [Int])] {
            let page = try await a.broker.history(
                channel: "c", since: since, limit: limit, options: Self.history, on: caller
            ).get()
            #expect(page.publications.map(\.offset) == offsets, "since \(since), limit \(limit)")
        }
        #expect(
            try await a.broker.history(channel: "c", since: nil, limit: 0, options: Self.history, on: caller).get()
                .publications.isEmpty)
        // The page is cut in the script: only its entries leave Redis, not the whole list.
        let read = try await a.broker.readStream("c", .page(after: 4, limit: 2)).get()
        #expect(read.publications.map(\.offset) == [5, 6] && read.offset == 8)
        #expect(try await a.broker.readStream("c", .newest(3)).get().publications.map(\.offset) == [6, 7, 8])
        // Removing history keeps the position: recovery from before is refused, not faked.
        try await a.broker.removeHistory(channel: "c", on: caller).get()
        let removed = try await a.broker.recover(channel: "c", since: position(6), options: Self.history, on: caller)
            .get()
        #expect(!removed.recovered && removed.offset == 8 && removed.epoch == before.epoch)
        await a.stop()
    }

    /// A history with a gap (history turned off for a while) is read whole and filtered, never paged wrongly;
    /// a limit past any history's size is no error.
    @Test func historyPagesAreRightAcrossAGapAndForAnyLimit() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a")
        try await a.start()
        var off = Self.history
        off.historySize = 0
        for (i, options) in [Self.history, Self.history, Self.history, off, off, Self.history, Self.history]
            .enumerated()
        {
            _ = try await a.broker.publish(channel: "g", data: "\(i + 1)", user: nil, options: options, on: caller)
                .get()
        }
        // The list holds 1, 2, 3, 6, 7.
        for (since, limit, offsets) in [
            (nil, 3, [3, 6, 7]), (2, 2, [3, 6]), (3, 5, [6, 7]), (nil, Int.max, [1, 2, 3, 6, 7]),
        ]
            as [(Int?, Int, [Int])]
        {
            let page = try await a.broker.history(
                channel: "g", since: since, limit: limit, options: Self.history, on: caller
            ).get()
            #expect(page.publications.map(\.offset) == offsets, "since \(String(describing: since)), limit \(limit)")
        }
        #expect(
            try await a.broker.history(channel: "c", since: 2, limit: Int.max, options: Self.history, on: caller).get()
                .publications.isEmpty)
        await a.stop()
    }

    @Test func aFlushedRedisStartsANewEpochAndSubscribedNodesResynchronize() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let a = TestNode([redis], id: "a")
        try await a.start()
        try await a.broker.subscribe(channel: "c", on: caller).get()
        let first = try await a.broker.publish(channel: "c", data: "1", user: nil, options: Self.history, on: caller)
            .get()
        let epoch = try await a.broker.recover(channel: "c", since: nil, options: Self.history, on: caller).get().epoch
        let admin = RedisClient(configuration: redis.configuration, connections: 1, group: a.group)
        _ = try await admin.send(["FLUSHALL"]).get()
        let second = try await a.broker.publish(channel: "c", data: "2", user: nil, options: Self.history, on: caller)
            .get()
        #expect(first.offset == 1 && second.offset == 1)
        let after = try await a.broker.recover(
            channel: "c", since: StreamPosition(offset: 1, epoch: epoch), options: Self.history, on: caller
        ).get()
        #expect(after.epoch != epoch && !after.recovered)
        // The node saw offset 1 twice: a new epoch, so it resynchronized before delivering the second.
        try await eventually("both publications") { a.handler.offsets("c").count == 2 }
        #expect(a.handler.events("c") == [.publication(1, "1"), .resynchronize, .publication(1, "2")])
        await admin.close()
        await a.stop()
    }

    /// Redis restarts from a snapshot older than what clients hold (RDB, AOF `everysec`, a replica that
    /// was behind): the same epoch would come back with an older offset, and new publications would reuse
    /// offsets clients already hold with other data. The stream starts a new epoch instead, so a client
    /// recovering from any position it had is told `recovered: false`, never `true` over a hidden loss.
    @Test func aRedisRolledBackToAnOlderSnapshotStartsANewEpoch() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("rollback-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let persistence = ["--dir", directory.path, "--dbfilename", "dump.rdb"]
        let redis = try await RedisServerProcess.start(persistence)
        let a = TestNode([redis], id: "a")
        try await a.start()
        func publish(_ data: String) async throws -> Publication {
            try await a.broker.publish(channel: "c", data: data, user: nil, options: Self.history, on: caller).get()
        }
        for data in ["1", "2", "3"] { _ = try await publish(data) }
        let admin = RedisClient(configuration: redis.configuration, connections: 1, group: a.group)
        _ = try await admin.send(["SAVE"]).get()
        await admin.close()
        _ = try await publish("4")
        let held = try await publish("5")
        #expect(held.offset == 5)
        let position = StreamPosition(offset: held.offset, epoch: held.epoch ?? "")

        // Killed, and back from the snapshot taken at offset 3.
        try await redis.stopAndWait()
        let restarted = try await RedisServerProcess.start(persistence, port: redis.port)
        defer { restarted.stop() }
        let reread = RedisClient(configuration: restarted.configuration, connections: 1, group: a.group)
        #expect(try await reread.send(["HGET", "switchboard.meta.c", "o"]).get().int == 3, "rolled back")
        await reread.close()
        var republished: Publication?
        try await eventually("publishing again") {
            republished = try? await publish("4 again")
            return republished != nil
        }
        _ = try await publish("5 again")
        #expect(republished?.epoch != held.epoch, "a new epoch after the rollback")
        for since in [position, StreamPosition(offset: 4, epoch: position.epoch)] {
            let recovery = try await a.broker.recover(channel: "c", since: since, options: Self.history, on: caller)
                .get()
            #expect(!recovery.recovered, "from \(since.offset)")
            #expect(recovery.epoch == republished?.epoch)
        }
        await a.stop()
    }

    @Test func aNodeDroppedAtItsOutputBufferLimitResynchronizesAndHistoryCoversTheGap() async throws {
        // Redis closes a subscriber whose unsent output passes 256 KiB: what happens to a node that falls behind.
        let redis = try await RedisServerProcess.start(["--client-output-buffer-limit", "pubsub 256kb 0 0"])
        defer { redis.stop() }
        let slow = TestNode([redis], id: "slow")
        let publisher = TestNode([redis], id: "pub")
        try await slow.start()
        try await publisher.start()
        var options = NamespaceOptions()
        options.historySize = 10_000
        try await slow.broker.subscribe(channel: "feed", on: caller).get()
        let warmup = try await publisher.broker.publish(
            channel: "feed", data: "0", user: nil, options: options, on: caller
        )
        .get()
        try await eventually("the first publication") { slow.handler.offsets("feed") == [warmup.offset] }
        // The slow node's only loop is stuck for a while: its socket fills, then Redis's buffer for it.
        // Held until every publication is made (bounded: never a hang), whatever the machine's speed.
        let release = DispatchSemaphore(value: 0)
        let stuck = slow.group.next().submit { _ = release.wait(timeout: .now() + 120) }
        let payload = "\"" + String(repeating: "x", count: 4_000) + "\""
        var last = 0
        for _ in 0..<2_000 {
            last = try await publisher.broker.publish(
                channel: "feed", data: payload, user: nil, options: options, on: caller
            )
            .get().offset
        }
        release.signal()
        try await stuck.get()
        try await eventually("the node resynchronized") { slow.handler.events("feed").contains(.resynchronize) }
        let received = slow.handler.offsets("feed")
        #expect(received.count < 2_001, "Redis dropped the subscriber: some publications never arrived")
        // What it got is in order; history holds everything after it.
        #expect(received == received.sorted())
        let epoch = try await slow.broker.recover(channel: "feed", since: nil, options: options, on: caller).get().epoch
        let resumed = try await slow.broker.recover(
            channel: "feed", since: StreamPosition(offset: received.last ?? 0, epoch: epoch), options: options,
            on: caller
        ).get()
        #expect(resumed.recovered)
        #expect(resumed.publications.map(\.offset) == Array(((received.last ?? 0) + 1)...last))
        // And live traffic flows again.
        let next = try await publisher.broker.publish(
            channel: "feed", data: "1", user: nil, options: options, on: caller
        )
        .get()
        try await eventually("live again") { slow.handler.offsets("feed").last == next.offset }
        await slow.stop()
        await publisher.stop()
    }

    @Test func publishesFailWithAnErrorWhileRedisIsDownAndWorkAfter() async throws {
        let redis = try await RedisServerProcess.start()
        let a = TestNode([redis], id: "a")
        try await a.start()
        _ = try await a.broker.publish(channel: "c", data: "1", user: nil, options: Self.history, on: caller).get()
        try await redis.stopAndWait()
        await #expect(throws: RedisError.self) {
            _ = try await a.broker.publish(channel: "c", data: "2", user: nil, options: Self.history, on: caller).get()
        }
        try await eventually("the node to report Redis unreachable") { await a.broker.unreachable() != nil }
        let again = try await RedisServerProcess.start(port: redis.port)
        defer { again.stop() }
        try await eventually("the node to report Redis reachable") { await a.broker.unreachable() == nil }
        try await eventually("publishing again") {
            (try? await a.broker.publish(channel: "c", data: "3", user: nil, options: Self.history, on: self.caller)
                .get()) != nil
        }
        await a.stop()
    }

    /// A publish that reached Redis but got no answer (Redis paused past the timeout) may have been made:
    /// the broker says so, and it is in history once Redis resumes. One refused while Redis is down was
    /// not made, and says only that it failed.
    @Test func aPublishWithoutAnswerSaysItMayHaveBeenMade() async throws {
        let redis = try await RedisServerProcess.start()
        defer {
            redis.signal(SIGCONT)
            redis.stop()
        }
        let a = TestNode([redis], id: "a") { $0.redis[0].commandTimeout = .milliseconds(500) }
        try await a.start()
        _ = try await a.broker.publish(channel: "c", data: "1", user: nil, options: Self.history, on: caller).get()
        redis.signal(SIGSTOP)
        await #expect(throws: BrokerError.outcomeUnknown) {
            _ = try await a.broker.publish(channel: "c", data: "2", user: nil, options: Self.history, on: caller).get()
        }
        redis.signal(SIGCONT)
        try await eventually("the unanswered publish in history") {
            let page = try? await a.broker.history(
                channel: "c", since: nil, limit: 10, options: Self.history, on: caller
            )
            .get()
            return page?.publications.map(\.data) == ["1", "2"]
        }
        #expect(ProtocolError.publishFailure(BrokerError.outcomeUnknown) == .unavailableMaybePublished)
        #expect(ProtocolError.publishFailure(RedisError.connectionLost) == .unavailable)
        await a.stop()
    }

    /// Sentinel: the node finds the primary through the sentinel and, when it dies, follows the failover
    /// to the promoted replica. The replica is another Redis process, so every channel starts a new epoch
    /// there: a client's position from before is told `recovered: false`, whatever the replica had.
    @Test func aSentinelFailoverIsFollowedAndStartsANewEpoch() async throws {
        let primary = try await RedisServerProcess.start()
        let replica = try await RedisServerProcess.start(["--replicaof", "127.0.0.1", "\(primary.port)"])
        defer { replica.stop() }
        let sentinel = try await RedisServerProcess.startSentinel(monitoring: primary.port)
        defer { sentinel.stop() }
        let asker = RedisClient(configuration: sentinel.configuration, connections: 1, group: caller)
        try await eventually("the sentinel knows the replica") {
            let replicas = try? await asker.send(["SENTINEL", "replicas", "primary"]).get()
            return (replicas?.elements?.count ?? 0) >= 1
        }
        var address = try RedisConfiguration(url: "redis+sentinel://127.0.0.1:\(sentinel.port)/primary")
        address.commandTimeout = .milliseconds(500)
        address.connectTimeout = .milliseconds(500)
        address.pingInterval = .milliseconds(200)
        let a = TestNode([], id: "a") { $0.redis = [address] }
        try await a.start()
        try await a.broker.subscribe(channel: "c", on: caller).get()
        var held: Publication?
        for data in ["1", "2"] {
            held = try await a.broker.publish(channel: "c", data: data, user: nil, options: Self.history, on: caller)
                .get()
        }
        try await eventually("both on the node") { a.handler.offsets("c").count == 2 }

        try await primary.stopAndWait()
        var after: Publication?
        try await eventually(timeout: .seconds(30), "publishing on the promoted replica") {
            after = try? await a.broker.publish(channel: "c", data: "3", user: nil, options: Self.history, on: caller)
                .get()
            return after != nil
        }
        let promoted = RedisClient(configuration: replica.configuration, connections: 1, group: caller)
        #expect(try await promoted.send(["ROLE"]).get().elements?.first?.string == "master")
        await promoted.close()
        #expect(after?.epoch != held?.epoch, "a new epoch on another Redis process")
        let recovery = try await a.broker.recover(
            channel: "c", since: StreamPosition(offset: 2, epoch: held?.epoch ?? ""), options: Self.history, on: caller
        ).get()
        #expect(!recovery.recovered)
        try await eventually("the node receives from the new primary") {
            _ = try? await a.broker.publish(channel: "c", data: "4", user: nil, options: Self.history, on: caller).get()
            return a.handler.events("c").contains { if case .publication(_, "4") = $0 { true } else { false } }
        }
        await asker.close()
        await a.stop()
    }

    @Test func channelsSpreadOverSeveralRedisInstances() async throws {
        let first = try await RedisServerProcess.start()
        let second = try await RedisServerProcess.start()
        defer {
            first.stop()
            second.stop()
        }
        let a = TestNode([first, second], id: "a")
        let b = TestNode([first, second], id: "b")
        try await a.start()
        try await b.start()
        let channels = (0..<40).map { "chat:\($0)" }
        for channel in channels { try await a.broker.subscribe(channel: channel, on: caller).get() }
        for channel in channels {
            _ = try await b.broker.publish(channel: channel, data: "1", user: nil, options: Self.history, on: caller)
                .get()
        }
        try await eventually("every channel delivered") { channels.allSatisfy { a.handler.offsets($0) == [1] } }
        var perInstance: [Int] = []
        for redis in [first, second] {
            let admin = RedisClient(configuration: redis.configuration, connections: 1, group: a.group)
            perInstance.append(Int(try await admin.send(["DBSIZE"]).get().int ?? 0))
            await admin.close()
        }
        // Two keys per channel (meta, history), each channel on one instance.
        #expect(perInstance.reduce(0, +) == 80 && perInstance.allSatisfy { $0 >= 20 }, "\(perInstance)")
        await a.stop()
        await b.stop()
    }

    @Test func presenceIsSharedCountedAndExpiresWithItsNode() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let ttl: (inout ClusterConfiguration) -> Void = { $0.presenceTTL = .seconds(1) }
        let a = TestNode([redis], id: "a", configure: ttl)
        let b = TestNode([redis], id: "b", configure: ttl)
        try await a.start()
        try await b.start()
        a.presence.start(on: a.group.next())
        b.presence.start(on: b.group.next())
        let ada = PresenceMember(client: ConnectionID(shard: 0, sequence: 1), user: "ada", data: "{\"n\":1}", node: "a")
        let ada2 = PresenceMember(client: ConnectionID(shard: 1, sequence: 2), user: "ada", node: "a")
        // Same connection id on another node: a different member.
        let bob = PresenceMember(client: ConnectionID(shard: 0, sequence: 1), user: "bob", node: "b")
        #expect(try await a.presence.add(ada, to: "room", on: caller).get() == 1)
        #expect(try await a.presence.add(ada2, to: "room", on: caller).get() == 2)
        #expect(try await b.presence.add(bob, to: "room", on: caller).get() == 3)
        #expect(try await a.presence.add(ada, to: "room", on: caller).get() == 3, "adding again refreshes")
        let snapshot = try await b.presence.presence(channel: "room", on: caller).get()
        #expect(snapshot.connections == 3 && snapshot.users == 2)
        #expect(Set(snapshot.members) == [ada, ada2, bob])
        let counts = try await a.presence.presenceCounts(channel: "room", on: caller).get()
        #expect(counts == PresenceSnapshot(members: [], connections: 3, users: 2))
        #expect(try await a.presence.remove(ada2, from: "room", on: caller).get() == 2)
        #expect(try await a.presence.remove(ada2, from: "room", on: caller).get() == nil)
        // B dies (stops refreshing): its member expires within the TTL; A's stay, refreshed.
        b.presence.stop()
        // Within the 1 s TTL plus one refresh interval, with 2 s for a busy machine (the 60 s default would fail).
        try await eventually(timeout: .seconds(3.4), "bob expired") {
            try await a.presence.presenceCounts(channel: "room", on: caller).get().connections == 1
        }
        let left = try await a.presence.presence(channel: "room", on: caller).get()
        #expect(left.members == [ada] && left.users == 1)
        try await Task.sleep(for: .seconds(2))  // two TTLs: ada is still there because A refreshes her
        #expect(try await a.presence.presenceCounts(channel: "room", on: caller).get().connections == 1)
        await a.stop()
        await b.stop()
    }
}
