import NIOCore
import SwitchboardRedis

/// How a node joins a cluster: which Redis instances carry it and how long shared state lives.
public struct ClusterConfiguration: Sendable {
    /// The Redis instances; each channel lives on one of them, chosen by consistent hashing of its name.
    /// Every node must list the same instances in the same order.
    public var redis: [RedisConfiguration]
    /// Starts every key and pub/sub channel name, so several clusters can share a Redis.
    public var prefix = "switchboard"
    /// This node's id: letters and digits, unique in the cluster, part of its connections' client ids.
    public var nodeID = ClusterConfiguration.randomNodeID()
    /// Pipelined command connections per Redis instance (pub/sub has its own).
    public var connectionsPerInstance = 2
    /// A presence entry not refreshed for this long is gone: how soon the members of a node that died
    /// leave presence. Each node refreshes its own entries every third of it.
    public var presenceTTL = TimeAmount.seconds(60)
    /// How long a channel's offset and epoch outlive its last publication. Once they expire the channel
    /// starts a new epoch, and clients holding older positions are told `recovered: false`.
    public var streamTTL = TimeAmount.hours(24 * 7)
    /// How often each node announces itself; a node silent for three intervals leaves node info.
    public var nodeInfoInterval = TimeAmount.seconds(5)
    /// Delays between reconnection attempts to a Redis instance, for command and pub/sub connections alike.
    public var backoff = Backoff()

    /// `redis` must not be empty; every other setting starts at its default, with a random `nodeID`.
    public init(redis: [RedisConfiguration]) {
        self.redis = redis
    }

    /// A fresh id in base 36 (8–10 characters): what `nodeID` is unless configured, so new on every start.
    public static func randomNodeID() -> String {
        String(UInt64.random(in: 1 << 40...1 << 50), radix: 36)
    }

    /// Whether `id` may be a `nodeID`: 1–64 ASCII letters and digits.
    public static func isValidNodeID(_ id: String) -> Bool {
        !id.isEmpty && id.count <= 64 && id.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber) }
    }
}
