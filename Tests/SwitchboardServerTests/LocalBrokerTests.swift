import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardServer
import Testing

/// Records what the broker fans out.
final class RecordingDelivery: BrokerDelivery {
    // Lock: guards the records, written by whichever thread publishes.
    private let records = NIOLockedValueBox<(publications: [Int], presence: [Bool])>(([], []))
    func deliver(_ publication: Publication, channel: String) {
        records.withLockedValue { $0.publications.append(publication.offset) }
    }
    func deliverPresence(joined: Bool, member: PresenceMember, channel: String) {
        records.withLockedValue { $0.presence.append(joined) }
    }
    var publications: [Int] { records.withLockedValue { $0.publications } }
    var presence: [Bool] { records.withLockedValue { $0.presence } }
}

@Suite("Local broker")
struct LocalBrokerTests {
    let loop = MultiThreadedEventLoopGroup.singleton.next()

    @Test func aChannelWithNothingToKeepIsForgotten() async throws {
        let broker = LocalBroker()
        let options = NamespaceOptions()  // no history, no presence
        _ = try await broker.subscribe(channel: "room", since: nil, options: options, on: loop).get()
        _ = try await broker.publish(channel: "room", data: "1", user: nil, options: options, on: loop).get()
        #expect(broker.channelCount == 1)
        broker.unsubscribe(channel: "room", options: options, on: loop)
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

    @Test func publicationsAreDeliveredOnlyWhileSubscribedAndInOffsetOrder() async throws {
        let broker = LocalBroker()
        let delivery = RecordingDelivery()
        broker.attach(delivery)
        let options = NamespaceOptions()
        // Published before anyone subscribed: not delivered (and, without history, not kept either).
        _ = try await broker.publish(channel: "c", data: "0", user: nil, options: options, on: loop).get()
        let snapshot = try await broker.subscribe(channel: "c", since: nil, options: options, on: loop).get()
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

    @Test func joinAndLeaveStopInABigRoom() {
        let broker = LocalBroker()
        let delivery = RecordingDelivery()
        broker.attach(delivery)
        var options = NamespaceOptions()
        options.presence = true
        options.joinLeave = true
        options.joinLeaveMaxMembers = 2
        let members = (1...3).map {
            PresenceMember(client: ConnectionID(shard: 0, sequence: UInt64($0)), user: "u\($0)")
        }
        for member in members { broker.join(channel: "hall", member: member, options: options) }
        #expect(delivery.presence == [true, true])  // the third join is not pushed
        broker.leave(channel: "hall", member: members[2], options: options)
        #expect(delivery.presence == [true, true])  // still at the cutoff: not pushed
        broker.leave(channel: "hall", member: members[1], options: options)
        #expect(delivery.presence == [true, true, false])
    }
}
