/// Limits on what one client address, one user or one connection may take (0: no limit). The inbound
/// frame and byte rates are on by default, far above what an honest client sends, so that no client can
/// burn a core for ever (a stream of empty continuation frames completes no message). Reloadable: the hub
/// reads the current value at each decision.
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
    public var inboundBytesPerSecond = Self.defaultInboundBytesPerSecond
    /// Frames per second (data, continuation and control) one connection may send, sustained (burst: two
    /// seconds' worth); beyond, 1008.
    public var inboundFramesPerSecond = Self.defaultInboundFramesPerSecond

    /// 16 MiB a second: sixteen of the largest default messages, far above an honest client.
    public static let defaultInboundBytesPerSecond = 16.0 * 1024 * 1024
    /// 10,000 frames a second: above any game or dashboard, well below a loop of empty frames.
    public static let defaultInboundFramesPerSecond = 10_000.0
    /// Peers (load balancers) whose `X-Forwarded-For` / `Forwarded` header names the client's address:
    /// addresses or CIDR ranges (`10.0.0.0/8`); from anyone else those headers are ignored.
    public var trustedProxies: [String] = [] { didSet { trustedRanges = AddressRanges(trustedProxies) } }
    /// `trustedProxies`, parsed once.
    package private(set) var trustedRanges = AddressRanges([])

    /// No per-address or per-user limits; the inbound byte and frame rates keep their defaults.
    public init() {}
}
