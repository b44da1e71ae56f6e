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
    /// How presence shows this subscriber when the backend gave it its own `info` (the subscribe proxy);
    /// nil: as the connection.
    var member: PresenceMember?
    /// The webhook was told of this subscription: its `unsubscribe` follows.
    var announced = false
    /// The connection is a one-way event stream: publications go as positioned events.
    let eventStream: Bool

    init(connection: any LocalConnection, channel: LocalChannel, generation: UInt64, eventStream: Bool = false) {
        self.connection = connection
        self.channel = channel
        self.generation = generation
        self.eventStream = eventStream
    }

    /// Sends a channel event (encoded as `frame`, as this subscriber's transport carries it; `offset` for a publication, nil for join/leave) now
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
            let frame =
                eventStream
                ? event.eventStreamFrame(options: channel.options, epoch: epoch) : event.frame(options: channel.options)
            deliver(event, offset: event.offset, frame: frame, alone: false, maxHeld: 0)
        }
    }
}
