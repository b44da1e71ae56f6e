import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardClient

/// The machinery behind `ChannelClient`: the state machine under a lock, commands awaiting replies, and
/// the task that keeps a connection up. That task and each `Subscription` hold it, not the client object.
final class ClientCore: Sendable {
    let configuration: ChannelClient.Configuration
    let group: any EventLoopGroup
    // Lock: guards the state machine. Frames a change sends are written under it (in order); the other
    // effects run after it is released.
    private let state: NIOLockedValueBox<CoreState>
    private let stateEvents: AsyncStream<ConnectionState>.Continuation
    private let pushEvents: AsyncStream<ServerPush>.Continuation

    init(
        configuration: ChannelClient.Configuration, group: any EventLoopGroup,
        states: AsyncStream<ConnectionState>.Continuation, pushes: AsyncStream<ServerPush>.Continuation
    ) {
        self.configuration = configuration
        self.group = group
        self.state = NIOLockedValueBox(CoreState(canRenewToken: configuration.getToken != nil))
        self.stateEvents = states
        self.pushEvents = pushes
    }

    var current: ConnectionState { state.withLockedValue { $0.current } }

    /// Applies a change to the state machine. What it writes goes out under the lock, so the server sees
    /// commands in the order the state machine decided them (a subscribe before its unsubscribe); the
    /// rest (continuations, streams, tasks) runs after the lock is released.
    private func update(_ change: (inout CoreState) -> [Effect]) {
        perform(state.withLockedValue { state in Self.write(change(&state)) })
    }

    /// Writes the frames among `effects` (non-blocking: NIO queues them on the channel's loop).
    private static func write(_ effects: [Effect]) -> [Effect] {
        for effect in effects {
            switch effect {
            case .send(let socket, let text): socket.send(text: text)
            case .closeSocket(let socket): socket.close(code: 1000, reason: "")
            default: continue
            }
        }
        return effects
    }

    private func perform(_ effects: [Effect]) {
        for effect in effects {
            switch effect {
            case .send, .closeSocket: continue  // written under the lock
            case .resume(let continuation, let result): continuation.resume(with: result)
            case .event(let events, let event): events.yield(event)
            case .finish(let events): events.finish()
            case .push(let push): pushEvents.yield(push)
            case .state(let connectionState): stateEvents.yield(connectionState)
            case .endStreams:
                stateEvents.finish()
                pushEvents.finish()
            case .refreshToken:
                Task { await self.refreshToken() }
            case .retrySubscribe(let channel, let entry, let attempt):
                // The reconnect backoff (full jitter, growing with each 110 in a row), at least 500 ms.
                let delay = max(configuration.reconnectDelay(attempt: attempt, notBefore: nil), .milliseconds(500))
                Task {
                    try? await Task.sleep(for: delay)
                    self.update { $0.retrySubscribe(channel, entry: entry) }
                }
            }
        }
    }

    // MARK: the application's calls

    func start() {
        state.withLockedValue { state in
            guard state.phase == .idle else { return }
            state.phase = .running
            state.driver = Task { await self.run() }
        }
    }

    /// Closes for good at once (streams finish, commands fail, the socket gets a close frame); returns the
    /// connection task, which ends once the close handshake is done.
    @discardableResult
    func shutDown(code: UInt16, reason: String) -> Task<Void, Never>? {
        let (effects, driver) = state.withLockedValue { state in
            (Self.write(state.shutDown(code: code, reason: reason)), state.driver)
        }
        perform(effects)
        driver?.cancel()
        return driver
    }

    /// Sends a command (now, or once connected) and returns its reply's `ok` object. Cancelling the calling
    /// task fails it with `CancellationError` and leaves the connection alone.
    func command(_ name: String, _ fields: String = "") async throws -> JSONValue {
        let id = state.withLockedValue { $0.makeID() }
        let timeout = configuration.commandTimeout
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<JSONValue, any Error>) in
                let effects = state.withLockedValue { state -> [Effect] in
                    // Checked under the lock: a cancellation after this finds the command registered.
                    guard !Task.isCancelled else { return [.resume(continuation, .failure(CancellationError()))] }
                    return Self.write(
                        state.enqueue(id: id, name, fields: fields, continuation: continuation) {
                            Task { [weak self] in
                                try? await Task.sleep(for: timeout)
                                guard !Task.isCancelled else { return }
                                self?.fail(id, ChannelClientError.timeout(command: name))
                            }
                        })
                }
                perform(effects)
            }
        } onCancel: {
            self.fail(id, CancellationError())
        }
    }

    private func fail(_ id: Int, _ error: any Error) {
        state.withLockedValue { $0.take(id) }?.resume(throwing: error)
    }

    func subscribe(_ channel: String, recover: Bool, token: String?) throws -> Subscription {
        let (events, continuation) = AsyncStream.makeStream(of: SubscriptionEvent.self)
        let (entry, effects) = try state.withLockedValue { state in
            let made = try state.subscribe(channel, recover: recover, token: token, events: continuation)
            return (made.entry, Self.write(made.effects))
        }
        // The consumer's task was cancelled: its stream is over, so is the subscription.
        continuation.onTermination = { [weak self] termination in
            if case .cancelled = termination { self?.unsubscribe(channel, entry: entry) }
        }
        perform(effects)
        return Subscription(channel: channel, events: events, entry: entry, core: self)
    }

    func unsubscribe(_ channel: String, entry: UInt64) {
        update { $0.unsubscribe(channel, entry: entry) }
    }

    private func refreshToken() async {
        guard let getToken = configuration.getToken else { return }
        do {
            let token = try await getToken()
            _ = try await command("refresh", "\"token\":" + JSONValue.quote(token))
        } catch {
            // The server closes with 4001 at expiry; the reconnect fetches a token again.
            configuration.logger.warning("token refresh failed", metadata: ["error": "\(error)"])
        }
    }

    // MARK: the connection task

    /// How long a connection must have lasted for the backoff to start over.
    static let stableConnection = Duration.seconds(10)

    /// Connects, serves the connection until it ends, waits (backoff), and again, until closed.
    private func run() async {
        var failures = 0
        while let effects = state.withLockedValue({ $0.connecting(attempt: failures) }) {
            perform(effects)
            let begun = ContinuousClock.now
            let end = await connectOnce()
            let outcome = state.withLockedValue { $0.ended(end) }  // writes nothing: the socket is gone
            perform(outcome.effects)
            guard outcome.reconnect else { return }
            // Backoff starts over only after a connection that lasted: a server that accepts and then drops
            // every connection at once is not hammered at the shortest delay.
            let lasted = ContinuousClock.now - begun >= Self.stableConnection
            failures = outcome.wasConnected && lasted ? 0 : failures + 1
            let delay = configuration.reconnectDelay(attempt: failures, notBefore: outcome.afterMilliseconds)
            try? await Task.sleep(for: delay)
        }
    }

    private func connectOnce() async -> ConnectionEnd {
        var token = configuration.token
        if let getToken = configuration.getToken {
            do {
                token = try await getToken()
            } catch {
                configuration.logger.warning("getToken failed", metadata: ["error": "\(error)"])
                return ConnectionEnd(failure: "could not get a token: \(error)")
            }
        }
        if Task.isCancelled { return ConnectionEnd(failure: "client closed") }
        var options = ClientOptions(path: configuration.path)
        options.tls = configuration.tls
        options.serverHostname = configuration.serverHostname
        options.connectTimeout = TimeAmount(configuration.connectTimeout)
        options.headers = configuration.headers
        let socket: WebSocketClient
        do {
            socket = try await WebSocketClient.connect(
                host: configuration.host, port: configuration.port, options: options, group: group)
        } catch let refusal as HandshakeFailure {
            // A malformed request, a wrong path or a refused user does not change by retrying; status 0 (no
            // answer in time) and 429/503 (busy) do.
            return ConnectionEnd(failure: "\(refusal)", isFinal: [400, 401, 403, 404, 426].contains(refusal.status))
        } catch {
            return ConnectionEnd(failure: "\(error)")
        }
        guard let effects = state.withLockedValue({ $0.opened(socket, token: token).map(Self.write) }) else {
            // Closed while connecting.
            socket.close(code: 1000, reason: "")
            _ = try? await socket.waitForClose(timeout: .seconds(2))
            await socket.disconnect()
            return ConnectionEnd(failure: "client closed")
        }
        perform(effects)
        return await read(socket)
    }

    /// Reads until the connection ends: the server closes, TCP fails, the watchdog finds it silent, or the
    /// client is closed (then the close handshake gets two seconds).
    private func read(_ socket: WebSocketClient) async -> ConnectionEnd {
        let clock = ContinuousClock()
        let watchdog = configuration.watchdogTimeout
        let poll = TimeAmount(min(watchdog / 4, .seconds(1)))
        var lastFrame = clock.now
        var probed = false
        var closingSince: ContinuousClock.Instant?
        var end = ConnectionEnd(failure: "connection lost")
        while true {
            if Task.isCancelled, closingSince == nil { closingSince = clock.now }
            if let since = closingSince, clock.now - since > .seconds(2) { break }
            let event: ClientEvent
            do {
                event = try await socket.next(timeout: poll)
            } catch is ClientTimeout {
                let silence = clock.now - lastFrame
                if silence >= watchdog {
                    end.failure = "no frame from the server for \(silence)"
                    break
                }
                if silence >= watchdog / 2, !probed {
                    probed = true
                    update { $0.probe() }
                }
                continue
            } catch {
                end.failure = "\(error)"
                break
            }
            lastFrame = clock.now
            probed = false
            switch event {
            case .text(let text):
                guard let message = JSONValue.parse(text) else {
                    configuration.logger.debug("ignoring a message that is not JSON")
                    continue
                }
                update { $0.received(message) }
            case .close(let code, let reason):
                end.closeCode = code ?? 1005
                end.closeReason = reason
            case .disconnected:
                return end
            case .binary, .ping, .pong:
                continue
            }
        }
        await socket.disconnect()
        return end
    }
}
