import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The channel layer's part of one event loop: its channels' subscribers (each connection's session
/// travels with the connection, as its `applicationState`). Touched only on its loop; events reach it through the loop's inbox.
// @unchecked Sendable: every mutable property is read and written only on `shard.eventLoop`.
final class ChannelsLoop: @unchecked Sendable {
    let shard: LoopShard
    private let nodeSubscriptions: NodeSubscriptions
    private(set) var channels: [String: LocalChannel] = [:]
    /// Events one recovering subscription may hold (the connection's queue bound in messages).
    private let maxHeld: Int
    private let metrics: ChannelsMetrics
    /// Publications delivered on this loop, for sampling their latency.
    private var publications = 0
    /// Deliveries (publication × subscriber) on this loop since start, for the statistics feed.
    private(set) var deliveries = 0

    /// Recovers a channel's subscribers on this loop after the node may have missed events.
    private let resynchronize: @Sendable (LocalChannel, ChannelsLoop) -> Void
    /// The loop's recovery reads for resynchronization, a bounded number at a time.
    let resynchronizations: ResynchronizationQueue

    init(
        shard: LoopShard, nodeSubscriptions: NodeSubscriptions, maxHeld: Int, metrics: ChannelsMetrics,
        maxConcurrentResynchronizations: Int = 16,
        resynchronize: @escaping @Sendable (LocalChannel, ChannelsLoop) -> Void
    ) {
        self.resynchronizations = ResynchronizationQueue(limit: maxConcurrentResynchronizations)
        self.shard = shard
        self.metrics = metrics
        self.resynchronize = resynchronize
        self.nodeSubscriptions = nodeSubscriptions
        self.maxHeld = maxHeld
    }

    var eventLoop: any EventLoop { shard.eventLoop }

    /// The loop's table for `name`, made (and the node subscribed) on its first subscriber.
    func channel(_ name: String, options: NamespaceOptions) -> LocalChannel {
        if let channel = channels[name] { return channel }
        let channel = LocalChannel(
            name: name, options: options,
            nodeSubscribed: nodeSubscriptions.acquire(name, loop: shard.index, on: eventLoop))
        channels[name] = channel
        return channel
    }

    func add(_ subscription: Subscription) {
        subscription.index = subscription.channel.subscribers.count
        subscription.channel.subscribers.append(subscription)
    }

    func remove(_ subscription: Subscription) {
        let channel = subscription.channel
        let index = subscription.index
        guard channel.subscribers.indices.contains(index), channel.subscribers[index] === subscription else { return }
        let last = channel.subscribers.removeLast()
        if last !== subscription {
            channel.subscribers[index] = last
            last.index = index
        }
        subscription.index = -1
        if channel.subscribers.isEmpty {
            channels[channel.name] = nil
            nodeSubscriptions.release(channel.name, loop: shard.index, on: eventLoop)
        }
    }

    func deliver(_ event: ChannelEvent, alone: Bool) {
        guard let channel = channels[event.channel] else { return }
        if case .resynchronize = event.kind { return resynchronize(channel, self) }
        // A publication from another epoch than a live subscriber's: its offset is no continuation of
        // the subscriber's (the broker lost the stream and started over); recover first, then deliver.
        if case .publication(let publication) = event.kind, let epoch = publication.epoch,
            channel.subscribers.contains(where: { !$0.recovering && $0.epoch != epoch })
        {
            resynchronize(channel, self)
        }
        let frame = event.frame(options: channel.options)
        let offset = event.offset
        // A publication for one-way streams is encoded once on this loop, when it has such a subscriber (a
        // recovering one holds the event and encodes it when it goes live).
        var streamFrame: ByteBuffer?
        for subscription in channel.subscribers {
            if subscription.eventStream, offset != nil, !subscription.recovering {
                let encoded =
                    streamFrame ?? event.eventStreamFrame(options: channel.options, epoch: subscription.epoch)
                streamFrame = encoded
                subscription.deliver(event, offset: offset, frame: encoded, alone: alone, maxHeld: maxHeld)
            } else {
                subscription.deliver(event, offset: offset, frame: frame, alone: alone, maxHeld: maxHeld)
            }
        }
        metrics.deliveries.increment(by: channel.subscribers.count)
        deliveries &+= channel.subscribers.count
        // The latency histogram takes a lock shared by every loop: sample one publication in 16 per loop.
        guard case .publication(let publication) = event.kind else { return }
        publications &+= 1
        guard publications & 15 == 1 else { return }
        let latency = Int64(NIODeadline.now().uptimeNanoseconds) - publication.time
        if latency >= 0 { metrics.publishToDelivery.recordNanoseconds(latency) }
    }

    /// The node's subscription to `channel` failed (or timed out): the next subscriber tries again
    /// rather than inherit the failure for as long as the channel has subscribers here.
    func retryNodeSubscription(_ channel: LocalChannel, failed: EventLoopFuture<Void>) {
        guard channels[channel.name] === channel, channel.nodeSubscribed === failed else { return }
        channel.nodeSubscribed = nodeSubscriptions.retry(channel.name, failed: failed, on: eventLoop)
    }
}
