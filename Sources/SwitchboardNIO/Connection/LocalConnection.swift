import NIOCore
import SwitchboardCore

/// An open connection as an application sees it on the connection's own event loop: what a per-loop
/// table (a channel's subscribers, say) holds to write to the connection directly, with no lookup by id
/// and no hop. Not `Sendable`: use it only on its loop (`LoopShard.connection(_:)` and `LoopTask.run`
/// give it there); from elsewhere, use `handle`.
public protocol LocalConnection: AnyObject {
    var id: ConnectionID { get }
    var userID: String? { get }
    /// The `info` of the upgrade decision.
    var info: String? { get }
    /// The connection's thread-safe handle.
    var handle: ConnectionHandle { get }
    /// False once the connection is closing: what is sent then is discarded.
    var isOpen: Bool { get }
    /// Writes (or queues, while the socket is not writable) an encoded frame, in order with everything
    /// else sent to this connection. With `flush` the socket is flushed at once; otherwise the loop
    /// flushes it once at the end of its current batch of work.
    func send(_ frame: ByteBuffer, as kind: OutboundClass, flush: Bool)
    /// Starts the close handshake with an application's own code and reason.
    func close(code: CloseCode, reason: String)
    /// Starts the close handshake for one of the reasons in the table (its code, its reconnect advice
    /// in the disconnect notice, its metrics label), with `message` or the reason's default text.
    func close(_ reason: DisconnectReason, message: String?)
}

extension WebSocketConnection: LocalConnection {
    var isOpen: Bool { machine.state == .open }

    func send(_ frame: ByteBuffer, as kind: OutboundClass, flush: Bool) {
        enqueue(frame, as: kind)
        if flush, flushPending { flushNow() }
    }

    func close(code: CloseCode, reason: String) {
        close(.serverClosed, code: code, message: reason)
    }

    func close(_ reason: DisconnectReason, message: String?) {
        close(reason, code: nil, message: message)
    }
}
