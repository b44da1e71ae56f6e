import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardRedis
import SwitchboardServer
import SwitchboardTestSupport
import Testing

@testable import SwitchboardCluster

/// Records the commands other nodes sent and describes itself with a fixed count.
final class RecordingNode: NodeControlHandler {
    let id: String
    // Lock: guards the commands, appended on the control subscriber's loop.
    private let received = NIOLockedValueBox<[NodeCommand]>([])

    init(id: String) { self.id = id }

    func apply(_ command: NodeCommand) { received.withLockedValue { $0.append(command) } }

    func describe(on eventLoop: any EventLoop) -> EventLoopFuture<NodeInfo> {
        eventLoop.makeSucceededFuture(
            NodeInfo(
                id: id, name: "node \(id)", connections: id.count, users: 0, channels: 0, subscriptions: 0,
                uptimeSeconds: 1))
    }

    var commands: [NodeCommand] { received.withLockedValue { $0 } }
}

@Suite("Node control", .serialized, .timeLimit(.minutes(5)))
struct NodeControlTests {
    let caller = MultiThreadedEventLoopGroup.singleton.next()

    private func node(
        _ id: String, _ redis: RedisServerProcess, group: any EventLoopGroup, through proxy: FaultProxy? = nil
    ) async throws -> (RedisNodeControl, RedisBroker, RecordingNode) {
        var redisConfiguration = redis.configuration
        if let proxy {
            redisConfiguration.port = proxy.port
            redisConfiguration.pingInterval = .milliseconds(200)
            redisConfiguration.commandTimeout = .milliseconds(500)
            redisConfiguration.connectTimeout = .milliseconds(500)
        }
        var configuration = ClusterConfiguration(redis: [redisConfiguration])
        configuration.backoff = Backoff(initial: .milliseconds(20), maximum: .milliseconds(200))
        configuration.nodeID = id
        configuration.nodeInfoInterval = .milliseconds(200)
        var logger = Logger(label: "control-test")
        logger.logLevel = .critical
        let broker = RedisBroker(configuration: configuration, group: group, logger: logger)
        let control = RedisNodeControl(broker: broker, group: group, logger: logger)
        let handler = RecordingNode(id: id)
        control.attach(handler)
        try await control.start().get()
        return (control, broker, handler)
    }

    @Test func commandsReachTheOtherNodesAndNodeInfoListsTheLiveOnes() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let groups = [MultiThreadedEventLoopGroup(numberOfThreads: 1), MultiThreadedEventLoopGroup(numberOfThreads: 1)]
        let (a, brokerA, nodeA) = try await node("a", redis, group: groups[0])
        let (b, brokerB, nodeB) = try await node("bb", redis, group: groups[1])
        try await eventually("both nodes listed on both") {
            let onA = try await a.nodes(on: caller).get().map(\.id)
            let onB = try await b.nodes(on: caller).get().map(\.id)
            return onA == ["a", "bb"] && onB == ["a", "bb"]
        }
        #expect(try await b.nodes(on: caller).get().first?.connections == 1, "what node a said of itself")
        let commands: [NodeCommand] = [
            .send(user: "ada", data: "{\"x\":[1,\"é\"]}"),
            .disconnectUser(user: "ada", code: 4100, reason: "bye", reconnect: false),
            .disconnectClient(node: "bb", client: 42, code: 4000, reason: "r", reconnect: true),
            .subscribe(user: "ada", channel: "chat:a"), .unsubscribe(user: "ada", channel: "chat:a"),
            .refresh(user: "ada", expiresAt: 1.5e9), .refresh(user: "ada", expiresAt: nil),
        ]
        for command in commands { try await a.broadcast(command, on: caller).get() }
        try await eventually("every command on b") { nodeB.commands.count == commands.count }
        #expect(nodeB.commands == commands)
        #expect(nodeA.commands.isEmpty, "a node applies its own commands directly, never twice")
        // A node that stops announcing itself leaves the list after three intervals.
        await b.shutdown()
        await brokerB.shutdown()
        try await eventually("b gone") { try await a.nodes(on: caller).get().map(\.id) == ["a"] }
        await a.shutdown()
        await brokerA.shutdown()
        for group in groups { try await group.shutdownGracefully() }
    }

    /// A revocation published while a node's control link is down (here: silent, then refusing to carry
    /// anything) reaches that node once its link is back, exactly once and in order, from the log.
    @Test func commandsPublishedWhileANodeIsCutOffReachItWhenItIsBack() async throws {
        let redis = try await RedisServerProcess.start()
        defer { redis.stop() }
        let proxy = try await FaultProxy.start(to: redis.port)
        let groups = [MultiThreadedEventLoopGroup(numberOfThreads: 1), MultiThreadedEventLoopGroup(numberOfThreads: 1)]
        let (a, brokerA, _) = try await node("a", redis, group: groups[0])
        let (b, brokerB, nodeB) = try await node("b", redis, group: groups[1], through: proxy)
        let before = NodeCommand.disconnectUser(user: "ada", code: 4100, reason: "before", reconnect: false)
        try await a.broadcast(before, on: caller).get()
        try await eventually("the first command on b") { nodeB.commands == [before] }

        proxy.set(.blackhole)
        try await eventually(timeout: .seconds(20), "b's control link found dead") { await b.unreachable() != nil }
        let missed: [NodeCommand] = [
            .disconnectUser(user: "ada", code: 4100, reason: "revoked", reconnect: false),
            .unsubscribe(user: "bob", channel: "chat:secret"),
        ]
        for command in missed { try await a.broadcast(command, on: caller).get() }
        proxy.set(.pass)
        try await eventually(timeout: .seconds(20), "the missed commands on b") { nodeB.commands.count >= 3 }
        let after = NodeCommand.send(user: "ada", data: "1")
        try await a.broadcast(after, on: caller).get()
        try await eventually("the next live command on b") { nodeB.commands.count >= 4 }
        #expect(nodeB.commands == [before] + missed + [after], "each once, in order")
        await b.shutdown()
        await brokerB.shutdown()
        await a.shutdown()
        await brokerA.shutdown()
        await proxy.stop()
        for group in groups { try await group.shutdownGracefully() }
    }
}
