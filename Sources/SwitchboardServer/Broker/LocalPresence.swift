import NIOCore
import SwitchboardCore

/// In-process presence, the default for a single node: members per channel, split over lock stripes by
/// channel name. Every call completes at once, on the caller's `eventLoop`; members are changed in
/// place (filling a room of n members is O(n), not O(n²)).
public final class LocalPresence: PresenceManager {
    private let channels: StripedTable<[ConnectionID: PresenceMember]>

    /// `stripes`: how many locks the channels are spread over. Default 64.
    public init(stripes: Int = 64) {
        self.channels = StripedTable(stripes: stripes)
    }

    /// Channels with at least one member.
    public var channelCount: Int { channels.count }

    /// Adds or replaces the member (keyed by connection id); completes with the channel's new member count.
    public func add(_ member: PresenceMember, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let count = channels.withChannel(channel) { channels -> Int in
            channels[channel, default: [:]][member.client] = member
            return channels[channel]?.count ?? 0
        }
        return eventLoop.makeSucceededFuture(count)
    }

    /// Completes with the members left, or nil if the connection was not a member; an empty channel is dropped.
    public func remove(_ member: PresenceMember, from channel: String, on eventLoop: any EventLoop)
        -> EventLoopFuture<Int?>
    {
        let count = channels.withChannel(channel) { channels -> Int? in
            guard channels[channel]?.removeValue(forKey: member.client) != nil else { return nil }
            let left = channels[channel]?.count ?? 0
            if left == 0 { channels[channel] = nil }
            return left
        }
        return eventLoop.makeSucceededFuture(count)
    }

    /// Every member, ordered by connection id, with the connection and distinct user counts.
    public func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        let members = channels.withChannel(channel) { $0[channel].map { Array($0.values) } ?? [] }
        let snapshot = PresenceSnapshot(
            members: members.sorted { $0.client < $1.client }, connections: members.count,
            users: Set(members.compactMap(\.user)).count)
        return eventLoop.makeSucceededFuture(snapshot)
    }
}
