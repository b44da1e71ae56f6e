/// What a new connection must pass before it costs more than a socket: a bound on handshakes in
/// progress, so silent or slow clients cannot hold descriptors and buffers without limit, and an
/// optional rate of upgrades, so a reconnect storm is spread out instead of starving the connections
/// already open. One per event loop, owned by it, so nothing here is locked.
package struct AdmissionControl: Sendable {
    package let maxPending: Int
    package private(set) var pending = 0
    private var upgrades: TokenBucket?

    /// - Parameters:
    ///   - maxPending: handshakes in progress on this loop at most.
    ///   - upgradesPerSecond: upgrades this loop admits per second, with a second's worth of burst;
    ///     zero admits all.
    package init(maxPending: Int, upgradesPerSecond: Double, now: Int64) {
        self.maxPending = maxPending
        if upgradesPerSecond > 0 {
            upgrades = TokenBucket(rate: upgradesPerSecond, burst: max(upgradesPerSecond, 1), now: now)
        }
    }

    /// Whether another handshake may start; a new connection that may not is closed at once.
    package var hasRoomForHandshake: Bool { pending < maxPending }

    package mutating func handshakeStarted() { pending += 1 }
    package mutating func handshakeEnded() { pending -= 1 }

    /// Takes an upgrade from the rate; false means answer 503 and let the client retry later.
    package mutating func admitUpgrade(now: Int64) -> Bool {
        upgrades?.take(now: now) ?? true
    }
}
