import Logging
import NIOCore
import SwitchboardRedis

/// One Redis instance of the cluster, as the broker uses it: pipelined commands, and a pub/sub
/// connection that carries the channels hashed to it.
final class RedisInstance: Sendable {
    let client: RedisClient
    let subscriber: RedisSubscriber
    /// The node's continuity per channel on this instance; touched only on the subscriber's loop.
    let streams: StreamPositions

    init(
        configuration: RedisConfiguration, cluster: ClusterConfiguration, group: any EventLoopGroup, logger: Logger,
        onMessage: @escaping @Sendable (RedisInstance, String, ByteBuffer) -> Void,
        onConnectionChange: @escaping @Sendable (RedisInstance, RedisSubscriber.ConnectionChange) -> Void
    ) {
        client = RedisClient(
            configuration: configuration, connections: cluster.connectionsPerInstance, group: group,
            backoff: cluster.backoff, scripts: LuaScripts.all)
        let eventLoop = group.next()
        streams = StreamPositions(eventLoop: eventLoop)
        // The callbacks need this instance, which does not exist yet: they go through a box filled below.
        let box = InstanceBox()
        subscriber = RedisSubscriber(
            configuration: configuration, eventLoop: eventLoop, backoff: cluster.backoff, logger: logger,
            onMessage: { channel, payload in
                if let instance = box.instance { onMessage(instance, channel, payload) }
            },
            onConnectionChange: { change in
                if let instance = box.instance { onConnectionChange(instance, change) }
            })
        box.instance = self
    }
}

/// The subscriber's way back to its instance, weak so the instance can go.
// @unchecked Sendable: `instance` is written once, in `RedisInstance.init`, before the subscriber starts.
private final class InstanceBox: @unchecked Sendable {
    weak var instance: RedisInstance?
}

/// Where this node is in each channel's stream (the last epoch and offset it received), and which
/// channels may have missed events because the pub/sub connection broke. Confined to the subscriber's
/// loop, where every message and connection change of the instance arrives.
// @unchecked Sendable: every mutable property is read and written only on `eventLoop`.
final class StreamPositions: @unchecked Sendable {
    let eventLoop: any EventLoop
    /// Channels this node is subscribed to on the instance, with the last position received (nil: none
    /// yet since subscribing or since the last break).
    var subscribed: [String: (epoch: String, offset: Int)?] = [:]
    /// Channels that must resynchronize before their next event is delivered.
    var broken: Set<String> = []

    init(eventLoop: any EventLoop) {
        self.eventLoop = eventLoop
    }
}
