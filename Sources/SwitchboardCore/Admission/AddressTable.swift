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

/// The client's address: the peer's, or behind a trusted proxy the one it names. `X-Forwarded-For` is read
/// right to left, skipping trusted proxies, so a client cannot prepend a forged address; `Forwarded`
/// (RFC 7239) `for=` values the same way.
package enum ClientAddress {
    package static func resolve(
        peer: String?, forwardedFor: [String], forwarded: [String], trusted: AddressRanges
    ) -> String {
        let peer = peer ?? "unknown"
        guard trusted.contains(peer) else { return peer }
        var chain = forwardedFor.flatMap { $0.split(separator: ",") }.map(clean)
        if chain.isEmpty {
            chain = forwarded.flatMap { $0.split(separator: ",") }.compactMap { element in
                element.split(separator: ";").map(clean).first { $0.lowercased().hasPrefix("for=") }
                    .map { clean(Substring($0.dropFirst(4))) }
            }
        }
        return chain.reversed().first { !trusted.contains($0) } ?? peer
    }

    /// Whether the client is on this host: its peer is a loopback address, and nothing says the request was
    /// forwarded. A reverse proxy on the same host connects from loopback on behalf of clients anywhere, so a
    /// forwarding header (or a peer that is a trusted proxy) means "not local", whether or not it is trusted.
    package static func isLocal(peer: String?, forwardedFor: [String], forwarded: [String], trusted: AddressRanges)
        -> Bool
    {
        guard let peer, forwardedFor.isEmpty, forwarded.isEmpty else { return false }
        return OwnHostNames.isLoopbackName(peer) && !trusted.contains(peer)
    }

    /// Trims spaces and quotes, brackets around IPv6 and a port (`"[2001:db8::1]:4711"` → `2001:db8::1`).
    private static func clean(_ text: Substring) -> String {
        var value = text.trimmingCharacters(in: " \t\"")
        if value.hasPrefix("["), let close = value.firstIndex(of: "]") {
            return String(value[value.index(after: value.startIndex)..<close])
        }
        if value.filter({ $0 == ":" }).count == 1, let colon = value.firstIndex(of: ":") {
            value = String(value[..<colon])
        }
        return value
    }
}

extension Substring {
    fileprivate func trimmingCharacters(in set: String) -> String {
        String(drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
