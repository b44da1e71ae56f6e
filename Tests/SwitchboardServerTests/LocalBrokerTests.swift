import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// Records what the broker fans out.
final class RecordingDelivery: BrokerEventHandler {
    // Lock: guards the records, written by whichever thread publishes.
    private let records = NIOLockedValueBox<(publications: [Int], presence: [Bool])>(([], []))
    func handlePublication(_ publication: Publication, channel: String) {
        records.withLockedValue { $0.publications.append(publication.offset) }
    }
    func handleJoin(_ member: PresenceMember, channel: String) {
        records.withLockedValue { $0.presence.append(true) }
    }
    func handleLeave(_ member: PresenceMember, channel: String) {
        records.withLockedValue { $0.presence.append(false) }
    }
    func handleResynchronize(channel: String) {
        Issue.record("the in-process broker never loses continuity")
    }
    var publications: [Int] { records.withLockedValue { $0.publications } }
    var presence: [Bool] { records.withLockedValue { $0.presence } }
}

@Suite("Local broker", .timeLimit(.minutes(5)))
struct LocalBrokerTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    @Test func aChannelWithNothingToKeepIsForgotten() async throws {
        let broker = LocalBroker()
        let options = NamespaceOptions()  // no history, no presence
        try await broker.subscribe(channel: "room", on: loop).get()
        _ = try await broker.publish(channel: "room", data: "1", user: nil, options: options, on: loop).get()
        #expect(broker.channelCount == 1)
        try await broker.unsubscribe(channel: "room", on: loop).get()
        #expect(broker.channelCount == 0)
        // Publishing to a channel nobody listens to leaves nothing behind either.
        _ = try await broker.publish(channel: "void", data: "1", user: nil, options: options, on: loop).get()
        #expect(broker.channelCount == 0)
    }

    @Test func historyExpiresAfterItsTTLWhileOffsetsCarryOn() async throws {
        let broker = LocalBroker()
        var options = NamespaceOptions()
        options.historySize = 10
        options.historyTTL = .milliseconds(100)
        for index in 1...3 {
            _ = try await broker.publish(channel: "news", data: "\(index)", user: nil, options: options, on: loop).get()
        }
        let fresh = try await broker.history(channel: "news", since: nil, limit: 10, options: options, on: loop).get()
        #expect(fresh.publications.map(\.offset) == [1, 2, 3])
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(20)
        var remaining = fresh.publications.count
        while remaining > 0, clock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
            remaining = try await broker.history(channel: "news", since: nil, limit: 10, options: options, on: loop)
                .get().publications.count
        }
        #expect(remaining == 0)
        // The offset survives expiry: the next publication is 4, not a second 1 in the same epoch.
        let next = try await broker.publish(channel: "news", data: "4", user: nil, options: options, on: loop).get()
        #expect(next.offset == 4)
    }

    /// A repeat within the window answers the first offset and delivers nothing; a channel without history
    /// keeps its keys too (it is not forgotten while they last); past the window the key publishes again.
    @Test func anIdempotentPublishIsMadeOnceWithinItsWindow() async throws {
        let broker = LocalBroker()
        let delivery = RecordingDelivery()
        broker.attach(delivery)
        try await broker.subscribe(channel: "pay", on: loop).get()
        let options = NamespaceOptions()
        let key = IdempotencyKey("k1", window: .milliseconds(300))
        func publish(_ channel: String, _ key: IdempotencyKey?) async throws -> Publication {
            try await broker.publish(
                channel: channel, data: "1", user: nil, options: options, idempotency: key, on: loop
            ).get()
        }
        let first = try await publish("pay", key)
        let repeated = try await publish("pay", key)
        #expect((first.offset, first.isRepeat) == (1, false))
        #expect((repeated.offset, repeated.isRepeat) == (1, true))
        #expect(try await publish("pay", IdempotencyKey("k2")).offset == 2)
        #expect(try await publish("pay", nil).offset == 3)
        #expect(delivery.publications == [1, 2, 3])
        // Nobody subscribes and no history: the channel stays while its key does.
        _ = try await publish("quiet", key)
        #expect(try await publish("quiet", key).isRepeat)
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await publish("pay", key).offset == 4, "past its window the key publishes again")
    }

    /// A publication left out of history (the publish proxy's skip_history) is a hole: recovering across it
    /// is not complete; from after it, it is.
    @Test func recoveryAcrossAPublicationLeftOutOfHistoryIsNotComplete() async throws {
        let broker = LocalBroker()
        var options = NamespaceOptions()
        options.historySize = 10
        var skipping = options
        skipping.historySize = 0
        for (index, kept) in [true, false, true].enumerated() {
            _ = try await broker.publish(
                channel: "c", data: "\(index)", user: nil, options: kept ? options : skipping, on: loop
            ).get()
        }
        let epoch = try await broker.recover(channel: "c", since: nil, options: options, on: loop).get().epoch
        func recovered(from offset: Int) async throws -> Bool {
            try await broker.recover(
                channel: "c", since: StreamPosition(offset: offset, epoch: epoch), options: options, on: loop
            ).get().recovered
        }
        #expect(try await recovered(from: 0) == false)
        #expect(try await recovered(from: 1) == false)
        #expect(try await recovered(from: 2) == true)
        #expect(try await recovered(from: 3) == true)
    }

    @Test func publicationsAreDeliveredOnlyWhileSubscribedAndInOffsetOrder() async throws {
        let broker = LocalBroker()
        let delivery = RecordingDelivery()
        broker.attach(delivery)
        let options = NamespaceOptions()
        // Published before anyone subscribed: not delivered (and, without history, not kept either).
        _ = try await broker.publish(channel: "c", data: "0", user: nil, options: options, on: loop).get()
        try await broker.subscribe(channel: "c", on: loop).get()
        let snapshot = try await broker.recover(channel: "c", since: nil, options: options, on: loop).get()
        await withTaskGroup(of: Void.self) { group in
            for index in 0..<100 {
                group.addTask {
                    _ = try? await broker.publish(channel: "c", data: "\(index)", user: nil, options: options, on: loop)
                        .get()
                }
            }
        }
        #expect(delivery.publications == Array((snapshot.offset + 1)...(snapshot.offset + 100)))
    }

    @Test func joinAndLeaveReachTheNodeOnlyWhileSubscribedInOrderWithPublications() async throws {
        let broker = LocalBroker()
        let delivery = RecordingDelivery()
        broker.attach(delivery)
        let member = PresenceMember(client: ConnectionID(shard: 0, sequence: 1), user: "u")
        try await broker.publishJoin(channel: "hall", member: member, on: loop).get()
        #expect(delivery.presence.isEmpty)
        try await broker.subscribe(channel: "hall", on: loop).get()
        try await broker.publishJoin(channel: "hall", member: member, on: loop).get()
        try await broker.publishLeave(channel: "hall", member: member, on: loop).get()
        #expect(delivery.presence == [true, false])
    }

    @Test func presenceCountsMembersInPlace() async throws {
        let presence = LocalPresence()
        let members = (1...3).map {
            PresenceMember(client: ConnectionID(shard: 0, sequence: UInt64($0)), user: $0 == 3 ? "u2" : "u\($0)")
        }
        var counts: [Int] = []
        for member in members { counts.append(try await presence.add(member, to: "hall", on: loop).get()) }
        #expect(counts == [1, 2, 3])
        #expect(try await presence.add(members[0], to: "hall", on: loop).get() == 3, "adding again refreshes")
        let snapshot = try await presence.presence(channel: "hall", on: loop).get()
        #expect(snapshot.connections == 3 && snapshot.users == 2)
        #expect(try await presence.remove(members[1], from: "hall", on: loop).get() == 2)
        #expect(try await presence.remove(members[1], from: "hall", on: loop).get() == nil)
        _ = try await presence.remove(members[0], from: "hall", on: loop).get()
        _ = try await presence.remove(members[2], from: "hall", on: loop).get()
        #expect(presence.channelCount == 0)
    }

    /// History is bounded in bytes per channel: large messages push out the oldest, and a recovery from
    /// before them is told `recovered: false`.
    @Test func historyIsBoundedInBytesPerChannel() async throws {
        let broker = LocalBroker()
        var options = NamespaceOptions()
        options.historySize = 100
        options.historyMaxBytes = 3000
        let big = String(repeating: "x", count: 1000)
        for _ in 0..<10 {
            _ = try await broker.publish(channel: "c", data: "\"\(big)\"", user: nil, options: options, on: loop).get()
        }
        let page = try await broker.history(channel: "c", since: nil, limit: 100, options: options, on: loop).get()
        #expect(page.publications.map(\.offset) == [9, 10])
        #expect(broker.historyBytes <= 3000)
        let recovery = try await broker.recover(
            channel: "c", since: StreamPosition(offset: 1, epoch: page.epoch), options: options, on: loop
        ).get()
        #expect(!recovery.recovered)
        // One larger than the bound is not kept at all; the offsets still say what was missed.
        let huge = String(repeating: "y", count: 5000)
        _ = try await broker.publish(channel: "c", data: "\"\(huge)\"", user: nil, options: options, on: loop).get()
        let after = try await broker.recover(
            channel: "c", since: StreamPosition(offset: 10, epoch: page.epoch), options: options, on: loop
        ).get()
        #expect(!after.recovered && after.offset == 11)
    }

    /// ... and over the whole node: one client publishing large messages to fresh channels cannot grow
    /// the process past the node's bound.
    @Test func historyIsBoundedInBytesOverTheNode() async throws {
        let broker = LocalBroker(maxHistoryBytes: 20_000)
        var options = NamespaceOptions()
        options.historySize = 100
        let big = "\"" + String(repeating: "z", count: 1000) + "\""
        for index in 0..<200 {
            _ = try await broker.publish(channel: "fresh\(index)", data: big, user: nil, options: options, on: loop)
                .get()
            #expect(broker.historyBytes <= 20_000)
        }
        try await broker.removeHistory(channel: "fresh199", on: loop).get()
        #expect(broker.historyBytes < 20_000, "removed history gives its bytes back")
    }

    /// History that expired in channels nobody touches again gives its bytes back, so other channels keep
    /// theirs: the budget is swept when it runs full.
    @Test func expiredHistoryInUntouchedChannelsIsSweptWhenTheBudgetIsFull() async throws {
        let broker = LocalBroker(maxHistoryBytes: 20_000)
        var shortLived = NamespaceOptions()
        shortLived.historySize = 100
        shortLived.historyTTL = .milliseconds(50)
        let big = "\"" + String(repeating: "z", count: 1000) + "\""
        for index in 0..<30 {
            _ = try await broker.publish(channel: "old\(index)", data: big, user: nil, options: shortLived, on: loop)
                .get()
        }
        #expect(broker.historyBytes > 18_000)
        try await Task.sleep(for: .milliseconds(1100))  // past the TTL and the sweep interval
        var options = NamespaceOptions()
        options.historySize = 100
        try await eventually("a new channel keeps its history") {
            _ = try await broker.publish(channel: "new", data: big, user: nil, options: options, on: loop).get()
            let page = try await broker.history(channel: "new", since: nil, limit: 10, options: options, on: loop).get()
            return !page.publications.isEmpty
        }
        #expect(broker.historyBytes < 20_000)
    }
}
