/// Heartbeat timing for one connection, in monotonic nanoseconds. The server pings every
/// `pingInterval`; a ping unanswered for `pongTimeout` ends the connection, and so does
/// `idleTimeout` without a data message from the client (when enabled).
package struct HeartbeatState: Sendable {
    package enum Verdict: Equatable, Sendable {
        /// Nothing due: look again at this time.
        case wait(until: Int64)
        /// Send a ping now, then look again at this time (the pong deadline or the idle deadline).
        case ping(thenCheckAt: Int64)
        case pongTimeout
        case idleTimeout
    }

    package let pongTimeout: Int64
    /// Zero disables the idle timeout.
    package let idleTimeout: Int64
    private var nextPingAt: Int64
    private var pingSentAt: Int64?
    private var lastDataAt: Int64

    package init(now: Int64, firstPingAt: Int64, pongTimeout: Int64, idleTimeout: Int64) {
        self.nextPingAt = firstPingAt
        self.pongTimeout = pongTimeout
        self.idleTimeout = idleTimeout
        self.lastDataAt = now
    }

    package var awaitingPong: Bool { pingSentAt != nil }

    package mutating func pongReceived() { pingSentAt = nil }

    package mutating func dataReceived(now: Int64) { lastDataAt = now }

    /// - Parameter nextInterval: the (jittered) interval until the ping after one sent now.
    package mutating func evaluate(now: Int64, nextInterval: Int64) -> Verdict {
        if idleTimeout > 0, now >= lastDataAt + idleTimeout { return .idleTimeout }
        if let sent = pingSentAt {
            if now >= sent + pongTimeout { return .pongTimeout }
            return .wait(until: earliest(sent + pongTimeout))
        }
        if now >= nextPingAt {
            pingSentAt = now
            nextPingAt = now + nextInterval
            return .ping(thenCheckAt: earliest(now + pongTimeout))
        }
        return .wait(until: earliest(nextPingAt))
    }

    private func earliest(_ deadline: Int64) -> Int64 {
        idleTimeout > 0 ? min(deadline, lastDataAt + idleTimeout) : deadline
    }
}
