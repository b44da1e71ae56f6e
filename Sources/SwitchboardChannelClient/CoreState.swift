import SwitchboardClient

/// What `ClientCore` does after a change of `CoreState`, in order: frames are written under its lock, the
/// rest after it is released.
enum Effect {
    case send(WebSocketClient, String)
    case closeSocket(WebSocketClient)
    case resume(CheckedContinuation<JSONValue, any Error>, Result<JSONValue, any Error>)
    case event(AsyncStream<SubscriptionEvent>.Continuation, SubscriptionEvent)
    case finish(AsyncStream<SubscriptionEvent>.Continuation)
    case push(ServerPush)
    case state(ConnectionState)
    /// The client is closed: `states` and `pushes` finish.
    case endStreams
    case refreshToken
    /// A subscribe answered 110 (temporarily unavailable) `attempt` times in a row: send it again later,
    /// with the reconnect backoff.
    case retrySubscribe(channel: String, entry: UInt64, attempt: Int)
}

/// A channel this client is subscribed to (or the server subscribed it to), and the last position seen:
/// where a reconnect recovers from.
struct ChannelEntry: Sendable {
    let id: UInt64
    /// Where its events go; nil for a subscription the server made (they go to `pushes`).
    let events: AsyncStream<SubscriptionEvent>.Continuation?
    let recover: Bool
    let token: String?
    var epoch: String?
    var offset = 0
    /// Its subscribe reply (or `subscribed` push) arrived on the current connection: publications count.
    var live = false
    /// The connection its subscribe went out on.
    var sentOn: UInt64?
    /// Subscribes answered 110 (temporarily unavailable) in a row: the next retry waits longer.
    var unavailable = 0
}

/// A command sent or waiting for a connection, until its reply.
struct PendingCommand: Sendable {
    enum Purpose: Sendable {
        case caller(CheckedContinuation<JSONValue, any Error>)
        case connect
        case subscribe(channel: String, entry: UInt64)
        case ignored
    }

    let name: String
    let text: String
    let purpose: Purpose
    /// The connection it went out on; nil while it waits for one.
    var sentOn: UInt64?
    var timer: Task<Void, Never>?
}

/// The server's `disconnect` notice, which comes right before its close frame.
struct DisconnectNotice: Sendable {
    let code: UInt16
    let reason: String
    let reconnect: Bool
    let afterMilliseconds: Int?
}

/// How a connection ended, as the read loop saw it.
struct ConnectionEnd: Sendable {
    var closeCode: UInt16?
    var closeReason = ""
    /// What happened when no close frame says: a network failure, the watchdog, a refused upgrade.
    var failure: String
    /// Reconnecting cannot help (an upgrade refused with 404, say).
    var isFinal = false
}

/// The client's state machine: connection phase, commands awaiting replies, subscriptions and their
/// positions. Only `ClientCore` touches it, under its lock; every change returns the effects to perform.
struct CoreState: Sendable {
    enum Phase: Sendable { case idle, running, closed }

    /// Close codes after which reconnecting would only repeat the failure (docs/PROTOCOL.md).
    static let finalCloseCodes: Set<UInt16> = [1002, 1003, 1007, 1009, 4003]

    /// `getToken` is configured: an expired token can be replaced.
    let canRenewToken: Bool
    var phase = Phase.idle
    var current = ConnectionState.idle
    var closedError = ChannelClientError.closed(code: 1000, reason: "client closed")
    var driver: Task<Void, Never>?
    var socket: WebSocketClient?
    /// Counts connections, so that what was sent on an old one is told apart.
    var generation: UInt64 = 0
    /// `connect` succeeded on the current connection.
    var ready = false
    var notice: DisconnectNotice?
    var connectError: ChannelClientError?
    var nextID = 1
    var nextEntryID: UInt64 = 1
    var pending: [Int: PendingCommand] = [:]
    var entries: [String: ChannelEntry] = [:]

    init(canRenewToken: Bool) { self.canRenewToken = canRenewToken }

    mutating func makeID() -> Int {
        defer { nextID += 1 }
        return nextID
    }

    static func commandText(id: Int, _ name: String, _ fields: String) -> String {
        "{\"id\":\(id),\"cmd\":\"\(name)\"" + (fields.isEmpty ? "" : "," + fields) + "}"
    }

    static func error(_ json: JSONValue?) -> ChannelClientError? {
        guard let json, let code = json["code"]?.int else { return nil }
        return .server(code: code, message: json["message"]?.string ?? "")
    }

    // MARK: the application's calls

    /// Registers a caller's command: sent now when connected, else when the next connection is ready.
    mutating func enqueue(
        id: Int, _ name: String, fields: String, continuation: CheckedContinuation<JSONValue, any Error>,
        timer makeTimer: () -> Task<Void, Never>
    ) -> [Effect] {
        switch phase {
        case .idle: return [.resume(continuation, .failure(ChannelClientError.notConnected))]
        case .closed: return [.resume(continuation, .failure(closedError))]
        case .running: break
        }
        let text = Self.commandText(id: id, name, fields)
        var command = PendingCommand(name: name, text: text, purpose: .caller(continuation), timer: makeTimer())
        var effects: [Effect] = []
        if ready, let socket {
            command.sentOn = generation
            effects.append(.send(socket, text))
        }
        pending[id] = command
        return effects
    }

    /// Removes a caller's command (timeout, cancellation): its continuation, to resume exactly once.
    mutating func take(_ id: Int) -> CheckedContinuation<JSONValue, any Error>? {
        guard let command = pending[id], case .caller(let continuation) = command.purpose else { return nil }
        pending[id] = nil
        command.timer?.cancel()
        return continuation
    }

    mutating func subscribe(
        _ channel: String, recover: Bool, token: String?, events: AsyncStream<SubscriptionEvent>.Continuation
    ) throws -> (entry: UInt64, effects: [Effect]) {
        if phase == .closed { throw closedError }
        guard entries[channel] == nil else { throw ChannelClientError.alreadySubscribed(channel: channel) }
        let id = nextEntryID
        nextEntryID += 1
        entries[channel] = ChannelEntry(id: id, events: events, recover: recover, token: token)
        return (id, sendSubscribe(channel))
    }

    /// Sends `channel`'s subscribe on the current connection, with its position when it has one.
    mutating func sendSubscribe(_ channel: String) -> [Effect] {
        guard ready, let socket, var entry = entries[channel], entry.events != nil, entry.sentOn != generation
        else { return [] }
        var fields = "\"channel\":" + JSONValue.quote(channel)
        if entry.recover, let epoch = entry.epoch {
            fields += ",\"recover\":{\"offset\":\(entry.offset),\"epoch\":\(JSONValue.quote(epoch))}"
        }
        if let token = entry.token { fields += ",\"token\":" + JSONValue.quote(token) }
        let id = makeID()
        let text = Self.commandText(id: id, "subscribe", fields)
        pending[id] = PendingCommand(
            name: "subscribe", text: text, purpose: .subscribe(channel: channel, entry: entry.id), sentOn: generation)
        entry.sentOn = generation
        entries[channel] = entry
        return [.send(socket, text)]
    }

    mutating func unsubscribe(_ channel: String, entry id: UInt64) -> [Effect] {
        guard let entry = entries[channel], entry.id == id else { return [] }
        entries[channel] = nil
        var effects: [Effect] = entry.events.map { [.finish($0)] } ?? []
        // Sent on this connection (its reply may still be on the way): the server hears the two in order.
        if ready, let socket, entry.sentOn == generation {
            let commandID = makeID()
            let text = Self.commandText(id: commandID, "unsubscribe", "\"channel\":" + JSONValue.quote(channel))
            pending[commandID] = PendingCommand(name: "unsubscribe", text: text, purpose: .ignored, sentOn: generation)
            effects.append(.send(socket, text))
        }
        return effects
    }

    /// Closed for good: waiting commands fail, every stream finishes, the last state goes out.
    mutating func shutDown(code: UInt16, reason: String) -> [Effect] {
        guard phase != .closed else { return [] }
        phase = .closed
        closedError = .closed(code: code, reason: reason)
        ready = false
        var effects: [Effect] = []
        if let socket { effects.append(.closeSocket(socket)) }
        for command in pending.values {
            command.timer?.cancel()
            if case .caller(let continuation) = command.purpose {
                effects.append(.resume(continuation, .failure(closedError)))
            }
        }
        pending = [:]
        for entry in entries.values {
            if let events = entry.events { effects.append(.finish(events)) }
        }
        entries = [:]
        current = .disconnected(code: code, reason: reason, willReconnect: false)
        return effects + [.state(current), .endStreams]
    }

    // MARK: the connection's life

    mutating func connecting(attempt: Int) -> [Effect]? {
        guard phase == .running else { return nil }
        current = .connecting(attempt: attempt)
        return [.state(current)]
    }

    /// A new connection is open: `connect` goes first, with the positions of the server's subscriptions.
    mutating func opened(_ socket: WebSocketClient, token: String?) -> [Effect]? {
        guard phase == .running else { return nil }
        self.socket = socket
        generation += 1
        ready = false
        notice = nil
        connectError = nil
        var fields: [String] = []
        if let token { fields.append("\"token\":" + JSONValue.quote(token)) }
        var positions: [String] = []
        for (channel, entry) in entries where entry.events == nil {
            guard let epoch = entry.epoch else { continue }
            positions.append(
                JSONValue.quote(channel) + ":{\"offset\":\(entry.offset),\"epoch\":\(JSONValue.quote(epoch))}")
        }
        if !positions.isEmpty { fields.append("\"recover\":{" + positions.joined(separator: ",") + "}") }
        let id = makeID()
        let text = Self.commandText(id: id, "connect", fields.joined(separator: ","))
        pending[id] = PendingCommand(name: "connect", text: text, purpose: .connect, sentOn: generation)
        return [.send(socket, text)]
    }

    /// The connection is gone: commands sent on it fail, subscriptions wait for the next one. Decides
    /// whether to reconnect (with the server's delay hint) or to close for good.
    mutating func ended(_ end: ConnectionEnd) -> (
        reconnect: Bool, afterMilliseconds: Int?, wasConnected: Bool, effects: [Effect]
    ) {
        let wasConnected = ready
        let (notice, connectError) = (self.notice, self.connectError)
        socket = nil
        ready = false
        self.notice = nil
        self.connectError = nil
        var effects: [Effect] = []
        for (id, command) in pending where command.sentOn != nil {
            pending[id] = nil
            command.timer?.cancel()
            if case .caller(let continuation) = command.purpose {
                effects.append(.resume(continuation, .failure(ChannelClientError.disconnected(command: command.name))))
            }
        }
        for channel in Array(entries.keys) {
            entries[channel]?.live = false
            entries[channel]?.sentOn = nil
        }
        guard phase == .running else { return (false, nil, wasConnected, effects) }
        let code = notice?.code ?? end.closeCode ?? 1006
        var reason = notice?.reason ?? end.closeReason
        if reason.isEmpty { reason = connectError.map { "\($0)" } ?? end.failure }
        var reconnect = !end.isFinal && (notice?.reconnect ?? !Self.finalCloseCodes.contains(code))
        // Without `getToken`, the same (or no) token would be refused again.
        let refused = code == 4001 || connectError?.serverCode.map { [111, 113].contains($0) } == true
        if refused, !canRenewToken { reconnect = false }
        guard reconnect else { return (false, nil, wasConnected, effects + shutDown(code: code, reason: reason)) }
        current = .disconnected(code: code, reason: reason, willReconnect: true)
        return (true, notice?.afterMilliseconds, wasConnected, effects + [.state(current)])
    }

    /// Silence on the connection: an application ping gives a healthy server something to answer.
    mutating func probe() -> [Effect] {
        guard let socket else { return [] }
        let id = makeID()
        let text = Self.commandText(id: id, "ping", "")
        pending[id] = PendingCommand(name: "ping", text: text, purpose: .ignored, sentOn: generation)
        return [.send(socket, text)]
    }

    /// A subscribe that got 110 is sent again, unless it was unsubscribed or a reconnect sent it already.
    mutating func retrySubscribe(_ channel: String, entry: UInt64) -> [Effect] {
        guard entries[channel]?.id == entry else { return [] }
        return sendSubscribe(channel)
    }
}
