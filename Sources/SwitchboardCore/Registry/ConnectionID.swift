/// Identifies a connection for its whole life. The top 16 bits name the registry shard (the event
/// loop that owns the connection), so a lookup by id goes straight to one shard without a global map.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let rawValue: UInt64

    public init(rawValue: UInt64) { self.rawValue = rawValue }

    public init(shard: Int, sequence: UInt64) {
        rawValue = UInt64(UInt16(truncatingIfNeeded: shard)) << 48 | (sequence & 0xFFFF_FFFF_FFFF)
    }

    public var shard: Int { Int(rawValue >> 48) }

    public var description: String { "\(shard)-\(rawValue & 0xFFFF_FFFF_FFFF)" }

    public static func < (lhs: ConnectionID, rhs: ConnectionID) -> Bool { lhs.rawValue < rhs.rawValue }
}
