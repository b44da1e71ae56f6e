import Atomics
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// The application behind `switchboard serve`: client protocol v1 (docs/PROTOCOL.md) over the
/// connection manager: subscribe, publish, presence, history with recovery, through a `Broker`.
public final class ChannelsApplication: SwitchboardApplication, BrokerDelivery {
    public typealias Authenticator = @Sendable (HTTPRequestHead) -> UpgradeDecision

    final class Attachment: Sendable {
        let hub: Hub
        let shards: [ChannelsShard]
        init(hub: Hub) {
            self.hub = hub
            self.shards = hub.eventLoops.map(ChannelsShard.init)
        }
    }

    public let configuration: ChannelsConfiguration
    let broker: any Broker
    private let authenticate: Authenticator
    private let logger: Logger
    private let attachment = ManagedAtomicLazyReference<Attachment>()

    /// - Parameter authenticate: decides each upgrade (where JWT checks plug in); the default accepts
    ///   everyone anonymously.
    public init(
        configuration: ChannelsConfiguration = .chatDefaults, broker: any Broker = LocalBroker(),
        logger: Logger = Logger(label: "switchboard.channels"),
        authenticate: @escaping Authenticator = { _ in .accept(userID: nil, subprotocol: nil) }
    ) {
        self.configuration = configuration
        self.broker = broker
        self.authenticate = authenticate
        self.logger = logger
        broker.attach(self)
    }

    private var attached: Attachment? { attachment.load() }

    private func shard(for id: ConnectionID) -> ChannelsShard? {
        guard let shards = attached?.shards, shards.indices.contains(id.shard) else { return nil }
        return shards[id.shard]
    }

    private func options(for channel: String) -> NamespaceOptions? {
        configuration.namespaces[ChannelName.namespace(of: channel)]
    }

    // MARK: SwitchboardApplication

    public func shouldUpgrade(_ request: HTTPRequestHead, on eventLoop: any EventLoop) -> EventLoopFuture<
        UpgradeDecision
    > {
        eventLoop.makeSucceededFuture(authenticate(request))
    }

    public func connectionOpened(_ connection: ConnectionHandle) {
        // The hub is known only once connections arrive; the per-loop shards are made once.
        let attachment = attachment.load() ?? attachment.storeIfNilThenLoad(Attachment(hub: connection.hub))
        var presenceData = connection.info
        if let info = presenceData, !JSONScanner.isValue(info) {
            logger.warning(
                "connection info is not JSON; presence leaves it out", metadata: ["connection": "\(connection.id)"])
            presenceData = nil
        }
        let session = ClientSession(
            handle: connection,
            bucket: TokenBucket(
                rate: configuration.publishRate, burst: configuration.publishBurst,
                now: Int64(NIODeadline.now().uptimeNanoseconds)),
            presenceData: presenceData)
        attachment.shards[connection.id.shard].sessions[connection.id] = session
    }

    public func connection(_ connection: ConnectionHandle, received message: DataMessage) {
        guard let shard = shard(for: connection.id), let session = shard.sessions[connection.id] else { return }
        guard case .text(let payload) = message else {
            connection.close(code: .unsupportedData, reason: "binary messages are not part of protocol v1")
            return
        }
        switch ClientCommand.parse(payload.readableBytesView) {
        case .failure(let failure):
            session.send(ServerMessage.error(id: failure.id, failure.error))
        case .success(let command):
            handle(command, session: session, shard: shard)
        }
    }

    public func connectionClosed(_ connection: ConnectionHandle, reason: DisconnectReason) {
        guard let shard = shard(for: connection.id), let session = shard.sessions.removeValue(forKey: connection.id)
        else { return }
        for channel in session.subscriptions.keys { leave(channel, session: session, shard: shard) }
    }

    public func disconnectNotice(
        reason: DisconnectReason, code: CloseCode, message: String, reconnectAfter: TimeAmount?
    ) -> ByteBuffer? {
        ServerMessage.disconnect(
            code: code, reason: message, reconnect: reason.shouldReconnect,
            afterMilliseconds: reconnectAfter.map { Int($0.nanoseconds / 1_000_000) })
    }

    public func gapNotice(lane: DeliveryLane, dropped: Int) -> ByteBuffer? {
        ServerMessage.gap(channel: lane.name, dropped: dropped)
    }

    // MARK: BrokerDelivery

    public func deliver(_ publication: Publication, channel: String) {
        guard let attached else { return }
        let shards = attached.shards
        let hub = attached.hub
        let options = options(for: channel) ?? NamespaceOptions()
        let frame = ServerMessage.publication(publication, channel: channel, showUser: options.showPublisher)
        let lane = DeliveryLane(name: channel, policy: options.slowConsumer)
        let delivery = ChannelsShard.Delivery(publication: publication, frame: frame, lane: lane, channel: channel)
        for shard in shards { shard.submit(delivery, hub: hub) }
    }

    public func deliverPresence(joined: Bool, member: PresenceMember, channel: String) {
        guard let shards = attached?.shards else { return }
        let frame = ServerMessage.membership(joined ? "join" : "leave", channel: channel, member: member)
        for shard in shards {
            shard.eventLoop.execute { shard.deliverToSubscribers(frame, channel: channel) }
        }
    }

    // MARK: commands

    private func handle(_ command: ClientCommand, session: ClientSession, shard: ChannelsShard) {
        let id = command.id
        func fail(_ error: ProtocolError) { session.send(ServerMessage.error(id: id, error)) }
        switch command.kind {
        case .ping:
            session.send(ServerMessage.reply(id: id))
        case .subscribe(let channel, let recover):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard session.subscriptions[channel] == nil else { return fail(.alreadySubscribed) }
            guard session.subscriptions.count < configuration.maxSubscriptionsPerConnection else {
                return fail(.tooManySubscriptions)
            }
            subscribe(channel, id: id, recover: recover, options: options, session: session, shard: shard)
        case .unsubscribe(let channel):
            guard checkedOptions(channel, fail: fail) != nil else { return }
            guard session.subscriptions[channel] != nil else { return fail(.notSubscribed) }
            leave(channel, session: session, shard: shard)
            session.send(ServerMessage.reply(id: id))
        case .publish(let channel, let data):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.clientsMayPublish else { return fail(.notAllowed("clients may not publish here")) }
            guard session.bucket.take(now: Int64(NIODeadline.now().uptimeNanoseconds)) else {
                session.rejectedPublishes += 1
                fail(.rateLimited)
                if session.rejectedPublishes > configuration.maxRejectedPublishes {
                    logger.info("closing publish-rate abuser", metadata: ["connection": "\(session.handle.id)"])
                    session.handle.close(code: .policyViolation, reason: "publish rate exceeded")
                }
                return
            }
            session.rejectedPublishes = 0
            broker.publish(
                channel: channel, data: data, user: session.handle.userID, options: options, on: shard.eventLoop
            ).assumeIsolated().whenSuccess { publication in
                session.send(ServerMessage.reply(id: id, result: "{\"offset\":\(publication.offset)}"))
            }
        case .presence(let channel):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.presence else { return fail(.notAllowed("presence is off in this namespace")) }
            broker.presence(channel: channel, on: shard.eventLoop).assumeIsolated().whenSuccess { snapshot in
                var result = "{\"connections\":\(snapshot.connections),\"users\":\(snapshot.users)"
                if !options.countsOnly {
                    result += ",\"members\":[" + snapshot.members.map(\.json).joined(separator: ",") + "]"
                }
                session.send(ServerMessage.reply(id: id, result: result + "}"))
            }
        case .history(let channel, let limit, let since):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.historySize > 0 else { return fail(.notAllowed("no history in this namespace")) }
            broker.history(channel: channel, since: since, limit: limit, options: options, on: shard.eventLoop)
                .assumeIsolated().whenSuccess { history in
                    let publications = history.publications.map {
                        ServerMessage.publicationJSON($0, channel: nil, showUser: options.showPublisher, push: false)
                    }
                    let result =
                        "{\"epoch\":\(ServerMessage.quote(history.epoch)),\"offset\":\(history.offset),"
                        + "\"publications\":[\(publications.joined(separator: ","))]}"
                    session.send(ServerMessage.reply(id: id, result: result))
                }
        }
    }

    private func checkedOptions(_ channel: String, fail: (ProtocolError) -> Void) -> NamespaceOptions? {
        guard ChannelName.validate(channel) else {
            fail(.invalidChannel)
            return nil
        }
        guard let options = options(for: channel) else {
            fail(.unknownNamespace)
            return nil
        }
        return options
    }

    /// Subscribe first (live publications start arriving and wait in `.recovering`), then take the
    /// broker's snapshot, reply with what was missed, then release the waiting publications newer than
    /// the snapshot: no gap, no duplicate.
    private func subscribe(
        _ channel: String, id: Int, recover: StreamPosition?, options: NamespaceOptions, session: ClientSession,
        shard: ChannelsShard
    ) {
        session.subscriptions[channel] = .recovering([])
        shard.add(session.handle.id, to: channel)
        broker.subscribe(channel: channel, since: recover, options: options, on: shard.eventLoop).assumeIsolated()
            .whenSuccess {
                snapshot in
                guard case .recovering(let pending)? = session.subscriptions[channel] else { return }
                let recovered = snapshot.publications.map {
                    ServerMessage.publicationJSON($0, channel: nil, showUser: options.showPublisher, push: false)
                }
                var result =
                    "{\"epoch\":\(ServerMessage.quote(snapshot.epoch)),\"offset\":\(snapshot.offset)"
                if recover != nil {
                    result +=
                        ",\"recovered\":\(snapshot.recovered),\"publications\":[\(recovered.joined(separator: ","))]"
                }
                session.send(ServerMessage.reply(id: id, result: result + "}"))
                var last = max(snapshot.offset, snapshot.publications.last?.offset ?? 0)
                for (publication, frame, lane) in pending where publication.offset > last {
                    session.send(frame, lane: lane)
                    last = publication.offset
                }
                session.subscriptions[channel] = .live(lastOffset: last)
                if options.presence { self.broker.join(channel: channel, member: session.member, options: options) }
            }
    }

    private func leave(_ channel: String, session: ClientSession, shard: ChannelsShard) {
        session.subscriptions[channel] = nil
        shard.remove(session.handle.id, from: channel)
        let options = options(for: channel) ?? NamespaceOptions()
        broker.unsubscribe(channel: channel, options: options, on: shard.eventLoop)
        if options.presence { broker.leave(channel: channel, member: session.member, options: options) }
    }
}
