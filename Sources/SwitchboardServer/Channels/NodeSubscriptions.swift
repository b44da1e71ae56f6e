import Logging
import NIOConcurrencyHelpers
import NIOCore

/// This node's subscriptions at the broker: one per channel that has a subscriber on any event loop,
/// made when the first loop gains a subscriber and dropped when the last loop loses its last one. A
/// client's subscribe never costs a broker call of its own (with Redis, a network round trip).
///
/// Lock order: an entry's stripe lock here is held while calling the broker's `subscribe`/`unsubscribe`
/// (which keeps those calls in order for a channel); the broker's callbacks, possibly under its own lock,
/// read only `interested`, whose locks are leaves: entries → broker → interested, never the reverse.
final class NodeSubscriptions: Sendable {
    struct Entry: Sendable {
        /// Event loops with at least one subscriber.
        var loops: Int
        /// Completes (on any loop) once the broker subscription is in place.
        let ready: EventLoopFuture<Void>
    }

    private let broker: any Broker
    private let logger: Logger
    /// A broker subscription not in place within this fails, so subscribers get error 110 and the next
    /// one tries again.
    private let timeout: TimeAmount
    private let entries: StripedTable<Entry>
    /// The indices of the loops with subscribers, per channel: read for every event, so that an event
    /// reaches only those loops. Its locks are leaves (nothing is called while one is held), so the
    /// broker may read it under its own lock while `acquire` holds an entry's lock and calls the broker.
    private let interested: StripedTable<[Int]>
    /// Told when this node gains its first subscriber to a channel and loses its last (the webhook's
    /// occupied and vacated); nil without webhooks.
    private let events: LifecycleEvents?

    init(broker: any Broker, logger: Logger, timeout: TimeAmount, events: LifecycleEvents? = nil, stripes: Int = 64) {
        self.broker = broker
        self.logger = logger
        self.timeout = timeout
        self.events = events
        self.entries = StripedTable(stripes: stripes)
        self.interested = StripedTable(stripes: stripes)
    }

    /// The loops (by index) with subscribers to `channel`.
    func loops(receiving channel: String) -> [Int] {
        interested.withChannel(channel) { $0[channel] ?? [] }
    }

    /// Channels this node is subscribed to at the broker.
    var count: Int { entries.count }

    /// An event loop (the `loop`th) gained its first subscriber to `channel`; returns when the node
    /// receives the channel. The loop is listed before the broker is asked, so no event the subscription
    /// brings can miss it.
    func acquire(_ channel: String, loop: Int, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        interested.withChannel(channel) { $0[channel, default: []].append(loop) }
        return entries.withChannel(channel) { entries in
            if let ready = entries[channel]?.ready {
                entries[channel]?.loops += 1
                return ready
            }
            let ready = subscribe(channel, on: eventLoop)
            entries[channel] = Entry(loops: 1, ready: ready)
            events?.nodeJoined(channel, on: eventLoop)
            return ready
        }
    }

    /// A loop saw `failed` fail: subscribes again, unless another loop already did (then returns that).
    func retry(_ channel: String, failed: EventLoopFuture<Void>, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        entries.withChannel(channel) { entries in
            guard let entry = entries[channel] else { return failed }
            guard entry.ready === failed else { return entry.ready }
            let ready = subscribe(channel, on: eventLoop)
            entries[channel] = Entry(loops: entry.loops, ready: ready)
            return ready
        }
    }

    /// The broker's subscribe, failing with `BrokerError.timedOut` if it has not completed in time. The
    /// timer lives on the broker future's loop, which answers it, whatever becomes of the caller's.
    private func subscribe(_ channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        broker.subscribe(channel: channel, on: eventLoop).bounded(by: timeout)
    }

    /// An event loop (the `loop`th) lost its last subscriber to `channel`.
    func release(_ channel: String, loop: Int, on eventLoop: any EventLoop) {
        interested.withChannel(channel) { interested in
            interested[channel]?.removeAll { $0 == loop }
            if interested[channel]?.isEmpty == true { interested[channel] = nil }
        }
        entries.withChannel(channel) { entries in
            guard let loops = entries[channel]?.loops else { return }
            guard loops <= 1 else {
                entries[channel]?.loops = loops - 1
                return
            }
            entries[channel] = nil
            events?.nodeLeft(channel, on: eventLoop)
            broker.unsubscribe(channel: channel, on: eventLoop).whenFailure { [logger] error in
                logger.warning("broker unsubscribe failed", metadata: ["channel": "\(channel)", "error": "\(error)"])
            }
        }
    }
}
