import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The channel layer's part of one event loop: the sessions of its connections and, per channel,
/// which of them are subscribed. A channel nobody on this loop subscribes to has no entry.
// @unchecked Sendable: every mutable property is touched only on `eventLoop`.
final class ChannelsShard: @unchecked Sendable {
    let eventLoop: any EventLoop
    var sessions: [ConnectionID: ClientSession] = [:]
    private var subscribers: [String: Set<ConnectionID>] = [:]

    init(eventLoop: any EventLoop) { self.eventLoop = eventLoop }

    func add(_ id: ConnectionID, to channel: String) { subscribers[channel, default: []].insert(id) }

    func remove(_ id: ConnectionID, from channel: String) {
        subscribers[channel]?.remove(id)
        if subscribers[channel]?.isEmpty == true { subscribers[channel] = nil }
    }

    /// A publication fanned out to this loop: the same encoded frame for every local subscriber.
    /// Receivers of the publication being delivered; kept to avoid an allocation per publication.
    private var receivers: [ConnectionID] = []

    struct Delivery {
        let publication: Publication
        let frame: ByteBuffer
        let lane: DeliveryLane
        let channel: String
    }

    // Lock: guards publications waiting for this loop, appended from any thread, taken by the loop.
    private let inbox = NIOLockedValueBox<(pending: [Delivery], scheduled: Bool)>(([], false))
    private var taken: [Delivery] = []

    /// Queues a publication for this loop. Publications that arrive before the loop gets to them are
    /// delivered in one pass with one flush per subscriber, as broadcasts are.
    func submit(_ delivery: Delivery, hub: Hub) {
        let schedule = inbox.withLockedValue { inbox -> Bool in
            inbox.pending.append(delivery)
            guard !inbox.scheduled else { return false }
            inbox.scheduled = true
            return true
        }
        if schedule { eventLoop.execute { self.deliverPending(hub: hub) } }
    }

    private func deliverPending(hub: Hub) {
        inbox.withLockedValue { inbox in
            inbox.scheduled = false
            swap(&inbox.pending, &taken)
        }
        // One publication: flush each subscriber at once (lowest latency). Several: one flush each at
        // the end (fewest syscalls, which is what keeps a busy loop from falling behind).
        let flushEach = taken.count == 1
        for delivery in taken {
            deliver(
                delivery.publication, frame: delivery.frame, lane: delivery.lane, channel: delivery.channel, hub: hub,
                flushEach: flushEach)
        }
        taken.removeAll(keepingCapacity: true)
        if !flushEach { hub.flushLocal(on: eventLoop) }
    }

    private func deliver(
        _ publication: Publication, frame: ByteBuffer, lane: DeliveryLane, channel: String, hub: Hub, flushEach: Bool
    ) {
        guard let ids = subscribers[channel] else { return }
        for id in ids {
            guard let session = sessions[id], let state = session.subscriptions[channel] else { continue }
            switch state {
            case .recovering(var pending):
                pending.append((publication, frame, lane))
                session.subscriptions[channel] = .recovering(pending)
            case .live(let last) where publication.offset > last:
                session.subscriptions[channel] = .live(lastOffset: publication.offset)
                receivers.append(id)
            case .live:
                break  // already delivered by the subscribe snapshot
            }
        }
        hub.send(frame: frame, toLocal: receivers, lane: lane, flushEach: flushEach, on: eventLoop)
        receivers.removeAll(keepingCapacity: true)
    }

    func deliverToSubscribers(_ frame: ByteBuffer, channel: String) {
        guard let ids = subscribers[channel] else { return }
        for id in ids { sessions[id]?.send(frame) }
    }
}
