import NIOCore
import SwitchboardClient
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// Many clients subscribing, unsubscribing, publishing and leaving at once, on two event loops.
@Suite("Subscription churn", .timeLimit(.minutes(5)))
struct ChurnTests {
    /// SplitMix64: the same operations on every run.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// What one client saw of one channel while subscribed: offsets must only grow.
    struct Subscription {
        var lastOffset = 0
        var violations: [String] = []
    }

    @Test func publicationsArriveOnlyWhileSubscribedInOrderAndNothingIsLeftBehind() async throws {
        let broker = LocalBroker()
        let presence = LocalPresence()
        let server = try await ChannelsServer.start(broker: broker, presence: presence)
        let channels = ["plain1", "plain2", "plain3", "big:hall1", "big:hall2"]
        let (violations, received) = try await withThrowingTaskGroup(of: ([String], Int).self) { group in
            for index in 0..<24 {
                group.addTask {
                    var random = SeededGenerator(state: UInt64(index))
                    let client = try await server.connect(user: "user\(index % 5)")
                    var subscribed: [String: Subscription] = [:]
                    var problems: [String] = []
                    var received = 0
                    func check(_ pushes: [JSONMessage]) {
                        for push in pushes where push.push == "pub" {
                            received += 1
                            guard let channel = push["channel"] as? String, let offset = push.offset else { continue }
                            guard var subscription = subscribed[channel] else {
                                problems.append("client \(index): publication in \(channel) while not subscribed")
                                continue
                            }
                            if offset <= subscription.lastOffset {
                                problems.append(
                                    "client \(index): \(channel) offset \(offset) after \(subscription.lastOffset)")
                            }
                            subscription.lastOffset = offset
                            subscribed[channel] = subscription
                        }
                    }
                    for step in 0..<40 {
                        let channel = channels[Int(random.next() % UInt64(channels.count))]
                        let command: [String: Any]
                        switch random.next() % 4 {
                        case 0: command = ["cmd": "subscribe", "channel": channel]
                        case 1: command = ["cmd": "unsubscribe", "channel": channel]
                        case 2: command = ["cmd": "publish", "channel": channel, "data": ["step": step]]
                        default:
                            command = ["cmd": "presence", "channel": channel.hasPrefix("big:") ? channel : "big:hall1"]
                        }
                        let (reply, pushes) = try await client.call(command)
                        check(pushes)
                        let ok = reply.ok != nil
                        if ok, command["cmd"] as? String == "subscribe" { subscribed[channel] = Subscription() }
                        if ok, command["cmd"] as? String == "unsubscribe" { subscribed[channel] = nil }
                    }
                    // Half leave with a close handshake, half just drop TCP.
                    if index.isMultiple(of: 2) {
                        client.client.close()
                        _ = try await client.client.waitForClose(timeout: .seconds(20))
                    } else {
                        await client.client.disconnect()
                    }
                    return (problems, received)
                }
            }
            var all: [String] = []
            var received = 0
            for try await (problems, count) in group {
                all += problems
                received += count
            }
            return (all, received)
        }
        #expect(violations.isEmpty, "\(violations.prefix(10))")
        #expect(received > 100, "the churn should have delivered publications to subscribers (got \(received))")
        // Every channel here keeps no history, so once everyone is gone nothing may remain of them:
        // no subscriber counts, no presence entries.
        try await eventually("the broker forgets every channel") {
            broker.channelCount == 0 && presence.channelCount == 0 && server.application.nodeSubscriptionCount == 0
        }
        #expect(try await server.server.hub.statistics().get().registeredConnections == 0)
        await server.stop()
    }
}
