import Atomics
import Logging
import NIOConcurrencyHelpers
import NIOCore
import ServiceLifecycle
import SwitchboardCore

/// A connection as reported by registry queries.
public struct ConnectionInfo: Sendable, Hashable {
    /// Which connection; `id.shard` is the index of its event loop in `Hub.eventLoops`.
    public let id: ConnectionID
    /// The user it was identified as (at the upgrade or by `identify`); nil: anonymous.
    public let userID: String?
    /// Messages waiting in its outbound queue (the socket not taking them) when it was looked up.
    public let queuedMessages: Int
}

/// Totals since start, summed over every event loop.
public struct HubStatistics: Sendable {
    /// Open connections now (`Hub.connectionCount`): a current count, not a total.
    public var openConnections = 0
    /// Connections in the loops' registries now, each loop counted on that loop; differs from
    /// `openConnections` only by opens and closes in flight.
    public var registeredConnections = 0
    /// Data messages received from clients and handed to the application (whole messages, not frames).
    public var messagesIn = 0
    /// Data messages written to clients; control frames, gap and disconnect notices are not counted.
    public var messagesOut = 0
    /// Bytes of those messages' frames, after compression and before TLS.
    public var bytesOut = 0
    /// Messages dropped from lagging connections' outbound queues to make room for newer ones.
    public var queueDropped = 0
    /// Messages waiting in outbound queues now: a current level, not a total.
    public var queuedMessages = 0
    /// Connections accepted whose upgrade is not finished (the ones `maxPendingHandshakes` bounds).
    public var pendingHandshakes = 0
    /// Connections opened and closed since start.
    public var connectionsAccepted = 0
    /// Connections closed since start, for any reason.
    public var connectionsClosed = 0
}

/// The registry and delivery front door, usable from any thread. Each operation crosses to each
/// event loop at most once (one `execute` per loop, not per connection); a frame for many receivers
/// is one shared buffer.
public final class Hub: Sendable {
    /// The settings the hub was made with; a reload changes `originPolicy` and `abuseLimits`, not this.
    public let configuration: SwitchboardConfiguration
    /// The swift-metrics instruments the hub and its connections record to.
    public let metrics: SwitchboardMetrics
    /// Pages served on the WebSocket listener to requests that are not upgrades; nil: 404/426 as before.
    let site: StaticSite?
    let logger: Logger
    let application: any SwitchboardApplication
    let shards: [LoopShard]
    /// Open connections plus upgrades in progress; checked against `maxConnections` at the handshake.
    private let slots = ManagedAtomic(0)
    private let open = ManagedAtomic(0)
    private let accepted = ManagedAtomic(0)
    private let closed = ManagedAtomic(0)
    /// Open connections per transport, in `Transport.allCases` order.
    private let openByTransport = Transport.allCases.map { _ in ManagedAtomic(0) }
    private let shuttingDown = ManagedAtomic(false)
    private let heartbeatsStarted = ManagedAtomic(false)
    // Lock: guards the drain's future, set by the first `shutdown` call.
    private let draining = NIOLockedValueBox<EventLoopFuture<Void>?>(nil)
    // Lock: guards what a reload may change (origins, abuse limits), read once per handshake.
    private let reloadable: NIOLockedValueBox<(origins: OriginPolicy, limits: AbuseLimits)>
    // Lock: guards connections per client address, taken once per handshake and once per close.
    private let addresses = NIOLockedValueBox(AddressTable())
    // Lock: guards open connections per user (with the last time each offender was logged).
    private let users = NIOLockedValueBox([String: (open: Int, lastLogged: Int64)]())

    /// Makes a hub for connections that another server accepts and upgrades (`admit`, then `adopt`), on that
    /// server's event loops: one registry shard per loop of `eventLoopGroup`, which must be the group the
    /// server's connections live on. Run it (`run()`, a swift-service-lifecycle `Service`) for heartbeats and
    /// a graceful drain; `WebSocketServer` makes and runs its own.
    ///
    /// - Parameters:
    ///   - eventLoopGroup: the embedding server's group: one registry shard per loop.
    ///   - metrics: where the hub's counters and gauges go.
    ///   - logger: where the hub logs.
    ///   - configuration: limits, timers, queues. Of its listener settings only `host` and `publicHosts` count:
    ///     they name this server for the same-origin check (give the embedding server's address, or its
    ///     public names; a loopback `host` accepts browsers on loopback names only).
    ///   - application: the hooks; `attached(to:)` is called here, once.
    public convenience init(
        configuration: SwitchboardConfiguration, application: any SwitchboardApplication,
        eventLoopGroup: any EventLoopGroup, metrics: SwitchboardMetrics = SwitchboardMetrics(),
        logger: Logger = Logger(label: "switchboard")
    ) {
        self.init(
            configuration: configuration, application: application, metrics: metrics, logger: logger,
            eventLoops: Array(eventLoopGroup.makeIterator()))
    }

    init(
        configuration: SwitchboardConfiguration, application: any SwitchboardApplication, metrics: SwitchboardMetrics,
        logger: Logger, eventLoops: [any EventLoop], site: StaticSite? = nil
    ) {
        self.site = site
        self.configuration = configuration
        self.application = application
        self.metrics = metrics
        self.logger = logger
        self.reloadable = NIOLockedValueBox((configuration.originPolicy, configuration.abuseLimits))
        self.ownHostNames = OwnHostNames(bindHost: configuration.host, publicHosts: configuration.publicHosts)
        self.shards = eventLoops.enumerated().map { index, loop in
            LoopShard(
                index: index, of: eventLoops.count, eventLoop: loop, configuration: configuration, metrics: metrics)
        }
        application.attached(to: self)
    }

    /// The event loops, in shard order: `ConnectionID.shard` indexes this array.
    public var eventLoops: [any EventLoop] { shards.map(\.eventLoop) }

    func shard(for eventLoop: any EventLoop) -> LoopShard? {
        shards.first { $0.eventLoop === eventLoop }
    }

    // MARK: settings a reload changes

    /// Which web origins may connect now (the configuration's, or the last reload's).
    public var originPolicy: OriginPolicy { reloadable.withLockedValue { $0.origins } }
    /// The names this server is reached by, for the same-origin check (from its configuration).
    public let ownHostNames: OwnHostNames
    /// The abuse limits in force now.
    public var abuseLimits: AbuseLimits { reloadable.withLockedValue { $0.limits } }

    /// Applies reloaded settings to handshakes from now on; open connections are not re-checked.
    public func update(originPolicy: OriginPolicy, abuseLimits: AbuseLimits) {
        reloadable.withLockedValue { $0 = (originPolicy, abuseLimits) }
    }

    /// Counts a connection from `address` against the per-address limits.
    func admitAddress(_ address: String, limits: AbuseLimits) -> AddressTable.Verdict {
        addresses.withLockedValue { $0.admit(address, limits: limits, now: LoopShard.now()) }
    }

    func releaseAddress(_ address: String) {
        let now = LoopShard.now()
        addresses.withLockedValue { $0.release(address, now: now) }
    }

    /// Counts a connection of `user` against `maxConnectionsPerUser`; nil when admitted, else whether to log.
    func admitUser(_ user: String, limits: AbuseLimits) -> Bool? {
        users.withLockedValue { users in
            let entry = users[user] ?? (0, .min)
            guard limits.maxConnectionsPerUser <= 0 || entry.open < limits.maxConnectionsPerUser else {
                let now = LoopShard.now()
                let log = entry.lastLogged == .min || now - entry.lastLogged >= 10_000_000_000
                if log { users[user] = (entry.open, now) }
                return log
            }
            users[user] = (entry.open + 1, entry.lastLogged)
            return nil
        }
    }

    func releaseUser(_ user: String) {
        users.withLockedValue { users in
            guard let entry = users[user] else { return }
            users[user] = entry.open > 1 ? (entry.open - 1, entry.lastLogged) : nil
        }
    }

    // MARK: counting

    /// Open WebSocket connections (registered, not yet unregistered).
    public var connectionCount: Int { open.load(ordering: .relaxed) }

    /// Whether the server has begun its graceful shutdown: new upgrades are refused with 503.
    public var isShuttingDown: Bool { shuttingDown.load(ordering: .relaxed) }

    func reserveConnectionSlot() -> Bool {
        if slots.loadThenWrappingIncrement(ordering: .relaxed) >= configuration.maxConnections {
            slots.wrappingDecrement(ordering: .relaxed)
            return false
        }
        return true
    }

    func releaseConnectionSlot() { slots.wrappingDecrement(ordering: .relaxed) }

    func connectionOpened(_ transport: Transport) {
        let now = open.wrappingIncrementThenLoad(ordering: .relaxed)
        accepted.wrappingIncrement(ordering: .relaxed)
        metrics.connectionsAccepted.increment()
        metrics.connectionsOpen.record(now)
        metrics.transportAccepted[transport]?.increment()
        metrics.transportOpen[transport]?.record(counter(transport).wrappingIncrementThenLoad(ordering: .relaxed))
    }

    func connectionClosed(_ reason: DisconnectReason, transport: Transport) {
        releaseConnectionSlot()
        let now = open.wrappingDecrementThenLoad(ordering: .relaxed)
        closed.wrappingIncrement(ordering: .relaxed)
        metrics.connectionsOpen.record(now)
        metrics.transportOpen[transport]?.record(counter(transport).wrappingDecrementThenLoad(ordering: .relaxed))
        metrics.closed(reason)
    }

    private func counter(_ transport: Transport) -> ManagedAtomic<Int> {
        openByTransport[Transport.allCases.firstIndex(of: transport) ?? 0]
    }

    /// Open connections per transport now (`Transport.rawValue`: `websocket`, `sse`, `http_stream`).
    public var connectionsByTransport: [String: Int] {
        Dictionary(uniqueKeysWithValues: Transport.allCases.map { ($0.rawValue, counter($0).load(ordering: .relaxed)) })
    }

    // MARK: delivery

    /// The per-loop shards, in `eventLoops` order: an application keeps per-loop state beside them and
    /// queues work for a loop with `LoopShard.submit`.
    public var loopShards: [LoopShard] { shards }

    /// Queues an encoded frame (see `FrameEncoder`) for one connection, from any thread; unknown ids are
    /// ignored. Frames sent from one thread to one connection arrive in order. `kind` says what may
    /// happen to the frame while the connection lags (`.reliable`: never dropped).
    public func send(frame: ByteBuffer, to id: ConnectionID, as kind: OutboundClass = .standard) {
        guard shards.indices.contains(id.shard) else { return }
        shards[id.shard].submitSend(frame, to: id, kind: kind)
    }

    /// Queues an encoded frame for every connection of a user, on every loop, from any thread.
    public func send(frame: ByteBuffer, toUser user: String) {
        for shard in shards { shard.submitSend(frame, toUser: user) }
    }

    /// Queues one encoded frame for every open connection, from any thread.
    public func broadcast(frame: ByteBuffer) {
        for shard in shards { shard.submitBroadcast(frame) }
    }

    /// Encodes `text` as one text frame and queues it for every open connection, from any thread.
    public func broadcast(text: String) { broadcast(frame: FrameEncoder.encodeText(text)) }

    /// Starts the close handshake of one connection, from any thread; its disconnect notice advises
    /// reconnecting unless `reconnect` is false.
    public func close(_ id: ConnectionID, code: CloseCode = .normal, reason: String = "", reconnect: Bool = true) {
        guard shards.indices.contains(id.shard) else { return }
        shards[id.shard].submitClose(id, code: code, reason: reason, reconnect: reconnect)
    }

    // MARK: queries

    /// Looks up one connection, from any thread.
    ///
    /// - Returns: a future that completes on the connection's event loop with its info, or nil when no
    ///   connection with that id is open.
    public func lookup(_ id: ConnectionID) -> EventLoopFuture<ConnectionInfo?> {
        guard shards.indices.contains(id.shard) else {
            return shards[0].eventLoop.makeSucceededFuture(nil)
        }
        let shard = shards[id.shard]
        return shard.eventLoop.submit { shard.registry[id].map(Self.info) }
    }

    /// Every open connection of `user`, on every loop, from any thread.
    ///
    /// - Returns: a future (completing on the first loop) with the ids, sorted; each loop's part is
    ///   consistent in itself, the loops are asked one after another.
    public func connections(ofUser user: String) -> EventLoopFuture<[ConnectionID]> {
        gather { shard in shard.registry.connections(ofUser: user).sorted() }
    }

    /// Every open connection, from any thread: consistent per loop, one `submit` per loop.
    ///
    /// - Returns: a future completing on the first loop. O(connections): for operators, not hot paths.
    public func snapshot() -> EventLoopFuture<[ConnectionInfo]> {
        gather { shard in shard.registry.byID.values.map(Self.info) }
    }

    /// Totals since start, summed over the loops, from any thread.
    ///
    /// - Returns: a future completing on the first loop.
    public func statistics() -> EventLoopFuture<HubStatistics> {
        let open = connectionCount
        let perLoop = shards.map { shard in
            shard.eventLoop.submit {
                (shard.registry.count, shard.totals, shard.counters, shard.queuedMessages, shard.admission.pending)
            }
        }
        return EventLoopFuture.whenAllSucceed(perLoop, on: shards[0].eventLoop).map { parts in
            var stats = HubStatistics(openConnections: open)
            stats.connectionsAccepted = self.accepted.load(ordering: .relaxed)
            stats.connectionsClosed = self.closed.load(ordering: .relaxed)
            for (registered, totals, pending, queued, handshakes) in parts {
                stats.pendingHandshakes += handshakes
                stats.registeredConnections += registered
                stats.messagesIn += totals.messagesIn + pending.messagesIn
                stats.messagesOut += totals.messagesOut + pending.messagesOut
                stats.bytesOut += totals.bytesOut + pending.bytesOut
                stats.queueDropped += totals.queueDropped + pending.queueDropped
                stats.queuedMessages += queued
            }
            return stats
        }
    }

    private func gather<T: Sendable>(_ body: @escaping @Sendable (LoopShard) -> [T]) -> EventLoopFuture<[T]> {
        let perLoop = shards.map { shard in shard.eventLoop.submit { body(shard) } }
        return EventLoopFuture.whenAllSucceed(perLoop, on: shards[0].eventLoop).map { $0.flatMap { $0 } }
    }

    private static func info(_ connection: WebSocketConnection) -> ConnectionInfo {
        ConnectionInfo(id: connection.id, userID: connection.userID, queuedMessages: connection.outbound.queue.count)
    }

    // MARK: lifecycle

    /// Starts each loop's heartbeat wheel (pings, idle and expiry checks); once.
    public func startHeartbeats() {
        guard !heartbeatsStarted.exchange(true, ordering: .relaxed) else { return }
        for shard in shards { shard.eventLoop.execute { shard.startHeartbeats() } }
    }

    /// Refuses new upgrades with 503, closes every connection with 1001 in batches (each told a jittered
    /// time to reconnect), waits up to `configuration.shutdownTimeout` for them to finish closing, then
    /// drops the rest and stops the heartbeats. Callable from any thread, any number of times: the first call
    /// starts the drain, every call gets its end.
    @discardableResult
    public func shutdown() -> EventLoopFuture<Void> {
        let promise = shards[0].eventLoop.makePromise(of: Void.self)
        let first = draining.withLockedValue { existing -> EventLoopFuture<Void>? in
            if let existing { return existing }
            existing = promise.futureResult
            return nil
        }
        if let first {
            promise.succeed()  // not handed out: completed so it is not leaked unfulfilled
            return first
        }
        promise.completeWith(drain(deadline: configuration.shutdownTimeout))
        return promise.futureResult
    }

    /// Closes every connection with 1001 in batches; after `deadline`, drops the rest.
    private func drain(deadline: TimeAmount) -> EventLoopFuture<Void> {
        shuttingDown.store(true, ordering: .relaxed)
        let loop = shards[0].eventLoop
        let drained = EventLoopFuture.andAllComplete(
            shards.map { shard in shard.eventLoop.flatSubmit { shard.drain() } }, on: loop)
        let timer = loop.scheduleTask(in: deadline) {
            for shard in self.shards { shard.eventLoop.execute { shard.forceClose() } }
        }
        return drained.always { _ in timer.cancel() }.flatMap {
            EventLoopFuture.andAllComplete(
                self.shards.map { shard in shard.eventLoop.submit { shard.stopHeartbeats() } }, on: loop)
        }
    }
}

/// Runs the hub beside the server that adopts its connections (in a `ServiceGroup`, say Hummingbird's
/// `Application(services:)`): heartbeats while running, `shutdown()` on graceful shutdown.
extension Hub: Service {
    /// Starts the heartbeats, waits for graceful shutdown, then drains (see `shutdown()`).
    public func run() async throws {
        // A server's quiescing may have drained the hub already: then there is nothing left to beat for.
        if !isShuttingDown { startHeartbeats() }
        try? await gracefulShutdown()
        try await shutdown().get()
    }
}
