import Foundation
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What the application's backend can do (the HTTP server API calls these; an embedder may call them
/// directly). Callable from any thread; each crosses to each event loop at most once. In a cluster, the
/// commands addressed to a user or a client reach every node (`NodeControl`); the counts they complete
/// with are this node's.
extension ChannelsApplication: NodeControlHandler {
    /// One channel as `channels` reports it.
    public struct ChannelSummary: Sendable, Equatable {
        /// The channel's name.
        public let channel: String
        /// Subscriptions to it on this node.
        public let subscribers: Int
    }

    /// Totals for node info.
    public struct NodeStatistics: Sendable, Equatable {
        /// Open connections of the channel protocol.
        public var connections = 0
        /// Distinct users among them (anonymous connections are not counted).
        public var users = 0
        /// Channels with at least one subscriber here.
        public var channels = 0
        /// Subscriptions, counted once per connection and channel.
        public var subscriptions = 0
        /// Publications delivered to subscribers since start (one per subscriber).
        public var deliveries = 0
    }

    /// Publishes one payload to each of `channels` (checked once, shared by every channel: each channel's
    /// push is still encoded once for all its subscribers). Completes with one result per channel.
    public func broadcast(channels: [String], data: String, on eventLoop: any EventLoop)
        -> EventLoopFuture<[Result<Publication, any Error>]>
    {
        guard JSONScanner.isValue(data) else {
            return eventLoop.makeFailedFuture(ProtocolError.badRequest("data must be one JSON value"))
        }
        let results = channels.map { channel in
            publish(channel: channel, data: data, on: eventLoop).map { Result<Publication, any Error>.success($0) }
                .recover { .failure($0) }
        }
        return EventLoopFuture.whenAllSucceed(results, on: eventLoop)
    }

    /// Sends `data` (one JSON value) to every connection of `user`, as a `message` push encoded once
    /// per node.
    public func send(toUser user: String, data: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard JSONScanner.isValue(data) else {
            return eventLoop.makeFailedFuture(ProtocolError.badRequest("data must be one JSON value"))
        }
        sendHere(toUser: user, data: data)
        return toOtherNodes(.send(user: user, data: data), on: eventLoop)
    }

    /// Subscribes every connection of `user` to `channel` (a `subscribed` push each, no permission check).
    public func subscribe(user: String, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard ChannelName.validate(channel) else { return eventLoop.makeFailedFuture(ProtocolError.invalidChannel) }
        guard options(for: channel) != nil else { return eventLoop.makeFailedFuture(ProtocolError.unknownNamespace) }
        return subscribeHere(user: user, to: channel, on: eventLoop)
            .and(toOtherNodes(.subscribe(user: user, channel: channel), on: eventLoop)).map { _ in }
    }

    /// Ends the subscription to `channel` of every connection of `user` (an `unsubscribed` push each).
    public func unsubscribe(user: String, from channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard ChannelName.validate(channel) else { return eventLoop.makeFailedFuture(ProtocolError.invalidChannel) }
        return unsubscribeHere(user: user, from: channel, on: eventLoop)
            .and(toOtherNodes(.unsubscribe(user: user, channel: channel), on: eventLoop)).map { _ in }
    }

    /// Closes every connection of `user` with `code` and `reason`; their disconnect notices advise
    /// reconnecting or not. Completes with how many were closed on this node.
    public func disconnect(
        user: String, code: CloseCode, reason: String, reconnect: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Int> {
        let command = NodeCommand.disconnectUser(user: user, code: code.rawValue, reason: reason, reconnect: reconnect)
        return disconnectHere(user: user, code: code, reason: reason, reconnect: reconnect, on: eventLoop)
            .and(toOtherNodes(command, on: eventLoop)).map { count, _ in count }
    }

    /// Closes one connection, named by its client id (`node-shard-sequence` in a cluster). Completes with
    /// whether it was open here, or with true once the command went to the other nodes.
    public func disconnect(
        client: String, code: CloseCode, reason: String, reconnect: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Bool> {
        guard let (node, id) = Self.parseClientID(client) else {
            return eventLoop.makeFailedFuture(ProtocolError.badRequest("client must be a client id like 0-17"))
        }
        guard let node, node != control?.nodeID else {
            return disconnectHere(client: id, code: code, reason: reason, reconnect: reconnect, on: eventLoop)
        }
        guard control != nil else { return eventLoop.makeSucceededFuture(false) }
        let command = NodeCommand.disconnectClient(
            node: node, client: id.rawValue, code: code.rawValue, reason: reason, reconnect: reconnect)
        return toOtherNodes(command, on: eventLoop).map { true }
    }

    /// `shard-sequence`, or `node-shard-sequence` (the node part is letters and digits).
    static func parseClientID(_ text: String) -> (node: String?, id: ConnectionID)? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3 else { return nil }
        let numbers = parts.suffix(2)
        guard numbers.allSatisfy({ !$0.isEmpty && $0.utf8.allSatisfy { (0x30...0x39).contains($0) } }),
            let shardText = numbers.first, let sequenceText = numbers.last,
            shardText.count <= 5, sequenceText.count <= 14, let shard = Int(shardText), shard < 65536,
            let sequence = UInt64(sequenceText)
        else { return nil }
        let node = parts.count == 3 ? String(parts[0]) : nil
        if let node, node.isEmpty || node.count > 64 || !node.allSatisfy({ $0.isLetter || $0.isNumber }) {
            return nil
        }
        return (node, ConnectionID(shard: shard, sequence: sequence))
    }

    /// Sets when every connection of `user` expires (Unix seconds; nil: never), as a `refresh` with a new
    /// token would. Completes with how many connections were updated on this node.
    public func refresh(user: String, expiresAt: Double?, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        refreshHere(user: user, expiresAt: expiresAt, on: eventLoop)
            .and(toOtherNodes(.refresh(user: user, expiresAt: expiresAt), on: eventLoop)).map { count, _ in count }
    }

    /// The live nodes: this one alone, or every node of the cluster that announced itself recently.
    public func nodes(on eventLoop: any EventLoop) -> EventLoopFuture<[NodeInfo]> {
        guard let control else { return describe(on: eventLoop).map { [$0] } }
        return control.nodes(on: eventLoop).hop(to: eventLoop).bounded(by: configuration.brokerTimeout)
    }

    // MARK: NodeControlHandler

    /// Runs a command another node (or this one) addressed to users or clients, on this node's connections.
    public func apply(_ command: NodeCommand) {
        let eventLoop = loops?.hub.loopShards.first?.eventLoop ?? MultiThreadedEventLoopGroup.singleton.next()
        switch command {
        case .send(let user, let data):
            sendHere(toUser: user, data: data)
        case .disconnectUser(let user, let code, let reason, let reconnect):
            _ = disconnectHere(user: user, code: CloseCode(code), reason: reason, reconnect: reconnect, on: eventLoop)
        case .disconnectClient(let node, let client, let code, let reason, let reconnect):
            guard node == control?.nodeID else { return }
            _ = disconnectHere(
                client: ConnectionID(rawValue: client), code: CloseCode(code), reason: reason, reconnect: reconnect,
                on: eventLoop)
        case .subscribe(let user, let channel):
            guard ChannelName.validate(channel), options(for: channel) != nil else { return }
            _ = subscribeHere(user: user, to: channel, on: eventLoop)
        case .unsubscribe(let user, let channel):
            _ = unsubscribeHere(user: user, from: channel, on: eventLoop)
        case .refresh(let user, let expiresAt):
            _ = refreshHere(user: user, expiresAt: expiresAt, on: eventLoop)
        case .post(let node, let client, let secret, let body):
            guard node == nodeID else { return }
            let id = StreamSessionID(node: node, client: ConnectionID(rawValue: client), secret: secret)
            deliver(body, to: id, on: eventLoop).whenSuccess { [logger] answer in
                guard answer != .accepted else { return }
                logger.debug(
                    "commands for an HTTP session from another node refused",
                    metadata: ["status": "\(answer.status.code)"])
            }
        }
    }

    /// This node's part of node info: its name, id, uptime and statistics.
    public func describe(on eventLoop: any EventLoop) -> EventLoopFuture<NodeInfo> {
        let uptime = Int((NIODeadline.now() - started).nanoseconds / 1_000_000_000)
        return statistics(on: eventLoop).map { [nodeName, control] statistics in
            NodeInfo(
                id: control?.nodeID ?? "", name: nodeName, connections: statistics.connections,
                users: statistics.users, channels: statistics.channels, subscriptions: statistics.subscriptions,
                uptimeSeconds: uptime)
        }
    }

    // MARK: on this node

    private func toOtherNodes(_ command: NodeCommand, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        guard let control else { return eventLoop.makeSucceededVoidFuture() }
        return control.broadcast(command, on: eventLoop).hop(to: eventLoop).bounded(by: configuration.brokerTimeout)
    }

    private func sendHere(toUser user: String, data: String) {
        loops?.hub.send(frame: ServerMessage.message(data: data), toUser: user)
    }

    private func subscribeHere(user: String, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        onEveryLoop(eventLoop) { loop in
            // A one-way stream carries the channels its URL names (its `Last-Event-ID` covers only those).
            for session in self.sessions(of: user, on: loop) where !session.eventStream {
                SubscriptionLifecycle(application: self).subscribeOnServer(
                    channel, recover: nil, session: session, loop: loop)
            }
        }.map { _ in }
    }

    private func unsubscribeHere(user: String, from channel: String, on eventLoop: any EventLoop)
        -> EventLoopFuture<Void>
    {
        onEveryLoop(eventLoop) { loop in
            for session in self.sessions(of: user, on: loop) {
                SubscriptionLifecycle(application: self).unsubscribeOnServer(channel, session: session, loop: loop)
            }
        }.map { _ in }
    }

    private func disconnectHere(
        user: String, code: CloseCode, reason: String, reconnect: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Int> {
        onEveryLoop(eventLoop) { loop in
            let connections = loop.shard.connections(ofUser: user)
            for connection in connections { connection.close(code: code, reason: reason, reconnect: reconnect) }
            return connections.count
        }.map { $0.reduce(0, +) }
    }

    private func disconnectHere(
        client: ConnectionID, code: CloseCode, reason: String, reconnect: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Bool> {
        guard let loop = loops?.loops.first(where: { $0.shard.index == client.shard }) else {
            return eventLoop.makeSucceededFuture(false)
        }
        return loop.eventLoop.submit {
            guard let connection = loop.shard.connection(client) else { return false }
            connection.close(code: code, reason: reason, reconnect: reconnect)
            return true
        }.hop(to: eventLoop)
    }

    private func refreshHere(user: String, expiresAt: Double?, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        onEveryLoop(eventLoop) { loop in
            let sessions = self.sessions(of: user, on: loop)
            for session in sessions {
                ConnectionAuthentication(application: self).setExpiry(expiresAt, session: session, loop: loop)
            }
            return sessions.count
        }.map { $0.reduce(0, +) }
    }

    /// Who is in `channel`.
    public func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        checked(channel, on: eventLoop) { options in
            guard options.presence else { throw ProtocolError.notAllowed("presence is off in this namespace") }
            return self.presence.presence(channel: channel, on: eventLoop)
        }
    }

    /// How many connections and users are in `channel`, without listing them.
    public func presenceCounts(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        checked(channel, on: eventLoop) { options in
            guard options.presence else { throw ProtocolError.notAllowed("presence is off in this namespace") }
            return self.presence.presenceCounts(channel: channel, on: eventLoop)
        }
    }

    /// A page of `channel`'s history: as the client command, newest first when `reverse`.
    public func history(
        channel: String, limit: Int, since: Int?, reverse: Bool, on eventLoop: any EventLoop
    ) -> EventLoopFuture<HistoryPage> {
        checked(channel, on: eventLoop) { options in
            guard options.historySize > 0 else { throw ProtocolError.notAllowed("no history in this namespace") }
            guard limit >= 0 else { throw ProtocolError.badRequest("limit must not be negative") }
            return self.broker.history(channel: channel, since: since, limit: limit, options: options, on: eventLoop)
                .map { page in
                    reverse
                        ? HistoryPage(
                            epoch: page.epoch, offset: page.offset, publications: page.publications.reversed())
                        : page
                }
        }
    }

    /// Forgets the channel's history (its stream position stays: clients recovering get `recovered: false`).
    public func removeHistory(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        checked(channel, on: eventLoop) { _ in self.broker.removeHistory(channel: channel, on: eventLoop) }
    }

    /// Channels with subscribers on this node and how many, sorted by name; `pattern` filters with shell
    /// wildcards (`chat:*`).
    public func channels(matching pattern: String?, on eventLoop: any EventLoop) -> EventLoopFuture<[ChannelSummary]> {
        onEveryLoop(eventLoop) { loop in loop.channels.mapValues { $0.subscribers.count } }
            .map { perLoop in
                var counts: [String: Int] = [:]
                for loop in perLoop { counts.merge(loop, uniquingKeysWith: +) }
                return counts.filter { name, _ in pattern.map { fnmatch($0, name, 0) == 0 } ?? true }
                    .map { ChannelSummary(channel: $0.key, subscribers: $0.value) }
                    .sorted { $0.channel < $1.channel }
            }
    }

    /// Connections, distinct users, channels and subscriptions on this node.
    public func statistics(on eventLoop: any EventLoop) -> EventLoopFuture<NodeStatistics> {
        onEveryLoop(eventLoop) { loop in
            var (connections, users, subscriptions) = (0, Set<String>(), 0)
            loop.shard.forEachConnection { connection in
                guard let session = connection.session else { return }
                connections += 1
                if let user = connection.userID { users.insert(user) }
                subscriptions += session.subscriptions.count
            }
            return (connections, users, Set(loop.channels.keys), subscriptions, loop.deliveries)
        }.map { perLoop in
            var users = Set<String>()
            var channels = Set<String>()
            var statistics = NodeStatistics()
            for (connections, loopUsers, loopChannels, subscriptions, deliveries) in perLoop {
                statistics.connections += connections
                statistics.deliveries += deliveries
                statistics.subscriptions += subscriptions
                users.formUnion(loopUsers)
                channels.formUnion(loopChannels)
            }
            statistics.users = users.count
            statistics.channels = channels.count
            return statistics
        }
    }

    // MARK: helpers

    private func sessions(of user: String, on loop: ChannelsLoop) -> [ClientSession] {
        loop.shard.connections(ofUser: user).compactMap(\.session)
    }

    /// Runs `body` on every event loop's channel state; completes on `eventLoop` with the results in loop order.
    private func onEveryLoop<T: Sendable>(
        _ eventLoop: any EventLoop, _ body: @escaping @Sendable (ChannelsLoop) -> T
    ) -> EventLoopFuture<[T]> {
        guard let loops else { return eventLoop.makeSucceededFuture([]) }
        let futures = loops.loops.map { loop in loop.eventLoop.submit { body(loop) } }
        return EventLoopFuture.whenAllSucceed(futures, on: eventLoop)
    }

    private func checked<T: Sendable>(
        _ channel: String, on eventLoop: any EventLoop, _ body: (NamespaceOptions) throws -> EventLoopFuture<T>
    ) -> EventLoopFuture<T> {
        guard ChannelName.validate(channel) else { return eventLoop.makeFailedFuture(ProtocolError.invalidChannel) }
        guard let options = options(for: channel) else {
            return eventLoop.makeFailedFuture(ProtocolError.unknownNamespace)
        }
        do {
            return try body(options).hop(to: eventLoop).bounded(by: configuration.brokerTimeout)
        } catch {
            return eventLoop.makeFailedFuture(error)
        }
    }
}
