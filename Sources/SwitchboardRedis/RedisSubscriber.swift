import Logging
import NIOCore

/// A dedicated pub/sub connection: channels are subscribed in batches (every request made in one
/// event-loop tick goes out as one `SUBSCRIBE`), and after the connection breaks (Redis restarted, or
/// dropped this client at its output-buffer limit because it fell behind) it reconnects with backoff and
/// jitter and subscribes every wanted channel again. Whoever owns it learns of both moments through
/// `onConnectionChange`: messages sent in between are lost, and continuity must be restored from history.
/// A link that goes silent (no reset, no FIN) is found by a PING every `pingInterval`, answered within the
/// command timeout, and treated as lost.
///
/// @unchecked Sendable: every mutable property is read and written only on `eventLoop`.
public final class RedisSubscriber: @unchecked Sendable {
    /// What `onConnectionChange` reports, on `eventLoop`.
    public enum ConnectionChange: Sendable {
        /// The connection broke: messages are being missed from now on.
        case lost
        /// Connected again, and every wanted channel is subscribed: messages flow again.
        case restored
    }

    /// The loop the subscriber lives on; `onMessage` and `onConnectionChange` are called on it.
    public let eventLoop: any EventLoop
    private let configuration: RedisConfiguration
    private let backoff: Backoff
    private let logger: Logger
    private let onMessage: @Sendable (String, ByteBuffer) -> Void
    private let onConnectionChange: @Sendable (ConnectionChange) -> Void

    private var connection: RedisConnection?
    /// Sends the PINGs on the current connection.
    private var pinger: RepeatedTask?
    /// The connection attempt in flight (shutdown waits for it).
    private var connecting: EventLoopFuture<Void>?
    private var failures = 0
    /// When the current connection came up: one that breaks soon after (Redis dropping a node that keeps
    /// falling behind) does not reset the backoff, so a flapping node does not reconnect in a tight loop.
    private var connectedAt: NIODeadline?
    private static let stableAfter = TimeAmount.seconds(10)
    private var isShutDown = false
    /// Channels the owner wants, and the promises waiting for each one's confirmation.
    private var wanted: Set<String> = []
    private var waiting: [String: [EventLoopPromise<Void>]] = [:]
    /// Changes not yet sent, gathered during one tick.
    private var toSubscribe: Set<String> = []
    private var toUnsubscribe: Set<String> = []
    private var flushScheduled = false
    /// Channels per command, so one reply never grows past what Redis and the decoder take comfortably.
    private static let batchSize = 500

    /// Connects nothing until `start()`. `onMessage` gets the Redis channel name and the payload.
    public init(
        configuration: RedisConfiguration, eventLoop: any EventLoop, backoff: Backoff = Backoff(),
        logger: Logger = Logger(label: "switchboard.redis"),
        onMessage: @escaping @Sendable (String, ByteBuffer) -> Void,
        onConnectionChange: @escaping @Sendable (ConnectionChange) -> Void
    ) {
        self.configuration = configuration
        self.eventLoop = eventLoop
        self.backoff = backoff
        self.logger = logger
        self.onMessage = onMessage
        self.onConnectionChange = onConnectionChange
    }

    /// Connects (and keeps reconnecting); completes after the first attempt, whatever its outcome.
    public func start() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { self.connect() }
    }

    /// Completes once Redis confirmed the subscription; fails if the connection is down (the channel
    /// stays wanted, and is subscribed when the connection comes back).
    public func subscribe(_ channel: String) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        eventLoop.execute {
            self.wanted.insert(channel)
            self.toUnsubscribe.remove(channel)
            self.toSubscribe.insert(channel)
            self.waiting[channel, default: []].append(promise)
            self.scheduleFlush()
        }
        return promise.futureResult
    }

    /// Stops wanting `channel`; a subscribe still waiting for its confirmation fails. Not confirmed itself.
    public func unsubscribe(_ channel: String) {
        eventLoop.execute {
            self.wanted.remove(channel)
            self.toSubscribe.remove(channel)
            self.toUnsubscribe.insert(channel)
            for promise in self.waiting.removeValue(forKey: channel) ?? [] { promise.fail(RedisError.connectionLost) }
            self.scheduleFlush()
        }
    }

    /// Whether the connection is up (for node health).
    public var isConnected: EventLoopFuture<Bool> {
        eventLoop.submit { self.connection?.isActive ?? false }
    }

    /// Closes the connection, after any attempt in flight has finished (it closes what it opened).
    public func shutdown() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit {
            self.isShutDown = true
            self.pinger?.cancel()
            self.pinger = nil
            self.failWaiting(RedisError.connectionLost)
            let attempt = self.connecting ?? self.eventLoop.makeSucceededVoidFuture()
            return attempt.flatMap {
                guard let connection = self.connection else { return self.eventLoop.makeSucceededVoidFuture() }
                self.connection = nil
                return connection.channel.close().recover { _ in }
            }
        }
    }

    // MARK: on the loop

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.execute { self.flush() }
    }

    private func flush() {
        flushScheduled = false
        guard let connection, connection.isActive else {
            // Down: what is wanted is subscribed on reconnection; waiters learn now.
            toSubscribe = []
            toUnsubscribe = []
            failWaiting(RedisError.connectionLost)
            return
        }
        let unsubscribing = Array(toUnsubscribe)
        let subscribing = Array(toSubscribe)
        toUnsubscribe = []
        toSubscribe = []
        for batch in unsubscribing.chunks(of: Self.batchSize) {
            connection.sendFuture(["UNSUBSCRIBE"] + batch.map { .string($0) }).whenFailure { [logger] error in
                logger.debug("redis unsubscribe failed", metadata: ["error": "\(error)"])
            }
        }
        for batch in subscribing.chunks(of: Self.batchSize) { _ = send(Array(batch), on: connection) }
    }

    /// One `SUBSCRIBE`; its confirmation completes the promises waiting when it was sent, never later
    /// ones (a subscribe after an unsubscribe waits for its own `SUBSCRIBE`, behind the `UNSUBSCRIBE`).
    private func send(_ channels: [String], on connection: RedisConnection) -> EventLoopFuture<Void> {
        let promises = channels.flatMap { waiting.removeValue(forKey: $0) ?? [] }
        let sent = connection.sendFuture(["SUBSCRIBE"] + channels.map { .string($0) })
        sent.hop(to: eventLoop).whenComplete { result in
            for promise in promises {
                switch result {
                case .success: promise.succeed()
                case .failure(let error): promise.fail(error)
                }
            }
        }
        return sent.map { _ in }
    }

    private func failWaiting(_ error: any Error) {
        let waiting = self.waiting
        self.waiting = [:]
        for promise in waiting.values.joined() { promise.fail(error) }
    }

    private func connect() -> EventLoopFuture<Void> {
        if let connecting { return connecting }
        guard !isShutDown, connection == nil else { return eventLoop.makeSucceededVoidFuture() }
        let attempt = makeConnection()
        connecting = attempt
        attempt.whenComplete { _ in self.connecting = nil }
        return attempt
    }

    private func makeConnection() -> EventLoopFuture<Void> {
        let configuration = self.configuration
        let eventLoop = self.eventLoop
        let onMessage = self.onMessage
        return eventLoop.makeFutureWithTask {
            try await RedisConnection.connect(configuration, on: eventLoop) { push in
                guard let parts = push.elements, parts.count == 3, parts[0].string == "message",
                    let channel = parts[1].string, case .bulkString(let payload) = parts[2]
                else { return }
                onMessage(channel, payload)
            }
        }.hop(to: eventLoop).flatMap { connection -> EventLoopFuture<Void> in
            guard !self.isShutDown else { return connection.channel.close().recover { _ in } }
            self.connection = connection
            self.startPinging(connection)
            let resubscribed = Array(self.wanted)
            self.toSubscribe.subtract(resubscribed)
            connection.channel.closeFuture.whenComplete { _ in self.lost(connection) }
            let confirmed = resubscribed.chunks(of: Self.batchSize).map { self.send(Array($0), on: connection) }
            return EventLoopFuture.andAllSucceed(confirmed, on: eventLoop).map {
                if self.failures > 0 || !resubscribed.isEmpty {
                    self.logger.info(
                        "redis pub/sub connected",
                        metadata: [
                            "redis": "\(configuration.displayAddress)", "channels": "\(resubscribed.count)",
                        ])
                }
                self.connectedAt = .now()
                self.onConnectionChange(.restored)
                self.scheduleFlush()
            }.flatMapError { _ in
                // A subscribe failed on the new connection: start over on another.
                connection.channel.close().recover { _ in }
            }
        }.flatMapError { error in
            self.retry(after: error)
            return eventLoop.makeSucceededVoidFuture()
        }
    }

    /// A PING not answered in time means the path is gone, whatever TCP says: close, and `lost` follows.
    private func startPinging(_ pinged: RedisConnection) {
        pinger?.cancel()
        let interval = configuration.pingInterval
        pinger = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { [logger, configuration] _ in
            pinged.sendFuture(["PING"]).whenFailure { error in
                guard pinged.isActive else { return }
                logger.warning(
                    "redis pub/sub link silent; reconnecting",
                    metadata: ["redis": "\(configuration.displayAddress)", "error": "\(error)"])
                pinged.channel.close(promise: nil)
            }
        }
    }

    private func lost(_ lostConnection: RedisConnection) {
        guard connection === lostConnection else { return }
        connection = nil
        pinger?.cancel()
        pinger = nil
        if let connectedAt, NIODeadline.now() - connectedAt >= Self.stableAfter { failures = 0 }
        connectedAt = nil
        failWaiting(RedisError.connectionLost)
        guard !isShutDown else { return }
        logger.warning("redis pub/sub connection lost", metadata: ["redis": "\(configuration.displayAddress)"])
        onConnectionChange(.lost)
        retry(after: RedisError.connectionLost)
    }

    private func retry(after error: any Error) {
        guard !isShutDown else { return }
        failures += 1
        let delay = backoff.delay(afterFailures: failures)
        if failures == 1 || failures % 10 == 0 {
            logger.warning(
                "redis pub/sub cannot connect; retrying",
                metadata: [
                    "redis": "\(configuration.displayAddress)", "error": "\(error)", "attempts": "\(failures)",
                ])
        }
        eventLoop.scheduleTask(in: delay) { _ = self.connect() }
    }
}

extension Array {
    fileprivate func chunks(of size: Int) -> [ArraySlice<Element>] {
        stride(from: 0, to: count, by: size).map { self[$0..<Swift.min($0 + size, count)] }
    }
}
