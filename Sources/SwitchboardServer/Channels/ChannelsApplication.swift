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
/// This type is the composition root: the hub's hooks and the server-side operations (the server API).
/// Each job is a type of its own: `ClientCommands` (the client's commands), `SubscriptionLifecycle`
/// (subscribe to leave, recovery, resynchronization), `ConnectionAuthentication` (connect, refresh,
/// expiry, subscription tokens) and `ChannelEventRouter` (broker events to the loops). Each event loop
/// keeps its own channel tables (`ChannelsLoop`); futures from the broker, presence and authenticator are
/// hopped to the connection's loop and bounded by `ChannelsConfiguration.brokerTimeout`.
public final class ChannelsApplication: SwitchboardApplication {
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
    /// Asks the application's backend (connect, refresh, subscribe, publish, rpc); nil: nothing is proxied.
    let proxy: EventProxy?
    /// Tells the application's backend what happened (the event webhook); nil: nothing is told.
    let lifecycle: LifecycleEvents?
    let metrics: ChannelsMetrics
    let failureLog: ThrottledLog
    let logger: Logger
    /// Delivers the broker's events to the loops; it holds the loops' tables once the hub is made.
    /// What the broker calls (tests call it as the broker would).
    let events: ChannelEventRouter

    /// - Parameters:
    ///   - configuration: namespaces and per-connection limits (`update(configuration:)` replaces them).
    ///   - logger: where the channel layer logs.
    ///   - broker: where channel streams live; `LocalBroker` (in-process) by default.
    ///   - presence: who is in each channel; `LocalPresence` by default.
    ///   - control: reaches the other nodes of a cluster (user-targeted commands, node info); nil alone.
    ///   - nodeName: what node info calls this node.
    ///   - verifier: checks tokens (docs/PROTOCOL.md, "Authentication"); nil: no tokens.
    ///   - metricsFactory: where the channel layer's metrics go (auth failures).
    ///   - authenticate: decides each upgrade instead of the built-in `Authorization: Bearer` check; nil
    ///     accepts every upgrade, authenticated by a valid bearer token or else not yet.
    ///   - proxy: the application's backend, asked over HTTP about the events it names (docs/PROTOCOL.md,
    ///     "Event proxy"); with a connect URL it decides every upgrade without a bearer token.
    ///   - webhooks: where lifecycle events are POSTed in signed batches (docs/API.md, "Event webhooks").
    ///   - occupancy: whether channels have subscribers anywhere, for the occupied and vacated events:
    ///     `LocalOccupancy` alone, the cluster's in a cluster (`RedisOccupancy`).
    public init(
        configuration: ChannelsConfiguration = .chatDefaults, broker: any Broker = LocalBroker(),
        presence: any PresenceManager = LocalPresence(), control: (any NodeControl)? = nil,
        nodeName: String = ProcessInfo.processInfo.hostName, verifier: TokenVerifier? = nil,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger = Logger(label: "switchboard.channels"), authenticate: Authenticator? = nil,
        proxy: ProxyConfiguration? = nil, webhooks: WebhookConfiguration? = nil,
        occupancy: any ChannelOccupancy = LocalOccupancy()
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
        self.proxy = proxy.flatMap {
            $0.isEmpty ? nil : EventProxy(configuration: $0, metricsFactory: metricsFactory, logger: logger)
        }
        self.failureLog = ThrottledLog(interval: auth.failureLogInterval, logger: logger)
        if verifier == nil,
            let namespace = configuration.namespaces.first(where: { $0.value.permissions.subscribe == .token })
        {
            logger.warning(
                "namespace requires subscription tokens but no token verifier is configured: every subscribe is refused",
                metadata: ["namespace": "\(namespace.key)"])
        }
        self.logger = logger
        let node = control?.nodeID ?? nodeName
        self.lifecycle = webhooks.map {
            LifecycleEvents(
                sender: WebhookSender(configuration: $0, node: node, metricsFactory: metricsFactory, logger: logger),
                node: node, occupancy: occupancy)
        }
        self.nodeSubscriptions = NodeSubscriptions(
            broker: broker, logger: logger, timeout: configuration.brokerTimeout, events: lifecycle)
        self.events = ChannelEventRouter(attachment: .init(), nodeSubscriptions: nodeSubscriptions)
        broker.attach(events)
        control?.attach(self)
    }

    var loops: ChannelsLoops? { events.attachment.load() }

    /// Sends the lifecycle events still queued for the webhook and waits, at most `timeout`, for it to take
    /// them: call it once the server has drained (its disconnects are queued by then).
    public func flushEvents(within timeout: TimeAmount = .seconds(5)) async {
        await lifecycle?.flush(within: timeout)
    }

    /// The event proxy the application was made with (its URLs do not change at run time); nil: none.
    public var proxyConfiguration: ProxyConfiguration? { proxy?.configuration }

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
    ///   - channel: where to publish (its namespace must exist).
    ///   - data: one JSON value, sent to subscribers byte for byte.
    ///   - idempotencyKey: makes a repeat within `ChannelsConfiguration.idempotencyWindow` (on any node of
    ///     a cluster) publish nothing and answer with the first one's offset (`Publication.isRepeat`).
    ///   - eventLoop: where the returned future completes.
    /// - Returns: the publication with its offset; fails with a `ProtocolError` (invalid channel name,
    ///   unknown namespace, `data` not JSON, a bad key) or the broker's error. Callable from any thread.
    public func publish(
        channel: String, data: String, idempotencyKey: String? = nil, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        guard ChannelName.validate(channel) else { return eventLoop.makeFailedFuture(ProtocolError.invalidChannel) }
        guard let options = options(for: channel) else {
            return eventLoop.makeFailedFuture(ProtocolError.unknownNamespace)
        }
        guard JSONScanner.isValue(data) else {
            return eventLoop.makeFailedFuture(ProtocolError.badRequest("data must be one JSON value"))
        }
        if let idempotencyKey, !IdempotencyKey.isValid(idempotencyKey) {
            return eventLoop.makeFailedFuture(
                ProtocolError.badRequest("idempotency_key must be 1–\(IdempotencyKey.maxBytes) bytes"))
        }
        let configuration = self.configuration
        // The server's keys apart from every client's: a client cannot take a key the backend will use.
        let idempotency = idempotencyKey.map { IdempotencyKey("api:" + $0, window: configuration.idempotencyWindow) }
        return broker.publish(
            channel: channel, data: data, user: nil, options: options, idempotency: idempotency, on: eventLoop
        )
        .hop(to: eventLoop).bounded(by: configuration.brokerTimeout)
        .flatMapErrorThrowing { throw ProtocolError.publishFailure($0) }
    }

    // MARK: SwitchboardApplication

    /// Makes the per-loop channel tables beside the hub's shards. One application serves one hub.
    public func attached(to hub: Hub) {
        let loops = events.attachment.storeIfNilThenLoad(
            ChannelsLoops(hub: hub, nodeSubscriptions: nodeSubscriptions, metrics: metrics) {
                [weak self] channel, loop in
                guard let self else { return }
                SubscriptionLifecycle(application: self).resynchronize(channel, loop: loop)
            })
        precondition(loops.hub === hub, "a ChannelsApplication serves one server; make one per WebSocketServer")
    }

    /// The connect proxy when configured (unless a bearer token is there to check); else the embedder's
    /// authenticator when given; otherwise a bearer token in `Authorization` is checked (401 with the reason
    /// when refused), and an upgrade without one is accepted, to authenticate with `connect`. With a proxy,
    /// the accepted connection keeps the headers it forwards.
    public func shouldUpgrade(
        _ request: HTTPRequestHead, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<
        UpgradeDecision
    > {
        decideUpgrade(request, transport: .webSocket, from: remoteAddress, on: eventLoop)
    }

    /// `shouldUpgrade` for any transport (the connect proxy is told which).
    func decideUpgrade(
        _ request: HTTPRequestHead, transport: Transport, from remoteAddress: SocketAddress?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        let token = verifier == nil ? nil : Self.bearerToken(in: request.headers)
        if let proxy, proxy.configuration.connectURL != nil, token == nil {
            return ConnectionAuthentication(application: self).connectThroughProxy(
                proxy, request: request, transport: transport, on: eventLoop)
        }
        let decision = decide(request, token: token, from: remoteAddress, on: eventLoop)
        guard let proxy else { return decision }
        let forwarded = proxy.forwarded(from: request.headers)
        return decision.map { decision in
            guard case .accept(let user, let subprotocol, let info, let expiresAt, let attachment) = decision else {
                return decision
            }
            let context = UpgradeContext(
                claims: attachment as? TokenClaims, grant: nil, forwardedHeaders: forwarded)
            return .accept(
                userID: user, subprotocol: subprotocol, info: info, expiresAt: expiresAt, attachment: context)
        }
    }

    private func decide(
        _ request: HTTPRequestHead, token: String?, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        if let authenticate {
            let promise = eventLoop.makePromise(of: UpgradeDecision.self)
            promise.completeWithTask { try await authenticate(request) }
            return promise.futureResult
        }
        guard let verifier, let token else {
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
            ConnectionAuthentication(application: self).refused(failure, address: remoteAddress, during: "upgrade")
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

    /// Gives the connection its session (as its `applicationState`) and starts its authentication.
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
        session.forwardedHeaders = connection.upgradeContext?.forwardedHeaders ?? HTTPHeaders()
        connection.applicationState = session
        switch connection.transport {
        case .eventStream: openEventStream(session, loop: loop)
        case .httpStream: openHTTPStream(session, loop: loop)
        case .webSocket: ConnectionAuthentication(application: self).startAuthentication(session, loop: loop)
        }
    }

    /// Parses one command and runs it; binary messages are not part of protocol v1 (close 1003).
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
            ClientCommands(application: self).handle(command, session: session, loop: loop)
        }
    }

    /// Leaves every channel (and its presence) the connection was in.
    public func connectionClosed(_ connection: any LocalConnection, reason: DisconnectReason) {
        guard let session = connection.session, let loop = loops?.loops[connection.id.shard] else { return }
        session.isClosed = true
        session.cancelTimers()
        session.held = []
        session.waiting = [:]
        let subscriptions = SubscriptionLifecycle(application: self)
        for subscription in session.subscriptions.values {
            subscriptions.leave(subscription, session: session, loop: loop)
        }
        session.subscriptions = [:]
        // After its unsubscribes: the webhook hears of a connection's subscriptions ending before it does.
        if session.announced, let lifecycle {
            let status = connection.closeStatus ?? (reason.closeCode, reason.defaultMessage)
            lifecycle.disconnected(session, code: status.code.rawValue, reason: status.reason)
        }
    }

    /// The protocol's `disconnect` push: code, reason, whether and when to reconnect.
    public func disconnectNotice(
        reason: DisconnectReason, code: CloseCode, message: String, reconnectAfter: TimeAmount?
    ) -> ByteBuffer? {
        ServerMessage.disconnect(
            code: code, reason: message, reconnect: reason.shouldReconnect,
            afterMilliseconds: reconnectAfter.map { Int($0.nanoseconds / 1_000_000) })
    }

    /// The protocol's `gap` push for a channel whose slow-consumer policy dropped publications; counted.
    public func gapNotice(lane: DeliveryLane, dropped: Int) -> ByteBuffer? {
        metrics.gaps[lane.policy]?.increment()
        metrics.gapDropped[lane.policy]?.increment(by: dropped)
        return ServerMessage.gap(channel: lane.name, dropped: dropped)
    }

    /// The credentials' expiry is near: a connection the connect proxy let in is renewed by the refresh
    /// proxy when there is one; otherwise the client is asked for a new token (the `refresh` push).
    public func credentialsExpiring(_ connection: any LocalConnection) {
        guard let session = connection.session, !session.isClosed,
            let expiresAt = session.expiresAt
        else { return }
        if let proxy, proxy.configuration.refreshURL != nil, connection.upgradeContext?.grant != nil,
            let loop = loops?.loops[connection.id.shard]
        {
            return ConnectionAuthentication(application: self).refreshThroughProxy(proxy, session: session, loop: loop)
        }
        session.reply(ServerMessage.refresh(expiresAt: expiresAt))
    }
}

/// The configuration as an atomic reference, so a reload swaps it without a lock on the command path.
private final class ConfigurationBox: AtomicReference, Sendable {
    let value: ChannelsConfiguration
    init(_ value: ChannelsConfiguration) { self.value = value }
}
