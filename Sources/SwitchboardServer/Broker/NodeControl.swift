import NIOCore
import SwitchboardCore

/// What the server API asks of connections that may be on any node: applied here at once, and handed
/// to every other node through `NodeControl`.
public enum NodeCommand: Sendable, Equatable, Codable {
    case send(user: String, data: String)
    case disconnectUser(user: String, code: UInt16, reason: String, reconnect: Bool)
    case disconnectClient(node: String, client: UInt64, code: UInt16, reason: String, reconnect: Bool)
    case subscribe(user: String, channel: String)
    case unsubscribe(user: String, channel: String)
    case refresh(user: String, expiresAt: Double?)
    /// Commands POSTed for an HTTP transport session that lives on `node` (to another node).
    case post(node: String, client: UInt64, secret: String, body: String)
}

/// A live node as node info lists it.
public struct NodeInfo: Sendable, Equatable, Codable {
    /// The node's cluster id (`NodeControl.nodeID`); empty on a single node.
    public var id: String
    /// A name for people: the node's host name unless configured otherwise.
    public var name: String
    /// Client connections open on the node.
    public var connections: Int
    /// Distinct user ids among those connections.
    public var users: Int
    /// Channels with at least one subscriber on the node.
    public var channels: Int
    /// Client subscriptions on the node, all channels together.
    public var subscriptions: Int
    /// Whole seconds since the node's `ChannelsApplication` was made.
    public var uptimeSeconds: Int

    /// Made by `NodeControlHandler.describe(on:)`, or decoded from another node's announcement.
    public init(
        id: String, name: String, connections: Int, users: Int, channels: Int, subscriptions: Int, uptimeSeconds: Int
    ) {
        self.id = id
        self.name = name
        self.connections = connections
        self.users = users
        self.channels = channels
        self.subscriptions = subscriptions
        self.uptimeSeconds = uptimeSeconds
    }
}

/// The node receiving commands from other nodes, and describing itself to them.
public protocol NodeControlHandler: AnyObject, Sendable {
    func apply(_ command: NodeCommand)
    func describe(on eventLoop: any EventLoop) -> EventLoopFuture<NodeInfo>
}

/// The seam between nodes for what is not a channel stream: user-targeted commands and the list of
/// live nodes. Absent on a single node. Futures may complete on any loop, late or never: callers hop and
/// bound them, as with the `Broker`.
public protocol NodeControl: Sendable {
    /// This node's id, unique in the cluster: part of its connections' client ids.
    var nodeID: String { get }
    /// Sets who applies commands from other nodes. Called once, before any other call.
    func attach(_ handler: any NodeControlHandler)
    /// Hands `command` to every other node (this node has applied it already).
    func broadcast(_ command: NodeCommand, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// The nodes that announced themselves recently, this one included.
    func nodes(on eventLoop: any EventLoop) -> EventLoopFuture<[NodeInfo]>
}
