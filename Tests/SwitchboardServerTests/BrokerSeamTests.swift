import Atomics
import Foundation
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardServer

/// A broker and presence that answer from another event loop group after a delay, as a networked one
/// (Redis) would, and count the node-level calls. State changes happen at once, in call order, in a
/// `LocalBroker`; only the answers are late.
final class RemoteBroker: Broker, PresenceManager {
    /// Lives as long as the test process: NIO forbids shutting a group down with work outstanding, and
    /// answers may still be on their way when a test ends.
    static let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let inner = LocalBroker()
    let innerPresence = LocalPresence()
    let delay: TimeAmount
    let subscribes = ManagedAtomic(0)
    let unsubscribes = ManagedAtomic(0)
    /// Answers not yet delivered.
    let outstanding = ManagedAtomic(0)
    /// Stream reads (`recover`) sent and not yet answered, and the most there ever were at once.
    let recoversInFlight = ManagedAtomic(0)
    let mostRecoversInFlight = ManagedAtomic(0)
    /// This many stream reads fail (as a store timing out would) before they succeed again.
    let failingRecovers = ManagedAtomic(0)

    init(delay: TimeAmount) { self.delay = delay }

    /// The value of `future`, delivered on the other group after the delay.
    private func late<T: Sendable>(_ future: EventLoopFuture<T>) -> EventLoopFuture<T> {
        let loop = Self.group.next()
        let delay = self.delay
        let outstanding = self.outstanding
        outstanding.wrappingIncrement(ordering: .relaxed)
        let answer = future.hop(to: loop).flatMap { value in loop.scheduleTask(in: delay) { value }.futureResult }
        answer.whenComplete { _ in outstanding.wrappingDecrement(ordering: .relaxed) }
        return answer
    }

    private var here: any EventLoop { Self.group.next() }

    /// Waits until every answer has been delivered: call before stopping the server, so that none is left
    /// to hop onto its stopped loops.
    func shutdown() async throws {
        try await eventually("the broker's answers are delivered") { outstanding.load(ordering: .relaxed) == 0 }
    }

    func attach(_ handler: any BrokerEventHandler) { inner.attach(handler) }
    func subscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        subscribes.wrappingIncrement(ordering: .relaxed)
        return late(inner.subscribe(channel: channel, on: here))
    }
    func unsubscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        unsubscribes.wrappingIncrement(ordering: .relaxed)
        return late(inner.unsubscribe(channel: channel, on: here))
    }
    func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, idempotency: IdempotencyKey?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        late(
            inner.publish(
                channel: channel, data: data, user: user, options: options, idempotency: idempotency, on: here))
    }
    func publishJoin(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        late(inner.publishJoin(channel: channel, member: member, on: here))
    }
    func publishLeave(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        late(inner.publishLeave(channel: channel, member: member, on: here))
    }
    func recover(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot> {
        let now = recoversInFlight.wrappingIncrementThenLoad(ordering: .relaxed)
        var most = mostRecoversInFlight.load(ordering: .relaxed)
        while now > most {
            let (exchanged, original) = mostRecoversInFlight.compareExchange(
                expected: most, desired: now, ordering: .relaxed)
            if exchanged { break }
            most = original
        }
        let read =
            failingRecovers.loadThenWrappingDecrement(ordering: .relaxed) > 0
            ? here.makeFailedFuture(StoreTimedOut())
            : inner.recover(channel: channel, since: since, options: options, on: here)
        let answer = late(read)
        answer.whenComplete { [recoversInFlight] _ in recoversInFlight.wrappingDecrement(ordering: .relaxed) }
        return answer
    }
    func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<HistoryPage> {
        late(inner.history(channel: channel, since: since, limit: limit, options: options, on: here))
    }
    func removeHistory(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        late(inner.removeHistory(channel: channel, on: here))
    }
    func add(_ member: PresenceMember, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        late(innerPresence.add(member, to: channel, on: here))
    }
    func remove(_ member: PresenceMember, from channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int?> {
        late(innerPresence.remove(member, from: channel, on: here))
    }
    func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        late(innerPresence.presence(channel: channel, on: here))
    }

}

struct StoreTimedOut: Error {}

/// The channel layer against a broker and presence on another event loop group that answer late.
@Suite("Broker seam", .timeLimit(.minutes(5)))
struct BrokerSeamTests {
    private func start(_ broker: RemoteBroker) async throws -> ChannelsServer {
        try await ChannelsServer.start(broker: broker, presence: broker)
    }

    @Test func everyCommandWorksWhenTheBrokerAnswersLateFromAnotherGroup() async throws {
        let broker = RemoteBroker(delay: .milliseconds(30))
        let server = try await start(broker)
        let ada = try await server.connect(user: "ada")
        let bob = try await server.connect(user: "bob")
        #expect(try await ada.call(["cmd": "subscribe", "channel": "chat:late"]).reply.ok?["offset"] as? Int == 0)
        let published = try await bob.call(["cmd": "publish", "channel": "chat:late", "data": ["n": 1]]).reply
        #expect(published.ok?["offset"] as? Int == 1)
        #expect(try await ada.nextPush("pub").offset == 1)
        let presence = try await bob.call(["cmd": "presence", "channel": "chat:late"]).reply
        #expect(presence.ok?["connections"] as? Int == 1)
        let history = try await bob.call(["cmd": "history", "channel": "chat:late"]).reply
        #expect((history.ok?["publications"] as? [[String: Any]])?.count == 1)
        let recovered = try await bob.call([
            "cmd": "subscribe", "channel": "chat:late",
            "recover": ["offset": 0, "epoch": history.ok?["epoch"] as? String ?? ""],
        ]).reply
        #expect(recovered.ok?["recovered"] as? Bool == true)
        #expect((recovered.ok?["publications"] as? [[String: Any]])?.count == 1)
        try await broker.shutdown()
        await server.stop()
    }

    /// Before: the first subscribe's late answer took over the second subscription and the third command
    /// never got its reply.
    @Test func subscribeUnsubscribeSubscribeGetsThreeRepliesInOrderAndEndsSubscribed() async throws {
        let broker = RemoteBroker(delay: .milliseconds(100))
        let server = try await start(broker)
        let client = try await server.connect(user: "ada")
        let ids = [
            client.send(["cmd": "subscribe", "channel": "chat:race"]),
            client.send(["cmd": "unsubscribe", "channel": "chat:race"]),
            client.send(["cmd": "subscribe", "channel": "chat:race"]),
        ]
        var replies: [JSONMessage] = []
        while replies.count < 3 {
            let message = try await client.next()
            if message.id != nil { replies.append(message) }
        }
        #expect(replies.map(\.id) == ids)
        #expect(replies.allSatisfy { $0.ok != nil }, "\(replies.map(\.object))")
        let publisher = try await server.connect(user: "pub")
        _ = try await publisher.call(["cmd": "publish", "channel": "chat:race", "data": 1])
        #expect(try await client.nextPush("pub").offset == 1, "the final state is the last command's: subscribed")
        let (again, _) = try await client.call(["cmd": "subscribe", "channel": "chat:race"])
        #expect(again.errorCode == 107)
        try await broker.shutdown()
        await server.stop()
    }

    /// subscribe → unsubscribe → subscribe against a presence store that answers late: the second add must
    /// not reach the store before the first remove (same client id), or the client stays subscribed but is
    /// missing from presence, and others see join, join, leave.
    @Test func subscribeUnsubscribeSubscribeEndsInPresenceWithJoinLeaveJoin() async throws {
        let broker = RemoteBroker(delay: .milliseconds(100))
        let server = try await start(broker)
        let watcher = try await server.connect(user: "watcher")
        _ = try await watcher.call(["cmd": "subscribe", "channel": "chat:flip"])
        let client = try await server.connect(user: "ada")
        client.send(["cmd": "subscribe", "channel": "chat:flip"])
        client.send(["cmd": "unsubscribe", "channel": "chat:flip"])
        let last = client.send(["cmd": "subscribe", "channel": "chat:flip"])
        while try await client.next().id != last {}
        var seen: [String] = []
        while seen.count < 3 {
            let message = try await watcher.next()
            let user = (message["info"] as? [String: Any])?["user"] as? String
            if let push = message.push, ["join", "leave"].contains(push), user == "ada" { seen.append(push) }
        }
        #expect(seen == ["join", "leave", "join"])
        try await broker.shutdown()  // every late answer delivered
        let presence = try await watcher.call(["cmd": "presence", "channel": "chat:flip"]).reply
        #expect(presence.ok?["connections"] as? Int == 2, "\(presence.object)")
        await server.stop()
    }

    @Test func theNodeSubscribesToAChannelOnceWhateverItsClientsDo() async throws {
        let broker = RemoteBroker(delay: .milliseconds(5))
        let server = try await start(broker)
        var clients: [ProtocolClient] = []
        for index in 0..<10 {
            let client = try await server.connect(user: "u\(index)")
            #expect(try await client.call(["cmd": "subscribe", "channel": "shared"]).reply.ok != nil)
            clients.append(client)
        }
        #expect(broker.subscribes.load(ordering: .relaxed) == 1)
        for client in clients {
            #expect(try await client.call(["cmd": "unsubscribe", "channel": "shared"]).reply.ok != nil)
        }
        try await eventually("the node unsubscribes after the last") {
            broker.unsubscribes.load(ordering: .relaxed) == 1
        }
        #expect(server.application.nodeSubscriptionCount == 0)
        try await broker.shutdown()
        await server.stop()
    }

    /// Pushes follow the order in which the broker delivered them: every publication made before a
    /// join (its offset at or below the joiner's subscribe offset) reaches a subscriber before the join.
    @Test func joinAndLeaveKeepTheirPlaceAmongPublications() async throws {
        let broker = RemoteBroker(delay: .milliseconds(1))
        let server = try await start(broker)
        let watcher = try await server.connect(user: "watcher")
        _ = try await watcher.call(["cmd": "subscribe", "channel": "chat:order"])
        let publisher = try await server.connect(user: "pub")
        for index in 1...300 { publisher.send(["cmd": "publish", "channel": "chat:order", "data": index]) }
        let joiner = try await server.connect(user: "joiner")
        let joined = try await joiner.call(["cmd": "subscribe", "channel": "chat:order"]).reply
        let joinOffset = try #require(joined.ok?["offset"] as? Int)
        _ = try await joiner.call(["cmd": "unsubscribe", "channel": "chat:order"])
        for index in 301...400 { publisher.send(["cmd": "publish", "channel": "chat:order", "data": index]) }
        var offsets: [Int] = []
        var joinAt: Int?
        var leaveAt: Int?
        while offsets.last != 400 {
            let message = try await watcher.next()
            let user = (message["info"] as? [String: Any])?["user"] as? String
            switch message.push {
            case "pub": offsets.append(message.offset ?? -1)
            case "join" where user == "joiner": joinAt = offsets.count
            case "leave" where user == "joiner": leaveAt = offsets.count
            default: break
            }
        }
        #expect(offsets == Array(1...400))
        let join = try #require(joinAt)
        #expect(join >= joinOffset, "publications up to \(joinOffset) came before the join, which came at \(join)")
        #expect(try #require(leaveAt) >= join)
        // Leaving on unsubscribe took the joiner out of presence.
        let presence = try await watcher.call(["cmd": "presence", "channel": "chat:order"]).reply
        #expect(presence.ok?["connections"] as? Int == 1)
        try await broker.shutdown()
        await server.stop()
    }

    /// What a cluster node does when its link to the broker broke (docs/cluster.md): the node misses
    /// publications, the broker says so (`handleResynchronize`), and each subscriber recovers exactly what
    /// it missed from history, while newer publications wait behind the recovery. A second break while the
    /// first recovery is in flight is not lost.
    @Test func aResynchronizationRecoversWhatTheNodeMissedExactlyOnce() async throws {
        let broker = RemoteBroker(delay: .milliseconds(50))
        let server = try await start(broker)
        let ada = try await server.connect(user: "ada")
        let (subscribed, _) = try await ada.call(["cmd": "subscribe", "channel": "chat:resync"])
        let epoch = subscribed.ok?["epoch"] as? String
        let app = server.application
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        for n in 1...2 { _ = try await app.publish(channel: "chat:resync", data: "{\"n\":\(n)}", on: loop).get() }
        #expect(try await ada.nextPush("pub").offset == 1)
        #expect(try await ada.nextPush("pub").offset == 2)
        // The node stops receiving the channel (a broken pub/sub link) while 3 and 4 are published.
        try await broker.inner.unsubscribe(channel: "chat:resync", on: loop).get()
        for n in 3...4 { _ = try await app.publish(channel: "chat:resync", data: "{\"n\":\(n)}", on: loop).get() }
        try await broker.inner.subscribe(channel: "chat:resync", on: loop).get()
        app.events.handleResynchronize(channel: "chat:resync")
        // 5 arrives live while the recovery is in flight; a second break is reported meanwhile.
        _ = try await app.publish(channel: "chat:resync", data: "{\"n\":5}", on: loop).get()
        app.events.handleResynchronize(channel: "chat:resync")
        var offsets: [Int] = []
        var resynchronizations: [JSONMessage] = []
        while resynchronizations.count < 2 || offsets.last != 5 {
            let message = try await ada.next()
            switch message.push {
            case "pub": offsets.append(message.offset ?? -1)
            case "subscribed":
                resynchronizations.append(message)
                #expect(message["recovered"] as? Bool == true && message["epoch"] as? String == epoch)
                let recovered = message["publications"] as? [[String: Any]] ?? []
                offsets += recovered.compactMap { $0["offset"] as? Int }
            default: break
            }
        }
        #expect(offsets == [3, 4, 5], "every missed publication once, in order, then the live one")
        #expect(resynchronizations.count == 2, "the second break got its own recovery")
        // Live again: the next publication arrives as a push.
        _ = try await app.publish(channel: "chat:resync", data: "{\"n\":6}", on: loop).get()
        #expect(try await ada.nextPush("pub").offset == 6)
        try await broker.shutdown()
        await server.stop()
    }

    /// After a store hiccup every channel resynchronizes at once. The reads go to the broker a bounded
    /// number at a time per loop (not one pipeline of thousands that times out together), and a failed
    /// read is tried again rather than closing its subscribers: everyone recovers, no one is closed 1013.
    @Test func aResynchronizationStormIsBoundedAndRetried() async throws {
        let broker = RemoteBroker(delay: .milliseconds(20))
        let server = try await start(broker)
        let channels = (0..<120).map { "chat:storm\($0)" }
        var clients: [ProtocolClient] = []
        for (index, channel) in channels.enumerated() {
            if index % 10 == 0 { clients.append(try await server.connect(user: "u\(index)")) }
            _ = try await clients[clients.count - 1].call(["cmd": "subscribe", "channel": channel])
        }
        broker.mostRecoversInFlight.store(0, ordering: .relaxed)
        broker.failingRecovers.store(5, ordering: .relaxed)
        for channel in channels { server.application.events.handleResynchronize(channel: channel) }
        for client in clients {
            for _ in 0..<10 {
                let push = try await client.nextPush("subscribed")
                #expect(push["recovered"] as? Bool == true)
            }
        }
        let most = broker.mostRecoversInFlight.load(ordering: .relaxed)
        #expect(most >= 1 && most <= 2 * 16, "at most 16 reads per loop at once, saw \(most)")
        #expect(server.server.hub.connectionCount == clients.count, "no subscriber was closed")
        try await broker.shutdown()
        await server.stop()
    }

    /// A resynchronization whose reads keep failing (the store is down again) closes its subscribers 1013
    /// "channel state lost" after the retries, so that each recovers on reconnecting; others stay.
    @Test func aResynchronizationThatKeepsFailingClosesItsSubscribers1013() async throws {
        let broker = RemoteBroker(delay: .milliseconds(10))
        let server = try await start(broker)
        let ada = try await server.connect(user: "ada")
        let bob = try await server.connect(user: "bob")
        _ = try await ada.call(["cmd": "subscribe", "channel": "chat:lost"])
        broker.failingRecovers.store(1_000, ordering: .relaxed)
        server.application.events.handleResynchronize(channel: "chat:lost")
        let notice = try await ada.nextPush("disconnect")
        #expect(notice["code"] as? Int == 1013)
        #expect(notice["reconnect"] as? Bool == true)
        let close = try await ada.client.waitForClose(timeout: .seconds(20))
        #expect(close?.code == 1013)
        #expect(close?.reason == "channel state lost")
        #expect(broker.failingRecovers.load(ordering: .relaxed) == 1_000 - 3, "three reads, then the close")
        #expect(try await bob.call(["cmd": "ping"]).reply.ok != nil, "a connection not in the channel stays")
        try await broker.shutdown()
        await server.stop()
    }

    @Test func theServerPublishesWithoutAConnection() async throws {
        let server = try await ChannelsServer.start()
        let client = try await server.connect(user: "ada")
        _ = try await client.call(["cmd": "subscribe", "channel": "ro:news"])
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let publication = try await server.application.publish(channel: "ro:news", data: #"{"t":"x"}"#, on: loop).get()
        #expect(publication.offset == 1)
        let push = try await client.nextPush("pub")
        #expect((push["data"] as? [String: Any])?["t"] as? String == "x")
        #expect(push["user"] == nil)
        await #expect(throws: ProtocolError.unknownNamespace) {
            _ = try await server.application.publish(channel: "nowhere:x", data: "1", on: loop).get()
        }
        await #expect(throws: ProtocolError.self) {
            _ = try await server.application.publish(channel: "ro:news", data: "{not json", on: loop).get()
        }
        await server.stop()
    }

    @Test func aBrokerThatNeverAnswersGetsError110AfterTheTimeout() async throws {
        let broker = RemoteBroker(delay: .seconds(2))
        let server = try await ChannelsServer.start(broker: broker, presence: broker) { _ in
        } channels: {
            $0.brokerTimeout = .milliseconds(200)
        }
        let client = try await server.connect(user: "ada")
        let (reply, _) = try await client.call(["cmd": "publish", "channel": "chat:slow", "data": 1])
        #expect(reply.errorCode == 110)
        let (subscribed, _) = try await client.call(["cmd": "subscribe", "channel": "chat:slow"])
        #expect(subscribed.errorCode == 110)
        #expect(try await client.call(["cmd": "ping"]).reply.ok != nil, "the connection carries on")
        try await broker.shutdown()
        await server.stop()
    }

    @Test func joinAndLeaveStopAboveTheMemberCutoff() async throws {
        let server = try await ChannelsServer.start(channels: {
            var small = NamespaceOptions()
            small.presence = true
            small.joinLeave = true
            small.joinLeaveMaxMembers = 2
            $0.namespaces["small"] = small
        })
        let watcher = try await server.connect(user: "w")
        _ = try await watcher.call(["cmd": "subscribe", "channel": "small:room"])
        var others: [String: ProtocolClient] = [:]
        for user in ["b", "c"] {
            let client = try await server.connect(user: user)
            _ = try await client.call(["cmd": "subscribe", "channel": "small:room"])
            others[user] = client
        }
        _ = try await others["c"]?.call(["cmd": "unsubscribe", "channel": "small:room"])  // 3 → 2: no leave
        _ = try await others["b"]?.call(["cmd": "unsubscribe", "channel": "small:room"])  // 2 → 1: leave
        var events: [String] = []
        while events.last != "leave b" {
            let message = try await watcher.next()
            let user = (message["info"] as? [String: Any])?["user"] as? String ?? "?"
            if let push = message.push { events.append("\(push) \(user)") }
        }
        #expect(events == ["join w", "join b", "leave b"])
        await server.stop()
    }

    @Test func commandsBeyondTheWaitingBoundGetError109AndTheRestTheirReplies() async throws {
        let broker = RemoteBroker(delay: .milliseconds(300))
        let server = try await start(broker)
        let client = try await server.connect(user: "ada")
        var ids: [Int] = []
        for index in 0..<18 {
            ids.append(client.send(["cmd": index.isMultiple(of: 2) ? "subscribe" : "unsubscribe", "channel": "race"]))
        }
        var codes: [Int: Int?] = [:]
        while codes.count < ids.count {
            let message = try await client.next()
            if let id = message.id { codes[id] = message.errorCode }
        }
        // One in flight, 16 waiting, the 18th refused; the others all succeed, ending unsubscribed.
        #expect(codes[ids[17]] == 109)
        #expect(ids.dropLast().allSatisfy { codes[$0] == .some(nil) })
        try await broker.shutdown()
        await server.stop()
    }
}
