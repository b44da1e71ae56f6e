import NIOCore
import SwitchboardCore

/// Someone present in a channel: one connection.
public struct PresenceMember: Sendable, Hashable {
    /// The member's connection; unique only within its node (see `node`).
    public let client: ConnectionID
    /// The connection's user id; nil for an anonymous connection.
    public let user: String?
    /// The connection's application data (a JSON value), when its upgrade attached some.
    public let data: String?
    /// The node the connection is on, in a cluster (connection ids are unique only within a node).
    public let node: String?

    /// `data`, when given, must be JSON text: `json` embeds it as is.
    public init(client: ConnectionID, user: String?, data: String? = nil, node: String? = nil) {
        self.client = client
        self.user = user
        self.data = data
        self.node = node
    }

    /// The id clients see: `shard-sequence`, prefixed with the node in a cluster.
    public var clientID: String { node.map { "\($0)-\(client)" } ?? "\(client)" }

    /// The member as the protocol shows it: `{"client":…,"user":…,"data":…}`, `data` only when present.
    public var json: String {
        let user = user.map(ServerMessage.quote) ?? "null"
        return "{\"client\":\"\(clientID)\",\"user\":\(user)" + (data.map { ",\"data\":\($0)}" } ?? "}")
    }
}

/// Who is in a channel at one moment, and how many.
public struct PresenceSnapshot: Sendable, Equatable {
    /// The members; empty when only counts were asked for (`presenceCounts`).
    public let members: [PresenceMember]
    /// Member connections.
    public let connections: Int
    /// Distinct user ids among the members; anonymous connections are not counted.
    public let users: Int

    /// Made by presence managers.
    public init(members: [PresenceMember], connections: Int, users: Int) {
        self.members = members
        self.connections = connections
        self.users = users
    }
}

/// Who is in each channel: its own contract, apart from the `Broker` (as in centrifuge), because it is
/// stored and expired differently (a hash per channel refreshed by each node, in a cluster).
///
/// Every method may be called from any thread and returns a future that may complete on any event
/// loop, later, or fail; callers hop and bound it. Entries belong to connections of this node: the node
/// removes them when the connection leaves the channel or closes (a clustered implementation also
/// expires the entries of a node that died). Join/leave events are not sent from here: the caller
/// publishes them through the broker, so they stay in order with the channel's publications.
public protocol PresenceManager: Sendable {
    /// Adds (or refreshes) a member; returns the channel's member count afterwards.
    func add(_ member: PresenceMember, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int>
    /// Removes a member; returns the count afterwards, or nil when it was not there.
    func remove(_ member: PresenceMember, from channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int?>
    func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot>
    /// Connections and distinct users only (`members` empty): what counts-only namespaces read, which a
    /// store can answer without listing every member.
    func presenceCounts(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot>
}

extension PresenceManager {
    /// Default: reads the whole `presence` and drops the members. Override when the store can count alone.
    public func presenceCounts(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        presence(channel: channel, on: eventLoop).map {
            PresenceSnapshot(members: [], connections: $0.connections, users: $0.users)
        }
    }
}
