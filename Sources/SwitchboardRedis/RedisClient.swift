import NIOConcurrencyHelpers
import NIOCore

/// Commands over a small pool of connections to one Redis server, each pipelined, each connected on
/// first use and again after it breaks. While a connection is down and its backoff has not passed,
/// commands on it fail at once with `.connectionLost` rather than queue: the caller (a publish, a
/// presence update) answers its client with an error instead of hanging.
public final class RedisClient: Sendable {
    /// The server every connection of the pool goes to.
    public let configuration: RedisConfiguration
    private let slots: [Slot]
    // Lock: guards the round-robin cursor only.
    private let cursor = NIOLockedValueBox(0)

    /// - Parameter scripts: loaded on every connection as it connects, so their first run by SHA after a
    ///   Redis restart does not fail and fall back to sending the source.
    public init(
        configuration: RedisConfiguration, connections: Int = 2, group: any EventLoopGroup,
        backoff: Backoff = Backoff(), scripts: [RedisScript] = []
    ) {
        self.configuration = configuration
        self.slots = (0..<max(connections, 1)).map { _ in
            Slot(configuration: configuration, eventLoop: group.next(), backoff: backoff, scripts: scripts)
        }
    }

    /// Sends one command; completes on a connection's loop with its reply or a `RedisError`. Commands
    /// with the same `route` (a channel name) always take the same connection, so Redis runs them in the
    /// order they were sent (one client's publications, a member's add and remove); others are spread.
    public func send(_ arguments: [RESPArgument], route: String? = nil) -> EventLoopFuture<RESPValue> {
        slot(for: route).connection().flatMap { $0.sendFuture(arguments) }
    }

    private func slot(for route: String?) -> Slot {
        guard let route else {
            return cursor.withLockedValue { index -> Slot in
                index = (index + 1) % slots.count
                return slots[index]
            }
        }
        var hash: UInt32 = 2_166_136_261
        for byte in route.utf8 { hash = (hash ^ UInt32(byte)) &* 16_777_619 }
        return slots[Int(hash % UInt32(slots.count))]
    }

    /// Runs `script` by its SHA, loading it when the server does not know it (after a restart or
    /// `SCRIPT FLUSH`), on the connection its first key routes to. With `appendingServerRunID`, the
    /// `run_id` of the Redis process that runs it is the last argument (`RedisConnection.serverRunID`).
    public func run(
        _ script: RedisScript, keys: [String], arguments: [RESPArgument], appendingServerRunID: Bool = false
    ) -> EventLoopFuture<RESPValue> {
        let slot = slot(for: keys.first)
        return slot.connection().flatMap { connection in
            let tail: [RESPArgument] =
                [RESPArgument(keys.count)] + keys.map { .string($0) } + arguments
                + (appendingServerRunID ? [.string(connection.serverRunID)] : [])
            return connection.sendFuture(["EVALSHA", .string(script.sha)] + tail).flatMapError { error in
                guard case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") else {
                    return connection.channel.eventLoop.makeFailedFuture(error)
                }
                // Only after a `SCRIPT FLUSH` on a live connection (each connection loads the scripts
                // when it connects): commands pipelined meanwhile may then run out of order, once.
                return connection.sendFuture(["EVAL", .string(script.source)] + tail)
            }
        }
    }

    /// Closes every connection, waiting for attempts in flight; later commands fail with `.connectionLost`.
    public func close() async {
        for slot in slots { await slot.close() }
    }

    /// One pooled connection and its reconnection state.
    final class Slot: Sendable {
        enum State {
            /// Not connected; the next attempt may start at `retryAt`.
            case idle(retryAt: NIODeadline, failures: Int)
            case connecting(EventLoopFuture<RedisConnection>)
            case connected(RedisConnection)
            case closed
        }

        let eventLoop: any EventLoop
        private let configuration: RedisConfiguration
        private let backoff: Backoff
        private let scripts: [RedisScript]
        // Lock: guards the connection state; held only to read or swap it, never across I/O.
        private let state = NIOLockedValueBox(State.idle(retryAt: .uptimeNanoseconds(0), failures: 0))

        init(configuration: RedisConfiguration, eventLoop: any EventLoop, backoff: Backoff, scripts: [RedisScript]) {
            self.configuration = configuration
            self.eventLoop = eventLoop
            self.backoff = backoff
            self.scripts = scripts
        }

        func connection() -> EventLoopFuture<RedisConnection> {
            state.withLockedValue { state -> EventLoopFuture<RedisConnection> in
                var failures = 0
                switch state {
                case .connected(let connection) where connection.isActive:
                    return eventLoop.makeSucceededFuture(connection)
                case .connected, .closed:
                    if case .closed = state { return eventLoop.makeFailedFuture(RedisError.connectionLost) }
                case .connecting(let future):
                    return future.flatMapErrorThrowing { _ in throw RedisError.connectionLost }
                case .idle(let retryAt, let count):
                    guard NIODeadline.now() >= retryAt else {
                        return eventLoop.makeFailedFuture(RedisError.connectionLost)
                    }
                    failures = count
                }
                let configuration = self.configuration
                let eventLoop = self.eventLoop
                let scripts = self.scripts
                let future = eventLoop.makeFutureWithTask {
                    let connection = try await RedisConnection.connect(configuration, on: eventLoop)
                    do {
                        for script in scripts {
                            _ = try await connection.send(["SCRIPT", "LOAD", .string(script.source)])
                        }
                    } catch {
                        await connection.close()
                        throw error
                    }
                    return connection
                }
                state = .connecting(future)
                let attempts = failures
                future.whenComplete { result in self.connected(result, failures: attempts) }
                return future.flatMapErrorThrowing { _ in throw RedisError.connectionLost }
            }
        }

        private func connected(_ result: Result<RedisConnection, any Error>, failures: Int) {
            let stale = state.withLockedValue { state -> RedisConnection? in
                switch (state, result) {
                case (.closed, .success(let connection)): return connection
                case (.closed, .failure): return nil
                case (_, .success(let connection)): state = .connected(connection)
                case (_, .failure):
                    state = .idle(
                        retryAt: .now() + backoff.delay(afterFailures: failures + 1), failures: failures + 1)
                }
                return nil
            }
            if let stale { Task { await stale.close() } }
        }

        /// Closes the connection; one still being made is closed when it is made (`connected`), and this
        /// waits for that, so nothing completes on an event loop that is shut down after it.
        func close() async {
            let (connection, attempt) = state.withLockedValue {
                state -> (RedisConnection?, EventLoopFuture<RedisConnection>?) in
                defer { state = .closed }
                switch state {
                case .connected(let connection): return (connection, nil)
                case .connecting(let future): return (nil, future)
                default: return (nil, nil)
                }
            }
            await connection?.close()
            if let made = try? await attempt?.get() { await made.close() }
        }
    }
}
