import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// One channel's subscribers on one event loop. Publications walk `subscribers`, an array of
/// subscription objects that each hold their connection: no hashing of the channel name per subscriber
/// and no lookup of the connection by id on the fan-out path.
final class LocalChannel {
    let name: String
    let options: NamespaceOptions
    let lane: DeliveryLane
    var subscribers: [Subscription] = []
    /// Completes (on any loop) once this node receives the channel from the broker.
    var nodeSubscribed: EventLoopFuture<Void>

    init(name: String, options: NamespaceOptions, nodeSubscribed: EventLoopFuture<Void>) {
        self.name = name
        self.options = options
        self.lane = DeliveryLane(name: name, policy: options.slowConsumer)
        self.nodeSubscribed = nodeSubscribed
    }
}

/// One client's subscription to one channel.
final class Subscription {
    let connection: any LocalConnection
    let channel: LocalChannel
    /// Tells this subscription from an earlier or later one of the same client to the same channel: a
    /// broker answer for another generation must not complete this one.
    let generation: UInt64
    /// Waiting for the broker's snapshot; live events wait in `held`, in order.
    var recovering = true
    var held: [ChannelEvent] = []
    /// Publications at or below this offset were delivered (by the snapshot or live): skipped.
    var lastOffset = 0
    /// The stream's epoch `lastOffset` belongs to: where a resynchronization recovers from.
    var epoch = ""
    /// A resynchronization came while the snapshot was being read (which may predate the break): run
    /// it once live.
    var needsResynchronization = false
    /// Entering presence and announcing the join (any loop): leaving waits for it, so a store that
    /// answers late never sees the remove before the add, nor subscribers the leave before the join.
    var joined: EventLoopFuture<Void>?
    /// Position in `channel.subscribers`.
    var index = -1

    init(connection: any LocalConnection, channel: LocalChannel, generation: UInt64) {
        self.connection = connection
        self.channel = channel
        self.generation = generation
    }

    /// Sends a channel event (encoded as `frame`; `offset` for a publication, nil for join/leave) now
    /// when live, or after the snapshot when recovering. Held events are bounded by `maxHeld`: past it
    /// the subscriber is a slow consumer (closed 1008; it reconnects and recovers from history).
    func deliver(_ event: ChannelEvent, offset: Int?, frame: ByteBuffer, alone: Bool, maxHeld: Int) {
        guard !recovering else {
            guard held.count < maxHeld else {
                held = []
                connection.close(.slowConsumer, message: nil)
                return
            }
            held.append(event)
            return
        }
        if let offset {
            guard offset > lastOffset else { return }  // already in the snapshot
            lastOffset = offset
            connection.send(frame, as: .lane(channel.lane), flush: alone)
        } else {
            connection.send(frame, as: .reliable, flush: alone)
        }
    }

    /// The snapshot went out (it ended at `offset`): what was held follows, without duplicates.
    func goLive(after offset: Int) {
        recovering = false
        lastOffset = offset
        let held = self.held
        self.held = []
        // A publication of another epoch than the snapshot's continues nothing the client has.
        for event in held where event.epoch == nil || event.epoch == epoch {
            deliver(event, offset: event.offset, frame: event.frame(options: channel.options), alone: false, maxHeld: 0)
        }
    }
}

/// The channel layer's part of one event loop: the sessions of its connections and its channels'
/// subscribers. Touched only on its loop; events reach it through the loop's inbox.
// @unchecked Sendable: every mutable property is read and written only on `shard.eventLoop`.
final class ChannelsLoop: @unchecked Sendable {
    let shard: LoopShard
    private let nodeSubscriptions: NodeSubscriptions
    var sessions: [ConnectionID: ClientSession] = [:]
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
        for subscription in channel.subscribers {
            subscription.deliver(event, offset: offset, frame: frame, alone: alone, maxHeld: maxHeld)
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
