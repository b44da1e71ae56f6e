/// Limits on what one client address, one user or one connection may take (0 everywhere: no limit).
/// Reloadable: the hub reads the current value at each decision.
public struct AbuseLimits: Sendable, Equatable {
    /// Open connections from one client address at once; beyond, 503 with a jittered Retry-After.
    public var maxConnectionsPerAddress = 0
    /// New connections per second from one client address (burst: one second's worth, at least 1).
    public var connectionsPerSecondPerAddress = 0.0
    /// Open connections of one user at once; beyond, the newest is refused.
    public var maxConnectionsPerUser = 0
    /// Data messages per second one connection may send, sustained (burst: two seconds' worth); beyond, 1008.
    public var inboundMessagesPerSecond = 0.0
    /// Bytes per second one connection may send, sustained (burst: two seconds' worth); beyond, 1008.
    public var inboundBytesPerSecond = 0.0
    /// Peers (load balancers) whose `X-Forwarded-For` / `Forwarded` header names the client's address;
    /// from anyone else those headers are ignored.
    public var trustedProxies: [String] = []

    public init() {}
}
