import NIOCore
import SwitchboardCore

/// A publication in a channel's stream. `data` is the publisher's JSON, byte for byte.
public struct Publication: Sendable, Equatable {
    public let offset: Int
    public let data: String
    public let user: String?
    /// Monotonic nanoseconds when it was published (for history TTL).
    public let time: Int64
}

/// Someone present in a channel.
public struct PresenceMember: Sendable, Hashable {
    public let client: ConnectionID
    public let user: String?
    /// The connection's application data (a JSON value), when its upgrade attached some.
    public let data: String?

    public init(client: ConnectionID, user: String?, data: String? = nil) {
        self.client = client
        self.user = user
        self.data = data
    }

    var json: String {
        let user = user.map(ServerMessage.quote) ?? "null"
        return "{\"client\":\"\(client)\",\"user\":\(user)" + (data.map { ",\"data\":\($0)}" } ?? "}")
    }
}

public struct PresenceSnapshot: Sendable, Equatable {
    public let members: [PresenceMember]
    public let connections: Int
    public let users: Int
}

/// What a subscription starts from: the channel's epoch, its newest offset, and (when recovering)
/// the publications after the client's position, oldest first.
public struct SubscribeSnapshot: Sendable, Equatable {
    public let epoch: String
    public let offset: Int
    public let publications: [Publication]
    /// True when `publications` is exactly what the client missed since its position.
    public let recovered: Bool
}

/// Where a broker hands what it fans out to this node. Calls for one channel arrive in the
/// channel's order and never concurrently with each other.
public protocol BrokerDelivery: AnyObject, Sendable {
    func deliver(_ publication: Publication, channel: String)
    func deliverPresence(joined: Bool, member: PresenceMember, channel: String)
}

/// The seam between the hub and where channel state lives: in this process (`LocalBroker`) or
/// shared by several nodes (a Redis broker, later). The hub never assumes which.
///
/// Contract:
/// - `publish` assigns the channel's next offset (exactly one more than the previous publication's,
///   within one epoch), appends the publication to history (when the namespace keeps history) and
///   hands it to the `BrokerDelivery` of every node subscribed to the channel. These three happen
///   atomically with respect to other `publish` and `subscribe` calls on the same channel, so every
///   node sees a channel's publications in offset order.
/// - Delivery to nodes is at most once: a node that is not subscribed when a publication is made
///   does not get it later, except through `history`.
/// - `subscribe` registers the node (so later publications are delivered) and returns the snapshot
///   taken at the same instant; publications delivered to the node after it may repeat offsets at or
///   below `snapshot.offset`, which the caller de-duplicates.
/// - The epoch changes whenever continuity is lost (an in-memory broker restarted, history evicted
///   while nobody listened); offsets from another epoch say nothing about this one.
/// - Presence entries belong to connections of this node and are removed by `leave`.
public protocol Broker: Sendable {
    func attach(_ delivery: any BrokerDelivery)
    func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication>
    func subscribe(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot>
    func unsubscribe(channel: String, options: NamespaceOptions, on eventLoop: any EventLoop)
    func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<(epoch: String, offset: Int, publications: [Publication])>
    func join(channel: String, member: PresenceMember, options: NamespaceOptions)
    func leave(channel: String, member: PresenceMember, options: NamespaceOptions)
    func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot>
}
