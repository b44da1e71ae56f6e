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
}

/// A live node as node info lists it.
public struct NodeInfo: Sendable, Equatable, Codable {
    public var id: String
    public var name: String
    public var connections: Int
    public var users: Int
    public var channels: Int
    public var subscriptions: Int
    public var uptimeSeconds: Int

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
