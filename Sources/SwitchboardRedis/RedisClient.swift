import NIOConcurrencyHelpers
import NIOCore

/// Commands over a small pool of connections to one Redis server, each pipelined, each connected on
/// first use and again after it breaks. While a connection is down and its backoff has not passed,
/// commands on it fail at once with `.connectionLost` rather than queue: the caller (a publish, a
/// presence update) answers its client with an error instead of hanging.
public final class RedisClient: Sendable {
    public let configuration: RedisConfiguration
    private let slots: [Slot]
    // Lock: guards the round-robin cursor only.
    private let cursor = NIOLockedValueBox(0)

    public init(configuration: RedisConfiguration, connections: Int = 2, group: any EventLoopGroup,
        backoff: Backoff = Backoff())
    {
        self.configuration = configuration
        self.slots = (0..<max(connections, 1)).map { _ in
            Slot(configuration: configuration, eventLoop: group.next(), backoff: backoff)
        }
    }

    /// Sends one command; completes on a connection's loop with its reply or a `RedisError`.
    public func send(_ arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        let slot = cursor.withLockedValue { index -> Slot in
            index = (index + 1) % slots.count
            return slots[index]
        }
        return slot.connection().flatMap { $0.sendFuture(arguments) }
    }

    /// Runs `script` by its SHA, loading it when the server does not know it (after a restart or
    /// `SCRIPT FLUSH`).
    public func run(_ script: RedisScript, keys: [String], arguments: [RESPArgument]) -> EventLoopFuture<RESPValue> {
        let tail: [RESPArgument] = [RESPArgument(keys.count)] + keys.map { .string($0) } + arguments
        return send(["EVALSHA", .string(script.sha)] + tail).flatMapError { error in
            guard case RedisError.server(let message) = error, message.hasPrefix("NOSCRIPT") else {
                return self.slots[0].eventLoop.makeFailedFuture(error)
            }
            return self.send(["EVAL", .string(script.source)] + tail)
        }
    }

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
        // Lock: guards the connection state; held only to read or swap it, never across I/O.
        private let state = NIOLockedValueBox(State.idle(retryAt: .uptimeNanoseconds(0), failures: 0))

        init(configuration: RedisConfiguration, eventLoop: any EventLoop, backoff: Backoff) {
            self.configuration = configuration
            self.eventLoop = eventLoop
            self.backoff = backoff
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
                    return future
                case .idle(let retryAt, let count):
                    guard NIODeadline.now() >= retryAt else {
                        return eventLoop.makeFailedFuture(RedisError.connectionLost)
                    }
                    failures = count
                }
                let configuration = self.configuration
                let eventLoop = self.eventLoop
                let future = eventLoop.makeFutureWithTask {
                    try await RedisConnection.connect(configuration, on: eventLoop)
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

        func close() async {
            let connection = state.withLockedValue { state -> RedisConnection? in
                defer { state = .closed }
                if case .connected(let connection) = state { return connection }
                return nil
            }
            await connection?.close()
        }
    }
}
