import Logging
import NIOCore
import NIOPosix
import Testing

@testable import SwitchboardServer

/// The node's record of which loops have subscribers to a channel, which decides which loops an event
/// is queued on.
@Suite("Node subscriptions", .timeLimit(.minutes(5)))
struct NodeSubscriptionsTests {
    @Test func anEventGoesOnlyToTheLoopsWithSubscribers() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        let loops = Array(group.makeIterator())
        let subscriptions = NodeSubscriptions(
            broker: LocalBroker(), logger: Logger(label: "test"), timeout: .seconds(10))
        #expect(subscriptions.loops(receiving: "room").isEmpty)
        try await loops[1].submit { subscriptions.acquire("room", loop: 1, on: loops[1]) }.get().get()
        #expect(subscriptions.loops(receiving: "room") == [1])
        #expect(subscriptions.loops(receiving: "other").isEmpty)
        try await loops[0].submit { subscriptions.acquire("room", loop: 0, on: loops[0]) }.get().get()
        #expect(Set(subscriptions.loops(receiving: "room")) == [0, 1])
        try await loops[1].submit { subscriptions.release("room", loop: 1, on: loops[1]) }.get()
        #expect(subscriptions.loops(receiving: "room") == [0])
        #expect(subscriptions.count == 1)
        try await loops[0].submit { subscriptions.release("room", loop: 0, on: loops[0]) }.get()
        #expect(subscriptions.loops(receiving: "room").isEmpty)
        #expect(subscriptions.count == 0)
        try await group.shutdownGracefully()
    }
}
