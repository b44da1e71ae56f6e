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
///
/// Commands are at least once for every live node, and applied once: each is also appended to a log (a
/// Redis stream, `controlLogLength` long, kept `controlLogTTL` after the last command) with its id, and a
/// node whose control link was lost reads what it missed from the log when the link is back, applying
/// only ids above the last it applied. A revocation (disconnect, unsubscribe) published while a node's
/// link was reconnecting is therefore applied there too, not silently skipped.
public final class RedisNodeControl: NodeControl {
    /// Commands the log keeps, and how long it outlives the last one: a node away for longer misses them.
    static let controlLogLength = 10_000
    static let controlLogTTL = TimeAmount.hours(1)

    /// `ClusterConfiguration.nodeID` of the broker's configuration.
    public let nodeID: String
    private let configuration: ClusterConfiguration
    private let client: RedisClient
    private let subscriber: RedisSubscriber
    private let logger: Logger
    private let channel: String
    private let logKey: String
    /// Where the log has been applied up to; touched only on the subscriber's loop.
    private let position: LogPosition
    // Lock: guards the handler, attached once at start.
    private let target = NIOLockedValueBox<(any NodeControlHandler)?>(nil)
    // Lock: guards the table of live nodes (id → info and when it was heard).
    private let table = NIOLockedValueBox<[String: (info: NodeInfo, heard: NIODeadline)]>([:])
    // Lock: guards the announcement task, set at start and cancelled at shutdown.
    private let announcer = NIOLockedValueBox<RepeatedTask?>(nil)

    /// Uses the broker's configuration and its first Redis instance, with a pub/sub connection of its own
    /// on one loop of `group`. Connects nothing until `start()`.
    public init(broker: RedisBroker, group: any EventLoopGroup, logger: Logger) {
        let configuration = broker.configuration
        self.configuration = configuration
        self.nodeID = configuration.nodeID
        self.client = broker.client(forInstance: 0)
        self.logger = logger
        self.channel = "\(configuration.prefix).control"
        self.logKey = "\(configuration.prefix).control.log"
        let inbox = ControlInbox()
        let eventLoop = group.next()
        self.position = LogPosition()
        self.subscriber = RedisSubscriber(
            configuration: configuration.redis[0], eventLoop: eventLoop, backoff: configuration.backoff,
            logger: logger, onMessage: { _, payload in inbox.control?.received(payload) },
            onConnectionChange: { change in
                if case .restored = change { inbox.control?.restored() }
            })
        inbox.control = self
    }

    /// Sets the handler; commands from other nodes reach it on the control subscriber's loop, one at a time.
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
            .flatMap { self.startPosition() }
            .recover { [logger] error in
                logger.warning("control channel not subscribed yet", metadata: ["error": "\(error)"])
            }
    }

    /// Stops announcing this node and closes the control subscriber; the node leaves others' lists within
    /// three `nodeInfoInterval`s.
    public func shutdown() async {
        announcer.withLockedValue { $0?.cancel() }
        let position = self.position
        try? await subscriber.eventLoop.submit { position.isShutDown = true }.get()
        try? await subscriber.shutdown().get()
    }

    /// Why the control channel is down (its pub/sub link is not connected), nil when it is up.
    public func unreachable() async -> String? {
        (try? await subscriber.isConnected.get()) == true ? nil : "the cluster control channel is down (Redis pub/sub)"
    }

    /// Appends the command to the control log and publishes it to the other nodes, in one script.
    public func broadcast(_ command: NodeCommand, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let message = Message(from: nodeID, command: command, node: nil)
        let payload = (try? JSONEncoder().encode(message)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
        return client.run(
            LuaScripts.controlCommand, keys: [logKey],
            arguments: [
                .string(payload), RESPArgument(Self.controlLogLength),
                RESPArgument(Int(Self.controlLogTTL.nanoseconds / 1_000_000)), .string(channel),
            ]
        ).map { _ in }
    }

    /// The log position a node starts from: a little before now on Redis's clock, so that nothing
    /// published after it subscribed is taken for old. Commands from before it started concern
    /// connections it never had.
    private func startPosition() -> EventLoopFuture<Void> {
        let position = self.position
        let eventLoop = subscriber.eventLoop
        return client.send(["TIME"]).hop(to: eventLoop).map { reply in
            guard let seconds = reply.elements?.first?.int else { return }
            let start = LogID(milliseconds: UInt64(max(seconds - 2, 0)) * 1000, sequence: 0)
            if position.applied.map({ $0 < start }) ?? true { position.applied = start }
        }
    }

    /// The link is (back) up: replay what was missed; a node that never learned its start position (its
    /// first subscribe failed) learns it now instead.
    fileprivate func restored() {
        guard position.applied != nil else {
            startPosition().whenFailure { [logger] error in
                logger.warning("cannot read Redis's clock for the control log", metadata: ["error": "\(error)"])
            }
            return
        }
        replayMissed()
    }

    /// After the control link came back: the commands published meanwhile, from the log, in order, before
    /// any that arrive live (those wait until the replay is done). Tried again while it fails.
    fileprivate func replayMissed(attempt: Int = 1) {
        let position = self.position
        guard let from = position.applied, !position.isShutDown, !position.replaying || attempt > 1 else { return }
        position.replaying = true
        let eventLoop = subscriber.eventLoop
        client.send(["XRANGE", .string(logKey), .string(from.description), "+"]).hop(to: eventLoop)
            .whenComplete { result in
                switch result {
                case .success(let reply):
                    var replayed = 0
                    let entries = reply.elements ?? []
                    if let oldest = entries.first?.elements?.first?.string.flatMap(LogID.init), oldest > from {
                        // The log no longer reaches back to where this node stopped: it was away longer than
                        // the log keeps commands.
                        self.logger.warning(
                            "cluster control log trimmed past this node's position; commands may have been missed",
                            metadata: ["position": "\(from)", "oldest": "\(oldest)"])
                    }
                    for entry in entries {
                        guard let parts = entry.elements, parts.count == 2,
                            let id = parts[0].string.flatMap(LogID.init),
                            let fields = parts[1].elements, fields.count == 2, case .bulkString(let json) = fields[1]
                        else { continue }
                        if self.apply(json, id: id) { replayed += 1 }
                    }
                    if replayed > 0 {
                        self.logger.notice(
                            "cluster commands missed while the control link was down applied from the log",
                            metadata: ["commands": "\(replayed)"])
                    }
                    position.replaying = false
                    let held = position.held
                    position.held = []
                    for (id, json) in held { self.apply(json, id: id) }
                case .failure(let error):
                    self.logger.warning(
                        "cannot read the cluster control log; retrying", metadata: ["error": "\(error)"])
                    eventLoop.scheduleTask(in: .milliseconds(500 * Int64(min(attempt, 10)))) {
                        self.replayMissed(attempt: attempt + 1)
                    }
                }
            }
    }

    /// The nodes heard from within three `nodeInfoInterval`s, with this one as it is now, sorted by id.
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

    /// On the subscriber's loop: an announcement (JSON), or a command with its log id ("id\nJSON").
    fileprivate func received(_ payload: ByteBuffer) {
        var payload = payload
        if payload.readableBytesView.first != UInt8(ascii: "{"),
            let newline = payload.readableBytesView.firstIndex(of: UInt8(ascii: "\n")),
            let text = payload.readString(length: newline - payload.readerIndex), let id = LogID(text)
        {
            payload.moveReaderIndex(forwardBy: 1)
            if position.replaying { return position.held.append((id, payload)) }
            apply(payload, id: id)
            return
        }
        guard let message = try? JSONDecoder().decode(Message.self, from: Data(payload.readableBytesView)) else {
            logger.warning("unreadable control message")
            return
        }
        if let info = message.node { heard(info) }
        // A command without a log id comes from a node of an earlier version (a rolling upgrade): applied
        // as it comes, as that version did.
        if message.from != nodeID, let command = message.command, let handler = target.withLockedValue({ $0 }) {
            handler.apply(command)
        }
    }

    /// Applies a logged command once: only above the last id applied (a replay and the live message may
    /// both bring it). Returns whether it was applied.
    @discardableResult
    private func apply(_ json: ByteBuffer, id: LogID) -> Bool {
        if let applied = position.applied, id <= applied { return false }
        position.applied = id
        guard let message = try? JSONDecoder().decode(Message.self, from: Data(json.readableBytesView)) else {
            logger.warning("unreadable control message")
            return false
        }
        guard message.from != nodeID, let command = message.command, let handler = target.withLockedValue({ $0 })
        else { return false }
        handler.apply(command)
        return true
    }
}

/// The control subscriber's way back to its node control, weak so the control can go.
// @unchecked Sendable: `control` is written once, in `RedisNodeControl.init`, before the subscriber starts.
private final class ControlInbox: @unchecked Sendable {
    weak var control: RedisNodeControl?
}

/// How far this node has applied the control log, and the live commands held while it replays.
// @unchecked Sendable: every property is read and written only on the control subscriber's loop.
private final class LogPosition: @unchecked Sendable {
    var applied: LogID?
    var replaying = false
    var isShutDown = false
    var held: [(LogID, ByteBuffer)] = []
}

/// A Redis stream id ("milliseconds-sequence"), ordered as Redis orders them.
struct LogID: Comparable, CustomStringConvertible, Sendable {
    let milliseconds: UInt64
    let sequence: UInt64

    init(milliseconds: UInt64, sequence: UInt64) {
        self.milliseconds = milliseconds
        self.sequence = sequence
    }

    init?(_ text: String) {
        let parts = text.split(separator: "-")
        guard parts.count == 2, let milliseconds = UInt64(parts[0]), let sequence = UInt64(parts[1]) else { return nil }
        self.init(milliseconds: milliseconds, sequence: sequence)
    }

    var description: String { "\(milliseconds)-\(sequence)" }

    static func < (lhs: LogID, rhs: LogID) -> Bool {
        (lhs.milliseconds, lhs.sequence) < (rhs.milliseconds, rhs.sequence)
    }
}
