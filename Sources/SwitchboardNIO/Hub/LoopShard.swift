import CoreMetrics
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// Work an application queues for one event loop from any thread (a channel's publication for the
/// loop's subscribers, say): it runs on that loop, in the order submitted, in the same ordered stream
/// as the hub's own sends and broadcasts to the loop.
public protocol LoopTask: AnyObject, Sendable {
    /// Runs on `shard.eventLoop`. `alone` is true when nothing else arrived in the same batch: write
    /// and flush each receiver at once (lowest latency); otherwise write, and leave the flush to the
    /// shard, which flushes every written connection once at the end of the batch.
    func run(on shard: LoopShard, alone: Bool)
}

/// Everything one event loop owns: its registry shard, its heartbeat wheel, its batch of pending
/// flushes and its counters. Work from other threads arrives through one inbox per loop (a short lock,
/// one `execute` per batch), so the hot path takes no lock and what one thread sends to a loop arrives
/// in order.
///
/// @unchecked Sendable: every mutable property is read and written only on `eventLoop`; the inbox has its lock.
public final class LoopShard: @unchecked Sendable {
    /// This loop's place in `Hub.eventLoops`, and the `shard` of every `ConnectionID` made here.
    public let index: Int
    /// The loop that owns this shard; the shard's state may be touched only on it.
    public let eventLoop: any EventLoop
    private let configuration: SwitchboardConfiguration
    private let metrics: SwitchboardMetrics
    private let queueDepthGauge: Gauge
    private(set) var registry = RegistryShard<WebSocketConnection>()
    private var nextSequence: UInt64 = 0
    private var wheel: TimingWheel<WheelEntry>
    private var expired: [WheelEntry] = []
    private var pendingFlush: [WebSocketConnection] = []
    private var flushing: [WebSocketConnection] = []
    private var flushScheduled = false
    private var heartbeatTask: RepeatedTask?
    var counters = LoopCounters()
    private(set) var totals = LoopCounters()
    var queuedMessages = 0
    var admission: AdmissionControl
    private var draining: EventLoopPromise<Void>?
    private var rng = SystemRandomNumberGenerator()
    // Lock: guards the work waiting for this loop, appended from any thread and taken by the loop.
    private let inbox = NIOLockedValueBox(Inbox())
    private var taken: [Work] = []
    private var runningInbox = false
    /// Counts inbox batches, so a connection can tell its first write of a batch from later ones.
    private var batch: UInt64 = 0
    private var broadcastRun: [ByteBuffer] = []
    /// Inflaters lent to this loop's connections while a compressed message arrives.
    let inflaters = InflaterPool()
    /// Compresses frames for this loop's deflate connections; nil when deflate is off.
    package let deflater: FrameDeflater?

    /// What other threads ask of this loop, in one ordered stream.
    private enum Work {
        case broadcast(ByteBuffer)
        case send(ByteBuffer, to: ConnectionID, kind: OutboundClass)
        case sendToUser(ByteBuffer, user: String)
        case close(ConnectionID, code: CloseCode, reason: String, reconnect: Bool)
        case task(any LoopTask)
    }

    private struct Inbox {
        var work: [Work] = []
        var scheduled = false
    }

    init(
        index: Int, of loops: Int, eventLoop: any EventLoop, configuration: SwitchboardConfiguration,
        metrics: SwitchboardMetrics
    ) {
        self.index = index
        self.eventLoop = eventLoop
        self.configuration = configuration
        self.metrics = metrics
        self.queueDepthGauge = metrics.queueDepthGauge(loop: index)
        self.deflater = configuration.deflate.map(FrameDeflater.init(options:))
        self.wheel = TimingWheel(tick: Self.tick(for: configuration), slotCount: 1024, now: Self.now())
        let loops = max(loops, 1)
        self.admission = AdmissionControl(
            maxPending: (configuration.maxPendingHandshakes + loops - 1) / loops,
            upgradesPerSecond: configuration.maxUpgradesPerSecond / Double(loops), now: Self.now())
    }

    static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// A tenth of the shortest heartbeat period, within 10 ms … 1 s: deadlines fire at most one tick late.
    static func tick(for configuration: SwitchboardConfiguration) -> Int64 {
        let periods = [configuration.pingInterval, configuration.pongTimeout, configuration.idleTimeout]
            .map(\.nanoseconds).filter { $0 > 0 }
        let shortest = periods.min() ?? 1_000_000_000
        return min(max(shortest / 10, 10_000_000), 1_000_000_000)
    }

    func nextConnectionID() -> ConnectionID {
        nextSequence += 1
        return ConnectionID(shard: index, sequence: nextSequence)
    }

    // MARK: registry

    func register(_ connection: WebSocketConnection) {
        registry.insert(connection, id: connection.id, user: connection.userID)
        if let first = firstHeartbeatCheck(connection) { scheduleCheck(connection, at: first) }
    }

    /// Files the connection's next check, unless one as early is filed already: a connection has one
    /// live entry in the wheel (`wheelCheckAt`), and entries it left behind are skipped when they come up.
    func scheduleCheck(_ connection: WebSocketConnection, at deadline: Int64) {
        guard deadline < connection.wheelCheckAt else { return }
        connection.wheelCheckAt = deadline
        wheel.schedule(WheelEntry(id: connection.id, at: deadline), at: deadline)
    }

    func reindex(_ connection: WebSocketConnection, from old: String?, to new: String?) {
        guard old != new, registry[connection.id] != nil else { return }
        registry.remove(connection.id, user: old)
        registry.insert(connection, id: connection.id, user: new)
    }

    func unregister(_ connection: WebSocketConnection) {
        registry.remove(connection.id, user: connection.userID)
        if registry.count == 0, let draining {
            self.draining = nil
            draining.succeed()
        }
    }

    // MARK: delivery

    /// The open connection with this id on this loop. Call on `eventLoop`.
    public func connection(_ id: ConnectionID) -> (any LocalConnection)? {
        eventLoop.preconditionInEventLoop()
        return registry[id]
    }

    /// The open connections of `user` on this loop. Call on `eventLoop`.
    public func connections(ofUser user: String) -> [any LocalConnection] {
        eventLoop.preconditionInEventLoop()
        return registry.connections(ofUser: user).compactMap { registry[$0] }
    }

    /// Calls `body` with every open connection on this loop. Call on `eventLoop`; O(connections).
    public func forEachConnection(_ body: (any LocalConnection) -> Void) {
        eventLoop.preconditionInEventLoop()
        for connection in registry.byID.values { body(connection) }
    }

    func deliver(_ frame: ByteBuffer, toUser user: String) {
        for id in registry.connections(ofUser: user) { registry[id]?.enqueue(frame) }
    }

    /// Queues `task` to run on this loop, from any thread, after everything submitted before it.
    public func submit(_ task: any LoopTask) { submit(.task(task)) }

    func submitBroadcast(_ frame: ByteBuffer) { submit(.broadcast(frame)) }
    func submitSend(_ frame: ByteBuffer, to id: ConnectionID, kind: OutboundClass) {
        // On this loop with nothing queued before it, the send cannot overtake anything: skip the inbox.
        if eventLoop.inEventLoop, !runningInbox, inbox.withLockedValue({ $0.work.isEmpty }) {
            registry[id]?.enqueue(frame, as: kind)
        } else {
            submit(.send(frame, to: id, kind: kind))
        }
    }
    func submitSend(_ frame: ByteBuffer, toUser user: String) { submit(.sendToUser(frame, user: user)) }
    func submitClose(_ id: ConnectionID, code: CloseCode, reason: String, reconnect: Bool) {
        submit(.close(id, code: code, reason: reason, reconnect: reconnect))
    }

    /// Work that arrives before the loop gets to it goes out together: consecutive broadcasts in one
    /// pass over the connections, and one flush (one syscall) per connection for the whole batch.
    private func submit(_ work: Work) {
        let schedule = inbox.withLockedValue { inbox -> Bool in
            inbox.work.append(work)
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        if schedule { eventLoop.execute { self.runInbox() } }
    }

    private func runInbox() {
        inbox.withLockedValue { inbox in
            inbox.scheduled = false
            swap(&inbox.work, &taken)
        }
        let alone = taken.count == 1
        runningInbox = true
        batch &+= 1
        for work in taken {
            if case .broadcast(let frame) = work {
                broadcastRun.append(frame)
                continue
            }
            broadcastPending()
            switch work {
            case .broadcast: break
            case .send(let frame, let id, let kind): registry[id]?.enqueue(frame, as: kind)
            case .sendToUser(let frame, let user): deliver(frame, toUser: user)
            case .close(let id, let code, let reason, let reconnect):
                registry[id]?.close(code: code, reason: reason, reconnect: reconnect)
            case .task(let task): task.run(on: self, alone: alone)
            }
        }
        broadcastPending()
        taken.removeAll(keepingCapacity: true)
        // Off before the flush: a flush can make a connection writable again, and what its queue then
        // writes needs a flush of its own, scheduled as usual.
        runningInbox = false
        flushAll()
    }

    /// One pass over the connections for a run of broadcasts, flushing each connection as soon as it
    /// has them all: the first receivers of a broadcast to thousands do not wait for the last.
    private func broadcastPending() {
        guard !broadcastRun.isEmpty else { return }
        for connection in registry.byID.values { connection.enqueue(batch: broadcastRun) }
        broadcastRun.removeAll(keepingCapacity: true)
    }

    /// Collects connections that wrote this turn and flushes each once, after every task already
    /// queued on the loop has run (or sooner, when a fan-out pass calls `flushAll` at its end): many
    /// messages per connection share one syscall. The one flush mechanism for data and control frames.
    func scheduleFlush(_ connection: WebSocketConnection) {
        pendingFlush.append(connection)
        // An inbox batch in progress ends with `flushAll` anyway.
        guard !flushScheduled, !runningInbox else { return }
        flushScheduled = true
        eventLoop.execute {
            self.flushScheduled = false
            self.flushAll()
        }
    }

    /// Whether an application's write to `connection` should be flushed at once: inside an inbox batch,
    /// its first message is (it leaves now, while the connection is in cache, rather than after every
    /// other write of the batch; a command reply still waiting goes with it); later ones wait for the
    /// batch's closing flush, so a busy connection costs at most two syscalls per batch. Outside a batch
    /// (replies while reading), the flush waits for the end of the turn so that what follows shares it.
    func flushesAtOnce(_ connection: WebSocketConnection) -> Bool {
        guard runningInbox, connection.flushedInBatch != batch else { return false }
        connection.flushedInBatch = batch
        return true
    }

    /// Flushes every connection written and not yet flushed on this loop. Call on `eventLoop`.
    public func flushAll() {
        swap(&pendingFlush, &flushing)
        // Connections flushed early (a broadcast batch, a first message of a batch) may be listed; skip them.
        for connection in flushing where connection.outbound.flushPending { connection.flushNow() }
        flushing.removeAll(keepingCapacity: true)
    }

    // MARK: heartbeats

    func newHeartbeat() -> HeartbeatState {
        let configuration = configuration
        let now = Self.now()
        let interval = configuration.pingInterval.nanoseconds
        return HeartbeatState(
            now: now,
            firstPingAt: interval > 0 ? now + jittered(interval) : Int64.max / 2,
            pongTimeout: configuration.pongTimeout.nanoseconds,
            idleTimeout: configuration.idleTimeout.nanoseconds)
    }

    private func firstHeartbeatCheck(_ connection: WebSocketConnection) -> Int64? {
        let configuration = configuration
        guard configuration.pingInterval.nanoseconds > 0 || configuration.idleTimeout.nanoseconds > 0 else {
            return nil
        }
        if case .wait(let until) = connection.heartbeat.evaluate(now: Self.now(), nextInterval: 0) { return until }
        return Self.now()
    }

    /// ±10% so that connections opened together do not ping together.
    private func jittered(_ interval: Int64) -> Int64 {
        interval + Int64.random(in: -(interval / 10)...(interval / 10), using: &rng)
    }

    func startHeartbeats() {
        let tick = TimeAmount.nanoseconds(wheel.tick)
        heartbeatTask = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in self.heartbeatTick() }
    }

    func stopHeartbeats() {
        heartbeatTask?.cancel()
        heartbeatTask = nil
    }

    private func heartbeatTick() {
        let now = Self.now()
        wheel.advance(to: now, into: &expired)
        let interval = configuration.pingInterval.nanoseconds
        for entry in expired {
            guard let connection = registry[entry.id], entry.at == connection.wheelCheckAt else { continue }
            connection.wheelCheckAt = .max
            if let next = connection.heartbeatDue(
                now: now, nextInterval: interval > 0 ? jittered(interval) : Int64.max / 2), next < Int64.max / 4
            {
                scheduleCheck(connection, at: next)
            }
        }
        expired.removeAll(keepingCapacity: true)
        counters.publish(to: metrics, totals: &totals)
        queueDepthGauge.record(queuedMessages)
    }

    // MARK: shutdown

    /// Sends every connection close 1001 in batches, then succeeds once the shard is empty.
    func drain() -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        if registry.count == 0 {
            promise.succeed()
        } else {
            draining = promise
            closeNextBatch(Array(registry.byID.values))
        }
        return promise.futureResult
    }

    private func closeNextBatch(_ remaining: [WebSocketConnection]) {
        let batch = remaining.prefix(configuration.shutdownBatchSize)
        let window = max(configuration.reconnectJitterWindow.nanoseconds / 1_000_000, 1)
        for connection in batch {
            let after = Int64.random(in: 0...window, using: &rng)
            connection.close(
                .shutdown, message: "server shutting down; reconnect after \(after) ms",
                reconnectAfter: .milliseconds(after))
        }
        let rest = Array(remaining.dropFirst(batch.count))
        guard !rest.isEmpty else { return }
        eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) { self.closeNextBatch(rest) }
    }

    /// Past the shutdown deadline: drop whatever is still open.
    func forceClose() {
        for connection in registry.byID.values { connection.context?.close(promise: nil) }
    }
}

/// A connection's check in the heartbeat wheel, with the deadline it was filed for.
struct WheelEntry: Sendable {
    let id: ConnectionID
    let at: Int64
}

extension WebSocketConnection {
    /// Runs when this connection's heartbeat deadline comes up; returns when to look again, or nil
    /// when the connection is ending.
    func heartbeatDue(now: Int64, nextInterval: Int64) -> Int64? {
        guard machine.state == .open, let context else { return nil }
        if let expiresAt, now >= Int64(expiresAt.uptimeNanoseconds) {
            close(.tokenExpired)
            return nil
        }
        if let warning = expiryWarningAt, now >= Int64(warning.uptimeNanoseconds) {
            expiryWarningAt = nil
            hub.application.credentialsExpiring(self)
            guard machine.state == .open else { return nil }
        }
        let next: Int64
        switch heartbeat.evaluate(now: now, nextInterval: nextInterval) {
        case .wait(let until):
            next = until
        case .ping(let checkAt):
            hub.metrics.queueDepthSample.record(outbound.queue.count)
            let ping = FrameEncoder.encode(.ping, bytes: EmptyCollection(), allocator: context.channel.allocator)
            if streamWriter == nil {
                writeControl(ping)
            } else {
                // A stream's client cannot answer: the ping (a comment) counts as answered once NIO wrote it
                // to the socket. One whose socket takes nothing more (a reader gone silent) times out.
                let written = context.eventLoop.makePromise(of: Void.self)
                writeControl(ping, written: written)
                written.futureResult.assumeIsolated().whenSuccess {
                    self.heartbeat.pongReceived()
                    self.heartbeat.dataReceived(now: LoopShard.now())
                }
            }
            next = checkAt
        case .pongTimeout:
            log(.debug, "pong timeout")
            close(.pongTimeout)
            return nil
        case .idleTimeout:
            close(.idleTimeout)
            return nil
        }
        return Self.earliest(Self.earliest(next, expiresAt), expiryWarningAt)
    }
}
