import Atomics
import CoreMetrics
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// The application behind `switchboard serve`: client protocol v1 (docs/PROTOCOL.md) over the
/// connection manager: subscribe, publish, presence, history with recovery, through a `Broker` and a
/// `PresenceManager`.
///
/// Each event loop keeps its own channel tables (`ChannelsLoop`); the broker's events reach them through
/// each loop's inbox, in order; futures from the broker, presence and authenticator are hopped to the
/// connection's loop and bounded by `ChannelsConfiguration.brokerTimeout`.
public final class ChannelsApplication: SwitchboardApplication, BrokerEventHandler {
    /// Decides each upgrade: where token checks plug in. It may suspend (fetch keys, ask a database) and
    /// is bounded by the handshake timeout.
    public typealias Authenticator = @Sendable (HTTPRequestHead) async throws -> UpgradeDecision

    /// Namespaces and per-connection limits in force now: a reload swaps them whole, atomically, and each
    /// command reads them once.
    public var configuration: ChannelsConfiguration { current.load(ordering: .acquiring).value }
    private let current: ManagedAtomic<ConfigurationBox>
    let broker: any Broker
    let presence: any PresenceManager
    /// Reaches the other nodes of a cluster; nil on a single node.
    let control: (any NodeControl)?
    /// What node info calls this node.
    let nodeName: String
    let started = NIODeadline.now()
    let nodeSubscriptions: NodeSubscriptions
    private let authenticate: Authenticator?
    /// Checks tokens (upgrade header, `connect`, `refresh`, subscription tokens); nil: tokens are refused as
    /// malformed requests and every connection is anonymous unless the authenticator names a user.
    let verifier: TokenVerifier?
    /// Whether connections without a user may use the server.
    let anonymousAllowed: Bool
    let metrics: ChannelsMetrics
    let failureLog: ThrottledLog
    let logger: Logger
    private let attachment = ManagedAtomicLazyReference<ChannelsLoops>()

    /// - Parameters:
    ///   - broker: where channel streams live; `LocalBroker` (in-process) by default.
    ///   - presence: who is in each channel; `LocalPresence` by default.
    ///   - control: reaches the other nodes of a cluster (user-targeted commands, node info); nil alone.
    ///   - nodeName: what node info calls this node.
    ///   - verifier: checks tokens (docs/PROTOCOL.md, "Authentication"); nil: no tokens.
    ///   - metricsFactory: where the channel layer's metrics go (auth failures).
    ///   - authenticate: decides each upgrade instead of the built-in `Authorization: Bearer` check; nil
    ///     accepts every upgrade, authenticated by a valid bearer token or else not yet.
    public init(
        configuration: ChannelsConfiguration = .chatDefaults, broker: any Broker = LocalBroker(),
        presence: any PresenceManager = LocalPresence(), control: (any NodeControl)? = nil,
        nodeName: String = ProcessInfo.processInfo.hostName, verifier: TokenVerifier? = nil,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger = Logger(label: "switchboard.channels"), authenticate: Authenticator? = nil
    ) {
        self.current = ManagedAtomic(ConfigurationBox(configuration))
        self.broker = broker
        self.presence = presence
        self.control = control
        self.nodeName = nodeName
        self.authenticate = authenticate
        self.verifier = verifier
        let auth = verifier?.configuration ?? AuthConfiguration()
        self.anonymousAllowed = verifier == nil || auth.anonymousAllowed
        self.metrics = ChannelsMetrics(factory: metricsFactory)
        self.failureLog = ThrottledLog(interval: auth.failureLogInterval, logger: logger)
        if verifier == nil,
            let namespace = configuration.namespaces.first(where: { $0.value.permissions.subscribe == .token })
        {
            logger.warning(
                "namespace requires subscription tokens but no token verifier is configured: every subscribe is refused",
                metadata: ["namespace": "\(namespace.key)"])
        }
        self.logger = logger
        self.nodeSubscriptions = NodeSubscriptions(broker: broker, logger: logger, timeout: configuration.brokerTimeout)
        broker.attach(self)
        control?.attach(self)
    }

    var loops: ChannelsLoops? { attachment.load() }

    /// Replaces namespaces and limits (a reload): commands from now on use them; subscriptions already
    /// made stay, and a namespace that is gone refuses new ones.
    public func update(configuration: ChannelsConfiguration) {
        current.store(ConfigurationBox(configuration), ordering: .releasing)
    }

    func options(for channel: String) -> NamespaceOptions? {
        configuration.namespaces[ChannelName.namespace(of: channel)]
    }

    /// Channels this node is subscribed to at the broker (those with a local subscriber).
    public var nodeSubscriptionCount: Int { nodeSubscriptions.count }

    // MARK: server-side API

    /// Publishes `data` (a JSON value, sent to subscribers byte for byte) to `channel` on behalf of the
    /// server: no connection, no rate limit, allowed even where clients may not publish.
    ///
    /// - Parameters:
    ///   - eventLoop: where the returned future completes.
    /// - Returns: the publication with its offset; fails with a `ProtocolError` (invalid channel name,
    ///   unknown namespace, `data` not JSON) or the broker's error. Callable from any thread.
    public func publish(channel: String, data: String, on eventLoop: any EventLoop) -> EventLoopFuture<Publication> {
        guard ChannelName.validate(channel) else { return eventLoop.makeFailedFuture(ProtocolError.invalidChannel) }
        guard let options = options(for: channel) else {
            return eventLoop.makeFailedFuture(ProtocolError.unknownNamespace)
        }
        guard JSONScanner.isValue(data) else {
            return eventLoop.makeFailedFuture(ProtocolError.badRequest("data must be one JSON value"))
        }
        return broker.publish(channel: channel, data: data, user: nil, options: options, on: eventLoop)
            .hop(to: eventLoop).bounded(by: configuration.brokerTimeout)
            .flatMapErrorThrowing { throw ProtocolError.publishFailure($0) }
    }

    // MARK: SwitchboardApplication

    public func attached(to hub: Hub) {
        let loops = attachment.storeIfNilThenLoad(
            ChannelsLoops(hub: hub, nodeSubscriptions: nodeSubscriptions, metrics: metrics) {
                [weak self] channel, loop in self?.resynchronize(channel, loop: loop)
            })
        precondition(loops.hub === hub, "a ChannelsApplication serves one server; make one per WebSocketServer")
    }

    public func shouldUpgrade(
        _ request: HTTPRequestHead, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<
        UpgradeDecision
    > {
        if let authenticate {
            let promise = eventLoop.makePromise(of: UpgradeDecision.self)
            promise.completeWithTask { try await authenticate(request) }
            return promise.futureResult
        }
        guard let verifier, let token = Self.bearerToken(in: request.headers) else {
            return eventLoop.makeSucceededFuture(.accept(userID: nil, subprotocol: nil))
        }
        let anonymousAllowed = self.anonymousAllowed
        return verifier.verifyConnectionToken(token, on: eventLoop).flatMapThrowing { claims -> UpgradeDecision in
            guard !claims.subject.isEmpty || anonymousAllowed else { throw TokenFailure.anonymousNotAllowed }
            return .accept(
                userID: claims.subject.isEmpty ? nil : claims.subject, subprotocol: nil, info: claims.info,
                expiresAt: claims.expiresAt.map(verifier.deadline), attachment: claims)
        }.flatMapErrorThrowing { error in
            guard let failure = error as? TokenFailure else { throw error }
            self.refused(failure, address: remoteAddress, during: "upgrade")
            return .reject(.unauthorized, reason: failure.message)
        }
    }

    static func bearerToken(in headers: HTTPHeaders) -> String? {
        for value in headers["Authorization"] {
            let parts = value.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" {
                return parts[1].trimmingCharacters(in: .whitespaces)
            }
        }
        return nil
    }

    public func connectionOpened(_ connection: any LocalConnection) {
        guard let loop = loops?.loops[connection.id.shard] else { return }
        var presenceData = connection.info
        if let info = presenceData, !JSONScanner.isValue(info) {
            logger.warning(
                "connection info is not JSON; presence leaves it out", metadata: ["connection": "\(connection.id)"])
            presenceData = nil
        }
        let bucket = TokenBucket(
            rate: configuration.publishRate, burst: configuration.publishBurst,
            now: Int64(NIODeadline.now().uptimeNanoseconds))
        let session = ClientSession(
            connection: connection, bucket: bucket, presenceData: presenceData, node: control?.nodeID)
        connection.applicationState = session
        startAuthentication(session, loop: loop)
    }

    public func connection(_ connection: any LocalConnection, received message: DataMessage) {
        guard let session = connection.session, let loop = loops?.loops[connection.id.shard] else { return }
        guard case .text(let payload) = message else {
            connection.close(.unsupportedData, message: "binary messages are not part of protocol v1")
            return
        }
        switch ClientCommand.parse(payload.readableBytesView) {
        case .failure(let failure):
            session.reply(ServerMessage.error(id: failure.id, failure.error))
        case .success(let command):
            self.handle(command, session: session, loop: loop)
        }
    }

    public func connectionClosed(_ connection: any LocalConnection, reason: DisconnectReason) {
        guard let session = connection.session, let loop = loops?.loops[connection.id.shard] else { return }
        session.isClosed = true
        session.cancelTimers()
        session.held = []
        session.waiting = [:]
        for subscription in session.subscriptions.values { leave(subscription, session: session, loop: loop) }
        session.subscriptions = [:]
    }

    public func disconnectNotice(
        reason: DisconnectReason, code: CloseCode, message: String, reconnectAfter: TimeAmount?
    ) -> ByteBuffer? {
        ServerMessage.disconnect(
            code: code, reason: message, reconnect: reason.shouldReconnect,
            afterMilliseconds: reconnectAfter.map { Int($0.nanoseconds / 1_000_000) })
    }

    public func gapNotice(lane: DeliveryLane, dropped: Int) -> ByteBuffer? {
        metrics.gaps[lane.policy]?.increment()
        metrics.gapDropped[lane.policy]?.increment(by: dropped)
        return ServerMessage.gap(channel: lane.name, dropped: dropped)
    }

    // MARK: BrokerEventHandler

    public func handlePublication(_ publication: Publication, channel: String) {
        submit(channel, .publication(publication))
    }

    public func handleJoin(_ member: PresenceMember, channel: String) { submit(channel, .join(member)) }

    public func handleLeave(_ member: PresenceMember, channel: String) { submit(channel, .leave(member)) }

    public func handleResynchronize(channel: String) { submit(channel, .resynchronize) }

    /// One event object for the loops with subscribers to the channel, queued in each one's ordered
    /// inbox; nothing is encoded here (this may run under the broker's lock).
    private func submit(_ channel: String, _ kind: ChannelEvent.Kind) {
        guard let loops else { return }
        let receiving = nodeSubscriptions.loops(receiving: channel)
        guard !receiving.isEmpty else { return }
        let event = ChannelEvent(channel: channel, kind: kind, loops: loops)
        let shards = loops.hub.loopShards
        for index in receiving where shards.indices.contains(index) { shards[index].submit(event) }
    }
}

/// The configuration as an atomic reference, so a reload swaps it without a lock on the command path.
private final class ConfigurationBox: AtomicReference, Sendable {
    let value: ChannelsConfiguration
    init(_ value: ChannelsConfiguration) { self.value = value }
}
