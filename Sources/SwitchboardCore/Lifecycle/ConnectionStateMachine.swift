/// The life of one WebSocket connection after its upgrade: open → closing → closed. A value type
/// that returns what to do, so every transition is unit-tested without sockets; the channel handler
/// performs the actions.
package struct ConnectionStateMachine: Sendable {
    package enum State: Equatable, Sendable {
        case connecting
        case open
        /// We sent a close frame and wait for the peer's, bounded by the close timeout.
        case closing
        case closed
    }

    package enum Action: Equatable, Sendable {
        case none
        /// Add to the registry and start heartbeats.
        case register
        /// Hand a data message to the application.
        case deliver
        /// Answer a ping with a pong carrying the same payload.
        case sendPong
        /// Send a close frame, then wait for the peer's reply (start the close timer).
        case sendClose(CloseCode, String)
        /// Answer the peer's close frame and close TCP: the server closes TCP first (RFC 6455 §7.1.1).
        case replyCloseAndDisconnect(CloseCode)
        /// Close TCP now.
        case disconnect
        /// Leave every table, free buffers, tell the application why.
        case unregister(DisconnectReason)
    }

    package private(set) var state: State = .connecting
    /// Why the connection is ending; set by the first cause and never overwritten.
    package private(set) var reason: DisconnectReason?
    /// The close code and reason of the close handshake (ours, or the peer's that we echoed); nil when TCP
    /// went without one.
    package private(set) var closeStatus: (code: CloseCode, reason: String)?

    package init() {}

    package mutating func upgraded() -> Action {
        guard state == .connecting else { return .none }
        state = .open
        return .register
    }

    package mutating func received(_ message: InboundMessage) -> Action {
        switch (state, message) {
        case (.open, .text), (.open, .binary): return .deliver
        case (.open, .ping), (.closing, .ping): return state == .open ? .sendPong : .none
        case (.open, .pong), (.closing, .pong): return .none
        case (.open, .close(let code, let why)):
            state = .closing
            reason = reason ?? .clientClosed
            closeStatus = (code ?? .normal, why)
            // Echo the peer's code (RFC 6455 §5.5.1); a close without a code is answered with 1000.
            return .replyCloseAndDisconnect(code ?? .normal)
        case (.closing, .close):
            return .disconnect
        default:
            return .none  // data after our close frame, or anything after closed, is discarded
        }
    }

    /// The server decides to end the connection (protocol failure, timeout, slow consumer, shutdown…).
    package mutating func close(_ why: DisconnectReason, code: CloseCode? = nil, message: String? = nil) -> Action {
        guard state == .open || state == .connecting else { return .none }
        state = .closing
        reason = why
        let status = (code: code ?? why.closeCode, reason: message ?? why.defaultMessage)
        closeStatus = status
        return .sendClose(status.code, status.reason)
    }

    package mutating func fail(_ failure: WebSocketFailure) -> Action {
        close(DisconnectReason(failure: failure), code: failure.code, message: failure.reason)
    }

    /// The peer did not answer our close frame in time.
    package mutating func closeTimedOut() -> Action {
        state == .closing ? .disconnect : .none
    }

    /// TCP is gone, for whatever reason. Always the last event.
    package mutating func transportClosed() -> Action {
        guard state != .closed else { return .none }
        let wasRegistered = state != .connecting
        state = .closed
        let why = reason ?? .connectionLost
        reason = why
        return wasRegistered ? .unregister(why) : .none
    }
}
