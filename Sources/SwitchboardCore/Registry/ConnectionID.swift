/// Identifies a connection for its whole life. The top 16 bits name the registry shard (the event
/// loop that owns the connection), so a lookup by id goes straight to one shard without a global map.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible, Comparable {
    /// The packed id: shard in the top 16 bits, the shard's sequence number in the low 48. This is the number
    /// the server API and the cluster wire carry.
    public let rawValue: UInt64

    /// Rebuilds an id from its `rawValue`, e.g. one received from the server API or another node.
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// Packs a shard index (kept to 16 bits) and that shard's sequence number (kept to 48 bits).
    public init(shard: Int, sequence: UInt64) {
        rawValue = UInt64(UInt16(truncatingIfNeeded: shard)) << 48 | (sequence & 0xFFFF_FFFF_FFFF)
    }

    /// The registry shard, i.e. the index of the event loop that owns the connection.
    public var shard: Int { Int(rawValue >> 48) }

    /// `shard-sequence`, e.g. `3-1042`, as it appears in logs.
    public var description: String { "\(shard)-\(rawValue & 0xFFFF_FFFF_FFFF)" }

    /// Orders by `rawValue`: by shard, then by creation order within a shard.
    public static func < (lhs: ConnectionID, rhs: ConnectionID) -> Bool { lhs.rawValue < rhs.rawValue }
}
