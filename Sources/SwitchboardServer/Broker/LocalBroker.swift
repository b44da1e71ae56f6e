import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The in-process broker, the default for a single node. Channel state is split over lock stripes
/// by channel name, so publishers to different channels rarely meet and there is no global lock.
/// Delivery happens under the channel's stripe lock, which is what keeps each channel in offset order
/// (delivery only enqueues one task per event loop, so the lock is held briefly).
public final class LocalBroker: Broker {
    private let stripes: [NIOLockedValueBox<[String: ChannelState]>]
    /// This broker's history continuity: a restart means a new epoch, so clients learn that their
    /// offsets no longer mean anything.
    private let epoch = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    // Lock: guards the delivery target, attached once at start.
    private let target = NIOLockedValueBox<(any BrokerDelivery)?>(nil)

    public init(stripes: Int = 64) {
        self.stripes = (0..<max(stripes, 1)).map { _ in NIOLockedValueBox([:]) }
    }

    /// Channels with state (subscribers, history, presence, or an offset to keep); idle ones cost nothing.
    public var channelCount: Int { stripes.reduce(0) { $0 + $1.withLockedValue(\.count) } }

    public func attach(_ delivery: any BrokerDelivery) {
        target.withLockedValue { $0 = delivery }
    }

    private func stripe(_ channel: String) -> NIOLockedValueBox<[String: ChannelState]> {
        var hasher = Hasher()
        hasher.combine(channel)
        return stripes[Int(UInt(bitPattern: hasher.finalize()) % UInt(stripes.count))]
    }

    private static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    public func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        let delivery = target.withLockedValue { $0 }
        let publication = stripe(channel).withLockedValue { states -> Publication in
            var state = states[channel] ?? ChannelState(epoch: epoch)
            let now = Self.now()
            state.expire(now: now, options: options)
            state.offset += 1
            let publication = Publication(offset: state.offset, data: data, user: user, time: now)
            state.append(publication, options: options)
            if state.subscribers > 0 { delivery?.deliver(publication, channel: channel) }
            states[channel] = state.isIdle(options) ? nil : state
            return publication
        }
        return eventLoop.makeSucceededFuture(publication)
    }

    public func subscribe(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot> {
        let snapshot = stripe(channel).withLockedValue { states -> SubscribeSnapshot in
            var state = states[channel] ?? ChannelState(epoch: epoch)
            state.expire(now: Self.now(), options: options)
            state.subscribers += 1
            states[channel] = state
            guard let since else {
                return SubscribeSnapshot(epoch: state.epoch, offset: state.offset, publications: [], recovered: false)
            }
            guard since.epoch == state.epoch else {
                return SubscribeSnapshot(epoch: state.epoch, offset: state.offset, publications: [], recovered: false)
            }
            let (missed, complete) = state.publications(after: since.offset, limit: options.historySize)
            // Without history nothing can be replayed, so recovery is never claimed.
            let recovered = complete && options.historySize > 0
            return SubscribeSnapshot(
                epoch: state.epoch, offset: state.offset, publications: recovered ? missed : [], recovered: recovered)
        }
        return eventLoop.makeSucceededFuture(snapshot)
    }

    public func unsubscribe(channel: String, options: NamespaceOptions, on eventLoop: any EventLoop) {
        stripe(channel).withLockedValue { states in
            guard var state = states[channel] else { return }
            state.subscribers = max(state.subscribers - 1, 0)
            states[channel] = state.isIdle(options) ? nil : state
        }
    }

    public func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(epoch: String, offset: Int, publications: [Publication])> {
        let result = stripe(channel).withLockedValue { states -> (String, Int, [Publication]) in
            guard var state = states[channel] else { return (ChannelState(epoch: epoch).epoch, 0, []) }
            state.expire(now: Self.now(), options: options)
            states[channel] = state.isIdle(options) ? nil : state
            let all = Array(state.history)
            let selected = since.map { offset in all.filter { $0.offset > offset } } ?? all
            // Without `since`, the newest `limit`; with it, the oldest `limit` after it.
            let page = since == nil ? Array(selected.suffix(limit)) : Array(selected.prefix(limit))
            return (state.epoch, state.offset, page)
        }
        return eventLoop.makeSucceededFuture((epoch: result.0, offset: result.1, publications: result.2))
    }

    public func join(channel: String, member: PresenceMember, options: NamespaceOptions) {
        let delivery = target.withLockedValue { $0 }
        stripe(channel).withLockedValue { states in
            var state = states[channel] ?? ChannelState(epoch: epoch)
            state.members[member.client] = member
            if options.joinLeave, state.members.count <= options.joinLeaveMaxMembers {
                delivery?.deliverPresence(joined: true, member: member, channel: channel)
            }
            states[channel] = state
        }
    }

    public func leave(channel: String, member: PresenceMember, options: NamespaceOptions) {
        let delivery = target.withLockedValue { $0 }
        stripe(channel).withLockedValue { states in
            guard var state = states[channel], state.members.removeValue(forKey: member.client) != nil else { return }
            if options.joinLeave, state.members.count < options.joinLeaveMaxMembers {
                delivery?.deliverPresence(joined: false, member: member, channel: channel)
            }
            states[channel] = state.isIdle(options) ? nil : state
        }
    }

    public func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        let snapshot = stripe(channel).withLockedValue { states -> PresenceSnapshot in
            let members = states[channel].map { Array($0.members.values) } ?? []
            return PresenceSnapshot(
                members: members.sorted { $0.client < $1.client }, connections: members.count,
                users: Set(members.compactMap(\.user)).count)
        }
        return eventLoop.makeSucceededFuture(snapshot)
    }
}
