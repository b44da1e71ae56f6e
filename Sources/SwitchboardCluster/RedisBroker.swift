import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import SwitchboardRedis
import SwitchboardServer

/// Channel streams shared by every node through Redis (docs/cluster.md). Each channel lives on one
/// Redis instance (`ShardRing`). A publication is one Lua script that increments the offset, appends to
/// the bounded history and publishes, atomically. A node subscribes to a channel's Redis pub/sub
/// channel only while it has local subscribers (`NodeSubscriptions` calls `subscribe` once per channel),
/// so a channel's traffic reaches only the nodes that need it.
///
/// Continuity: the node checks every publication against the last one it received in the channel. A
/// new epoch, a skipped offset, or a broken pub/sub connection makes it ask the application to
/// resynchronize the channel (`handleResynchronize`) before delivering anything newer; local
/// subscribers then recover from history, and learn `recovered: false` where history cannot cover it.
public final class RedisBroker: Broker {
    /// The cluster settings the broker was made with; `RedisNodeControl` and `RedisPresence` read theirs here.
    public let configuration: ClusterConfiguration
    let instances: [RedisInstance]
    private let ring: ShardRing
    private let logger: Logger
    // Lock: guards the delivery target, attached once at start.
    private let target = NIOLockedValueBox<(any BrokerEventHandler)?>(nil)

    /// Prepares a client and a pub/sub subscriber per Redis instance without connecting; call `start()`.
    public init(configuration: ClusterConfiguration, group: any EventLoopGroup, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        self.ring = ShardRing(count: configuration.redis.count)
        var instances: [RedisInstance] = []
        let messages = Messages()
        for redis in configuration.redis {
            instances.append(
                RedisInstance(
                    configuration: redis, cluster: configuration, group: group, logger: logger,
                    onMessage: { instance, channel, payload in messages.broker?.received(payload, on: channel, instance)
                    },
                    onConnectionChange: { instance, change in messages.broker?.connection(change, of: instance) }))
        }
        self.instances = instances
        messages.broker = self
    }

    /// Connects every pub/sub connection (they keep reconnecting on their own).
    public func start() -> EventLoopFuture<Void> {
        let started = instances.map { $0.subscriber.start() }
        return EventLoopFuture.andAllComplete(started, on: instances[0].subscriber.eventLoop)
    }

    /// Stops every pub/sub subscriber and closes the command connections. The broker cannot be started again.
    public func shutdown() async {
        for instance in instances {
            try? await instance.subscriber.shutdown().get()
            await instance.client.close()
        }
    }

    /// The Redis instances whose pub/sub link is down, as a reason for `/ready`; nil when all are up.
    public func unreachable() async -> String? {
        var down: [String] = []
        for instance in instances where !((try? await instance.subscriber.isConnected.get()) ?? false) {
            down.append(instance.client.configuration.displayAddress)
        }
        return down.isEmpty ? nil : "cannot reach Redis \(down.joined(separator: ", ")) (pub/sub link down)"
    }

    private func instance(for channel: String) -> RedisInstance { instances[ring.index(of: channel)] }

    /// The command client of the instance that holds `channel` (presence lives beside the stream).
    func client(for channel: String) -> RedisClient { instance(for: channel).client }

    func client(forInstance index: Int) -> RedisClient { instances[index].client }

    private var prefix: String { configuration.prefix }
    func pubsubChannel(_ channel: String) -> String { "\(prefix).channel.\(channel)" }
    private func metaKey(_ channel: String) -> String { "\(prefix).meta.\(channel)" }
    private func historyKey(_ channel: String) -> String { "\(prefix).history.\(channel)" }
    /// The channel name has no spaces (`ChannelName`), so the space keeps any key from reaching another
    /// channel's keys.
    private func idempotencyKey(_ channel: String, _ key: String) -> String { "\(prefix).idem.\(channel) \(key)" }
    private var pubsubPrefix: String { "\(prefix).channel." }

    private static func newEpoch() -> String { String(UInt64.random(in: 1 << 40...UInt64.max), radix: 36) }
    private static func seconds(_ amount: TimeAmount) -> String {
        // Redis TTLs are whole seconds; a positive amount never rounds down to "no TTL".
        amount.nanoseconds <= 0 ? "0" : String(max(1, (amount.nanoseconds + 999_999_999) / 1_000_000_000))
    }

    // MARK: Broker

    /// Sets the handler; a channel's events arrive on the pub/sub loop of the Redis instance holding it.
    public func attach(_ handler: any BrokerEventHandler) {
        target.withLockedValue { $0 = handler }
    }

    /// Subscribes the node to the channel's Redis pub/sub channel; completes once Redis confirmed it.
    public func subscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let instance = instance(for: channel)
        let streams = instance.streams
        return streams.eventLoop.flatSubmit {
            streams.subscribed[channel] = .some(nil)
            streams.broken.remove(channel)
            return instance.subscriber.subscribe(self.pubsubChannel(channel))
        }
    }

    /// Stops delivery for the channel at once and unsubscribes from Redis without waiting for its answer.
    public func unsubscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let instance = instance(for: channel)
        let streams = instance.streams
        return streams.eventLoop.submit {
            streams.subscribed[channel] = nil
            streams.broken.remove(channel)
            instance.subscriber.unsubscribe(self.pubsubChannel(channel))
        }
    }

    /// Runs the publish script on the channel's instance. A command sent and not answered fails with
    /// `BrokerError.outcomeUnknown`: the publication may have been made.
    public func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, idempotency: IdempotencyKey?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        let window = idempotency.map { max($0.window.nanoseconds / 1_000_000, 1) } ?? 0
        let arguments: [RESPArgument] = [
            .string(pubsubChannel(channel)), .string(ClusterWire.publicationBody(user: user, data: data)),
            RESPArgument(options.historySize), .string(Self.seconds(options.historyTTL)),
            .string(Self.seconds(configuration.streamTTL)), .string(Self.newEpoch()), .string(String(window)),
        ]
        var keys = [metaKey(channel), historyKey(channel)]
        if let idempotency { keys.append(idempotencyKey(channel, idempotency.key)) }
        return instance(for: channel).client.run(
            LuaScripts.publish, keys: keys, arguments: arguments, appendingServerRunID: true
        ).flatMapThrowing { reply in
            guard let parts = reply.elements, parts.count == 3, let offset = parts[0].int, let epoch = parts[1].string,
                let repeated = parts[2].int
            else { throw RedisError.protocolViolation("unexpected publish reply") }
            return Publication(
                offset: Int(offset), data: data, user: user, time: Int64(NIODeadline.now().uptimeNanoseconds),
                epoch: epoch, isRepeat: repeated == 1)
        }.flatMapErrorThrowing { error in
            // Sent and not answered: the script may have run. Not sent (the link was down): it did not.
            if let failure = error as? RedisError, failure == .timeout || failure == .replyLost {
                throw BrokerError.outcomeUnknown
            }
            throw error
        }
    }

    /// Publishes the join on the channel's pub/sub channel; nothing is stored (presence is `RedisPresence`).
    public func publishJoin(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<
        Void
    > {
        announce("j", member, in: channel)
    }

    /// Publishes the leave on the channel's pub/sub channel; nothing is stored (presence is `RedisPresence`).
    public func publishLeave(channel: String, member: PresenceMember, on eventLoop: any EventLoop)
        -> EventLoopFuture<Void>
    {
        announce("l", member, in: channel)
    }

    private func announce(_ kind: String, _ member: PresenceMember, in channel: String) -> EventLoopFuture<Void> {
        // On the connection the channel's publications take, so they stay in the order this node made them.
        instance(for: channel).client.send(
            ["PUBLISH", .string(pubsubChannel(channel)), .string(kind + ClusterWire.member(member))],
            route: metaKey(channel)
        ).map { _ in }
    }

    /// Reads the stream's position and the history after `since`. Unlike `LocalBroker`, a namespace without
    /// history still reports `recovered: true` when nothing was published since the client's position.
    public func recover(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot> {
        let wanted: StreamRead = since.map { options.historySize > 0 ? .after($0.offset) : .none } ?? .none
        return readStream(channel, wanted).map { stream in
            guard let since, since.epoch == stream.epoch else {
                return SubscribeSnapshot(epoch: stream.epoch, offset: stream.offset, publications: [], recovered: false)
            }
            guard options.historySize > 0 else {
                // Nothing to replay; but where nothing was published since, nothing was missed either (the
                // offset lives in Redis, it never restarts within an epoch).
                return SubscribeSnapshot(
                    epoch: stream.epoch, offset: stream.offset, publications: [],
                    recovered: since.offset == stream.offset)
            }
            // Complete when history still holds the publication right after the client's position (or the
            // client is at the newest one): otherwise some were trimmed or expired.
            let oldest = stream.publications.first?.offset ?? stream.offset + 1
            let missed = stream.publications.filter { $0.offset > since.offset }
            // A publication made without history (`skip_history`) leaves a hole: what lies past it is no recovery.
            let contiguous =
                missed.first.map { $0.offset == since.offset + 1 && missed.count == stream.offset - since.offset }
                ?? (since.offset == stream.offset)
            let complete =
                since.offset >= oldest - 1 && since.offset <= stream.offset && missed.count <= options.historySize
                && contiguous
            return SubscribeSnapshot(
                epoch: stream.epoch, offset: stream.offset, publications: complete ? missed : [], recovered: complete)
        }
    }

    /// Reads the page from the channel's history list on its instance.
    public func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<HistoryPage> {
        readStream(channel, since.map { .page(after: $0, limit: limit) } ?? .newest(limit)).map { stream in
            let selected =
                since.map { offset in stream.publications.filter { $0.offset > offset } } ?? stream.publications
            let publications = since == nil ? Array(selected.suffix(limit)) : Array(selected.prefix(limit))
            return HistoryPage(epoch: stream.epoch, offset: stream.offset, publications: publications)
        }
    }

    /// Deletes the history list; the offset and epoch, kept in another key, stay.
    public func removeHistory(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        instance(for: channel).client.send(["DEL", .string(historyKey(channel))], route: metaKey(channel)).map { _ in }
    }

    /// What a stream read brings back from the history list (read in the script, so that only these leave Redis).
    enum StreamRead {
        case none
        /// The newest publications, at most this many.
        case newest(Int)
        /// The publications after an offset (fewer when history does not reach back that far).
        case after(Int)
        /// The first `limit` publications after an offset.
        case page(after: Int, limit: Int)

        var argument: RESPArgument {
            switch self {
            case .none: "none"
            case .newest(let limit): .string("newest:\(max(limit, 0))")
            case .after(let offset): RESPArgument(max(offset, 0))
            case .page(let offset, let limit): .string("\(max(offset, 0)):\(max(limit, 0))")
            }
        }
    }

    /// A stream first made by a read (a subscribe to a channel that never published) lives this long
    /// unless a publication extends it to `streamTTL`.
    private var readStreamTTL: TimeAmount { min(configuration.streamTTL, .hours(24)) }

    /// The stream's epoch and offset and the publications `read` asks for, of the current epoch, oldest first.
    func readStream(_ channel: String, _ read: StreamRead) -> EventLoopFuture<HistoryPage> {
        instance(for: channel).client.run(
            LuaScripts.position, keys: [metaKey(channel), historyKey(channel)],
            arguments: [.string(Self.newEpoch()), .string(Self.seconds(readStreamTTL)), read.argument],
            appendingServerRunID: true
        ).flatMapThrowing { reply in
            guard let parts = reply.elements, parts.count == 3, let epoch = parts[0].string, let offset = parts[1].int
            else { throw RedisError.protocolViolation("unexpected stream reply") }
            let now = Int64(NIODeadline.now().uptimeNanoseconds)
            let publications = (parts[2].elements ?? []).compactMap { entry -> Publication? in
                guard case .bulkString(let bytes) = entry,
                    case .publication(let publication) = ClusterWire.decode(bytes, receivedAt: now),
                    publication.epoch == epoch
                else { return nil }
                return publication
            }
            return HistoryPage(epoch: epoch, offset: Int(offset), publications: publications)
        }
    }

    // MARK: from the pub/sub connections (on each instance's subscriber loop)

    private var handler: (any BrokerEventHandler)? { target.withLockedValue { $0 } }

    fileprivate func received(_ payload: ByteBuffer, on redisChannel: String, _ instance: RedisInstance) {
        guard redisChannel.hasPrefix(pubsubPrefix), let handler else { return }
        let channel = String(redisChannel.dropFirst(pubsubPrefix.count))
        let streams = instance.streams
        // Messages still in flight after an unsubscribe are not for this node any more.
        guard let position = streams.subscribed[channel] else { return }
        guard let event = ClusterWire.decode(payload, receivedAt: Int64(NIODeadline.now().uptimeNanoseconds)) else {
            logger.warning("unreadable message from redis", metadata: ["channel": "\(channel)"])
            return
        }
        if streams.broken.remove(channel) != nil { handler.handleResynchronize(channel: channel) }
        switch event {
        case .publication(let publication):
            let epoch = publication.epoch ?? ""
            if let position, position.epoch != epoch || publication.offset != position.offset + 1 {
                logger.info(
                    "channel stream discontinuous; resynchronizing",
                    metadata: [
                        "channel": "\(channel)", "had": "\(position.epoch):\(position.offset)",
                        "got": "\(epoch):\(publication.offset)",
                    ])
                handler.handleResynchronize(channel: channel)
            }
            streams.subscribed[channel] = (epoch, publication.offset)
            handler.handlePublication(publication, channel: channel)
        case .join(let member):
            handler.handleJoin(member, channel: channel)
        case .leave(let member):
            handler.handleLeave(member, channel: channel)
        }
    }

    fileprivate func connection(_ change: RedisSubscriber.ConnectionChange, of instance: RedisInstance) {
        let streams = instance.streams
        switch change {
        case .lost:
            // Whatever is published from now on is missed: every channel resynchronizes before its next
            // event, or when the connection is back.
            streams.broken.formUnion(streams.subscribed.keys)
            for channel in streams.subscribed.keys { streams.subscribed[channel] = .some(nil) }
        case .restored:
            guard let handler else { return }
            for channel in streams.broken { handler.handleResynchronize(channel: channel) }
            streams.broken = []
        }
    }
}

/// Lets the instances' callbacks reach the broker that owns them, which is made after them.
// @unchecked Sendable: `broker` is written once, in `RedisBroker.init`, before any connection starts.
private final class Messages: @unchecked Sendable {
    weak var broker: RedisBroker?
}
