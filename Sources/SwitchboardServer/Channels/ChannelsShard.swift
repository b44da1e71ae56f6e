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

    func deliver(_ publication: Publication, frame: ByteBuffer, lane: DeliveryLane, channel: String, hub: Hub) {
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
        hub.send(frame: frame, toLocal: receivers, lane: lane, on: eventLoop)
        receivers.removeAll(keepingCapacity: true)
    }

    func deliverToSubscribers(_ frame: ByteBuffer, channel: String) {
        guard let ids = subscribers[channel] else { return }
        for id in ids { sessions[id]?.send(frame) }
    }
}
