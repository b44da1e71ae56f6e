/// Per client address: connections open and new connections per second, with a log budget per address
/// (one line per offender per interval). An entry lives while its address has counted connections or a
/// bucket still refilling (so connecting and closing in a loop does not reset the rate); refilled ones
/// are swept now and then. Not thread-safe: the hub keeps it under a lock.
package struct AddressTable: Sendable {
    package enum Verdict: Equatable, Sendable {
        /// No per-address limit is on: nothing counted, nothing to release.
        case admitted
        /// Counted: release it when the connection goes.
        case counted
        case tooMany(log: Bool)
        case tooFast(log: Bool)
    }

    private struct Entry: Sendable {
        var open = 0
        var bucket: TokenBucket?
        var lastLogged: Int64 = .min
    }

    private var entries: [String: Entry] = [:]
    private let logInterval: Int64
    private var admitsSinceSweep = 0

    package init(logInterval: Int64 = 10_000_000_000) { self.logInterval = logInterval }

    package var count: Int { entries.count }

    /// Counts a new connection from `address` if the limits allow it.
    package mutating func admit(_ address: String, limits: AbuseLimits, now: Int64) -> Verdict {
        guard limits.maxConnectionsPerAddress > 0 || limits.connectionsPerSecondPerAddress > 0 else {
            return .admitted
        }
        admitsSinceSweep += 1
        if admitsSinceSweep >= 1024 { sweep(now: now) }
        var entry = entries[address] ?? Entry()
        defer { entries[address] = entry }
        if limits.maxConnectionsPerAddress > 0, entry.open >= limits.maxConnectionsPerAddress {
            return .tooMany(log: shouldLog(&entry, now: now))
        }
        if limits.connectionsPerSecondPerAddress > 0 {
            let rate = limits.connectionsPerSecondPerAddress
            var bucket = entry.bucket ?? TokenBucket(rate: rate, burst: max(rate, 1), now: now)
            defer { entry.bucket = bucket }
            guard bucket.take(now: now) else { return .tooFast(log: shouldLog(&entry, now: now)) }
        }
        entry.open += 1
        return .counted
    }

    /// A connection counted for `address` has gone (or its handshake failed).
    package mutating func release(_ address: String, now: Int64) {
        guard var entry = entries[address] else { return }
        entry.open -= 1
        entries[address] = entry.open > 0 || !(entry.bucket?.isFull(now: now) ?? true) ? entry : nil
    }

    private mutating func sweep(now: Int64) {
        admitsSinceSweep = 0
        entries = entries.filter { $0.value.open > 0 || !($0.value.bucket?.isFull(now: now) ?? true) }
    }

    private func shouldLog(_ entry: inout Entry, now: Int64) -> Bool {
        guard entry.lastLogged == .min || now - entry.lastLogged >= logInterval else { return false }
        entry.lastLogged = now
        return true
    }
}
