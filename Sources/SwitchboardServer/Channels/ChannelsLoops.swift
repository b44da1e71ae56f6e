import SwitchboardNIO

/// The channel layer's per-loop state, one per event loop in `Hub.eventLoops` order.
final class ChannelsLoops: Sendable {
    let hub: Hub
    let loops: [ChannelsLoop]

    init(
        hub: Hub, nodeSubscriptions: NodeSubscriptions, metrics: ChannelsMetrics,
        resynchronize: @escaping @Sendable (LocalChannel, ChannelsLoop) -> Void
    ) {
        self.hub = hub
        let maxHeld = hub.configuration.queueMaxMessages
        self.loops = hub.loopShards.map {
            ChannelsLoop(
                shard: $0, nodeSubscriptions: nodeSubscriptions, maxHeld: maxHeld, metrics: metrics,
                resynchronize: resynchronize)
        }
    }
}
