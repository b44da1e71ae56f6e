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
