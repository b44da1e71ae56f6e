import NIOCore
import SwitchboardCore

/// An open connection as an application sees it on the connection's own event loop: what a per-loop
/// table (a channel's subscribers, say) holds to write to the connection directly, with no lookup by id
/// and no hop. Not `Sendable`: use it only on its loop (`LoopShard.connection(_:)` and `LoopTask.run`
/// give it there); from elsewhere, use `handle`.
public protocol LocalConnection: AnyObject {
    var id: ConnectionID { get }
    /// How the client reached the hub (a WebSocket, an event stream, the HTTP transport).
    var transport: Transport { get }
    var userID: String? { get }
    /// The `info` of the upgrade decision.
    var info: String? { get }
    /// The upgrade decision's `attachment`. The application may replace it, dropping what it needed only
    /// to open the connection (an idle connection keeps nothing it does not use).
    var attachment: (any Sendable)? { get set }
    /// The peer's address (for logs and per-address limits).
    var remoteAddress: SocketAddress? { get }
    /// The client is on this host: its peer is a loopback address and no proxy forwarded the request (a
    /// reverse proxy on this host connects from loopback for clients anywhere). What "local only" rules need.
    var isLocal: Bool { get }
    /// The application's own state for this connection (a protocol session, say), set in
    /// `connectionOpened` and read in the other hooks: no table keyed by connection id to keep in step.
    /// Cleared after `connectionClosed`.
    var applicationState: AnyObject? { get set }
    /// When the connection's credentials expire, if they do.
    var expiresAt: NIODeadline? { get }
    /// The close handshake's code and reason once it began (the server's, or the client's that it echoed);
    /// nil while open, and when TCP went without one.
    var closeStatus: (code: CloseCode, reason: String)? { get }
    /// Names the user (and presence info) after the upgrade: a client that authenticates with its first
    /// message rather than in the upgrade request. Re-indexes the connection by user. Returns false, having
    /// closed the connection (1008), when the user already has `AbuseLimits.maxConnectionsPerUser` connections.
    @discardableResult
    func identify(userID: String?, info: String?) -> Bool
    /// Closes the connection with 4001 "token expired" at `deadline`, replacing the earlier deadline
    /// (a refreshed token); nil: never. At `warnAt`, if given, the application's `credentialsExpiring`
    /// is called. Both are checked on the loop's heartbeat wheel: they fire up to one tick late.
    func expire(at deadline: NIODeadline?, warnAt: NIODeadline?)
    /// The connection's thread-safe handle.
    var handle: ConnectionHandle { get }
    /// False once the connection is closing: what is sent then is discarded.
    var isOpen: Bool { get }
    /// Writes (or queues, while the socket is not writable) an encoded frame, in order with everything
    /// else sent to this connection. With `flush` the socket is flushed at once; otherwise the loop
    /// decides (`LoopShard.flushesAtOnce`): the connection's first message of an inbox batch goes at
    /// once, later ones and replies written while reading with one flush at the end of the batch or turn.
    func send(_ frame: ByteBuffer, as kind: OutboundClass, flush: Bool)
    /// Hands the application a message that reached the connection another way (a `POST` of the HTTP
    /// transport), counted and limited as if read from the socket.
    func receive(_ message: DataMessage)
    /// Starts the close handshake with an application's own code and reason; the disconnect notice advises
    /// reconnecting unless `reconnect` is false.
    func close(code: CloseCode, reason: String, reconnect: Bool)
    /// Starts the close handshake for one of the reasons in the table (its code, its reconnect advice
    /// in the disconnect notice, its metrics label), with `message` or the reason's default text.
    func close(_ reason: DisconnectReason, message: String?)
}

extension LocalConnection {
    /// Closes the connection with 4001 at `deadline`, with no warning first; nil: never.
    public func expire(at deadline: NIODeadline?) { expire(at: deadline, warnAt: nil) }
}

extension WebSocketConnection: LocalConnection {
    var isOpen: Bool { machine.state == .open }

    var closeStatus: (code: CloseCode, reason: String)? { machine.closeStatus }

    var remoteAddress: SocketAddress? { context?.channel.remoteAddress }

    func send(_ frame: ByteBuffer, as kind: OutboundClass, flush: Bool) {
        shard.eventLoop.assertInEventLoop()
        if flush || shard.flushesAtOnce(self) { enqueueAndFlush(frame, as: kind) } else { enqueue(frame, as: kind) }
    }

    func close(code: CloseCode, reason: String, reconnect: Bool) {
        close(reconnect ? .serverClosed : .rejected, code: code, message: reason)
    }

    func close(_ reason: DisconnectReason, message: String?) {
        close(reason, code: nil, message: message)
    }
}
