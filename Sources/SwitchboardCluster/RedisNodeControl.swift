import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardRedis
import SwitchboardServer

/// Commands for users and clients on other nodes, and node info, over one Redis pub/sub channel that
/// every node subscribes to (on the first instance). Each node announces itself every
/// `nodeInfoInterval`; one silent for three intervals leaves the list. These messages are few (one per
/// API call, one per node per interval), so they are JSON.
public final class RedisNodeControl: NodeControl {
    public let nodeID: String
    private let configuration: ClusterConfiguration
    private let client: RedisClient
    private let subscriber: RedisSubscriber
    private let logger: Logger
    private let channel: String
    // Lock: guards the handler, attached once at start.
    private let target = NIOLockedValueBox<(any NodeControlHandler)?>(nil)
    // Lock: guards the table of live nodes (id → info and when it was heard).
    private let table = NIOLockedValueBox<[String: (info: NodeInfo, heard: NIODeadline)]>([:])
    private let announcer = NIOLockedValueBox<RepeatedTask?>(nil)

    public init(broker: RedisBroker, group: any EventLoopGroup, logger: Logger) {
        let configuration = broker.configuration
        self.configuration = configuration
        self.nodeID = configuration.nodeID
        self.client = broker.client(forInstance: 0)
        self.logger = logger
        self.channel = "\(configuration.prefix).control"
        let inbox = ControlInbox()
        self.subscriber = RedisSubscriber(
            configuration: configuration.redis[0], eventLoop: group.next(), backoff: configuration.backoff,
            logger: logger, onMessage: { _, payload in inbox.control?.received(payload) },
            onConnectionChange: { _ in })
        inbox.control = self
    }

    public func attach(_ handler: any NodeControlHandler) {
        target.withLockedValue { $0 = handler }
    }

    /// Subscribes to the control channel and starts announcing this node.
    public func start() -> EventLoopFuture<Void> {
        let eventLoop = subscriber.eventLoop
        let interval = configuration.nodeInfoInterval
        let task = eventLoop.scheduleRepeatedAsyncTask(initialDelay: .zero, delay: interval) { _ in
            self.announce(on: eventLoop)
        }
        announcer.withLockedValue { $0 = task }
        return subscriber.start().flatMap { self.subscriber.subscribe(self.channel) }
            .recover { [logger] error in
                logger.warning("control channel not subscribed yet", metadata: ["error": "\(error)"])
            }
    }

    public func shutdown() async {
        announcer.withLockedValue { $0?.cancel() }
        try? await subscriber.shutdown().get()
    }

    /// Why the control channel is down (its pub/sub link is not connected), nil when it is up.
    public func unreachable() async -> String? {
        (try? await subscriber.isConnected.get()) == true ? nil : "the cluster control channel is down (Redis pub/sub)"
    }

    public func broadcast(_ command: NodeCommand, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        publish(Message(from: nodeID, command: command, node: nil))
    }

    public func nodes(on eventLoop: any EventLoop) -> EventLoopFuture<[NodeInfo]> {
        let horizon = NIODeadline.now() - configuration.nodeInfoInterval * 3
        let live = table.withLockedValue { table -> [NodeInfo] in
            table = table.filter { $0.value.heard >= horizon }
            return table.values.map(\.info)
        }
        guard let handler = target.withLockedValue({ $0 }) else {
            return eventLoop.makeSucceededFuture(live.sorted { $0.id < $1.id })
        }
        // This node as it is now, rather than as it last announced itself.
        return handler.describe(on: eventLoop).map { here in
            (live.filter { $0.id != here.id } + [here]).sorted { $0.id < $1.id }
        }
    }

    private struct Message: Codable {
        var from: String
        var command: NodeCommand?
        var node: NodeInfo?
    }

    private func publish(_ message: Message) -> EventLoopFuture<Void> {
        let payload = (try? JSONEncoder().encode(message)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return client.send(["PUBLISH", .string(channel), .string(payload)]).map { _ in }
    }

    private func announce(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard let handler = target.withLockedValue({ $0 }) else { return eventLoop.makeSucceededVoidFuture() }
        return handler.describe(on: eventLoop).flatMap { info in
            self.heard(info)
            return self.publish(Message(from: self.nodeID, command: nil, node: info))
        }.recover { _ in }
    }

    private func heard(_ info: NodeInfo) {
        table.withLockedValue { $0[info.id] = (info, NIODeadline.now()) }
    }

    fileprivate func received(_ payload: ByteBuffer) {
        guard let message = try? JSONDecoder().decode(Message.self, from: Data(payload.readableBytesView)) else {
            logger.warning("unreadable control message")
            return
        }
        if let info = message.node { heard(info) }
        guard message.from != nodeID, let command = message.command,
            let handler = target.withLockedValue({ $0 })
        else { return }
        handler.apply(command)
    }
}

// @unchecked Sendable: `control` is written once, in `RedisNodeControl.init`, before the subscriber starts.
private final class ControlInbox: @unchecked Sendable {
    weak var control: RedisNodeControl?
}
