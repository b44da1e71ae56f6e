import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The answer to an upgrade request: this is where authentication plugs in.
public enum UpgradeDecision: Sendable {
    /// Upgrade; the connection carries `userID` (if any), the chosen subprotocol (if any) and `info`:
    /// application data about the connection (a JSON value, e.g. from a token), shown to others in presence
    /// (the channel layer leaves out, with a warning, info that is not JSON). At `expiresAt` (a token's
    /// `exp`, say) the hub closes the connection with 4001 "token expired"; nil: never. `attachment` is
    /// the application's own (a token's claims, say), kept with the connection (`LocalConnection.attachment`).
    case accept(
        userID: String?, subprotocol: String?, info: String? = nil, expiresAt: NIODeadline? = nil,
        attachment: (any Sendable)? = nil)
    /// Refuse with an HTTP status and a reason sent as the response body.
    case reject(HTTPResponseStatus, reason: String)
}

/// An upgrade decision's attachment that names the streams of a one-way event stream (channels, say), in
/// the order the `id:` of its events lists their positions.
public protocol StreamAttachment: Sendable {
    /// The streams, in the order of the `id:` positions.
    var streamNames: [String] { get }
    /// Where each stream starts (the request's `Last-Event-ID`), "" for none: until a stream's own event
    /// moves it, its position is this, so an `id:` never drops a position the client gave.
    var streamPositions: [String] { get }
}

/// What a data message from a client was.
public enum DataMessage: Sendable, Equatable {
    case text(ByteBuffer)
    case binary(ByteBuffer)
}

/// The application behind the transport. Every callback runs on the connection's event loop, in order
/// for that connection; do not block in them.
public protocol SwitchboardApplication: Sendable {
    /// Decides on an upgrade request that passed the protocol checks (authentication plugs in here).
    ///
    /// - Parameters:
    ///   - request: the upgrade request's head (path with query, headers).
    ///   - remoteAddress: the client's address (for logs and per-address limits).
    ///   - eventLoop: the connection's event loop; called on it.
    /// - Returns: the decision. The future may complete on any event loop, at any later time: the
    ///   handshake hops it back to the connection's loop, and closes the connection if it has not
    ///   completed within the handshake timeout (or answers 503 if the server began draining meanwhile).
    ///   The default accepts anonymously, choosing the first offered subprotocol among
    ///   `supportedSubprotocols`.
    func shouldUpgrade(
        _ request: HTTPRequestHead, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision>
    /// Decides on a stream request (`Transport.eventStream` or `.httpStream`, at the configured paths) that
    /// passed the HTTP checks (method, Host, origin), as `shouldUpgrade` does for WebSockets: same bounds,
    /// same limits. An `attachment` that is a `StreamAttachment` names the streams of a one-way response
    /// (for `Last-Event-ID`). The default refuses with 404: the application serves no streams.
    func shouldOpenStream(
        _ request: HTTPRequestHead, transport: Transport, from remoteAddress: SocketAddress?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision>
    /// A `POST` of the HTTP transport: commands for the session of one of its streams, perhaps on another
    /// node. Called on the event loop that read the request; the future may complete anywhere (the
    /// handshake timeout bounds it). The default answers 404.
    func received(_ post: StreamPost, on eventLoop: any EventLoop) -> EventLoopFuture<StreamPostAnswer>
    /// Subprotocols this application speaks, in order of preference.
    var supportedSubprotocols: [String] { get }
    /// Called once, when the server that runs this application has made its hub, before any connection:
    /// an application that keeps per-loop state makes it here, beside `hub.loopShards`.
    func attached(to hub: Hub)
    /// The connection is registered and open: frames sent to it now go out. Set its `applicationState`
    /// here; `connection.handle` is what to keep for reaching it from other threads.
    func connectionOpened(_ connection: any LocalConnection)
    /// A complete data message (reassembled, inflated, UTF-8 checked for text) from the client, in order.
    func connection(_ connection: any LocalConnection, received message: DataMessage)
    /// The connection has left every table of the hub, whatever ended it; nothing sent to it arrives.
    /// Its `applicationState` is cleared after this returns.
    func connectionClosed(_ connection: any LocalConnection, reason: DisconnectReason)
    /// A message to send just before the close frame when the server ends a connection (the client
    /// protocol's disconnect notice), or nil. `reconnectAfter` is the jittered hint of a shutdown.
    func disconnectNotice(
        reason: DisconnectReason, code: CloseCode, message: String, reconnectAfter: TimeAmount?
    ) -> ByteBuffer?
    /// A message telling the client that `dropped` messages of `lane` were dropped for it (the client
    /// protocol's gap notice), sent before the lane's next message; or nil.
    func gapNotice(lane: DeliveryLane, dropped: Int) -> ByteBuffer?
    /// The connection's credentials expire soon: the `warnAt` of its `LocalConnection.expire(at:warnAt:)`
    /// has come (a client protocol asks for a fresh token here). Called on the connection's loop, from its
    /// heartbeat wheel, so no timer is kept per connection.
    func credentialsExpiring(_ connection: any LocalConnection)
}

extension SwitchboardApplication {
    /// None: the default `shouldUpgrade` then agrees on no subprotocol.
    public var supportedSubprotocols: [String] { [] }
    /// Does nothing.
    public func attached(to hub: Hub) {}

    /// Accepts anonymously, with the first of `supportedSubprotocols` (in their order) that the client
    /// offered; no subprotocol when none matches.
    public func shouldUpgrade(
        _ request: HTTPRequestHead, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<
        UpgradeDecision
    > {
        let offered = request.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init)
        let chosen = supportedSubprotocols.first { offered.contains($0) }
        return eventLoop.makeSucceededFuture(.accept(userID: nil, subprotocol: chosen))
    }

    /// Refuses with 404: no streams.
    public func shouldOpenStream(
        _ request: HTTPRequestHead, transport: Transport, from remoteAddress: SocketAddress?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        eventLoop.makeSucceededFuture(.reject(.notFound, reason: "no event streams here"))
    }

    /// 404: no sessions.
    public func received(_ post: StreamPost, on eventLoop: any EventLoop) -> EventLoopFuture<StreamPostAnswer> {
        eventLoop.makeSucceededFuture(.error(.notFound, code: 404, "unknown session"))
    }

    /// Does nothing.
    public func connectionOpened(_ connection: any LocalConnection) {}
    /// Does nothing.
    public func connectionClosed(_ connection: any LocalConnection, reason: DisconnectReason) {}
    /// None: the close frame alone tells the client why.
    public func disconnectNotice(
        reason: DisconnectReason, code: CloseCode, message: String, reconnectAfter: TimeAmount?
    ) -> ByteBuffer? { nil }
    /// None: the client is not told of dropped messages.
    public func gapNotice(lane: DeliveryLane, dropped: Int) -> ByteBuffer? { nil }
    /// Does nothing: the connection still closes at its deadline.
    public func credentialsExpiring(_ connection: any LocalConnection) {}
}

/// A connection as the application sees it: its identity and a way to talk to it from any thread.
public struct ConnectionHandle: Sendable, Hashable {
    /// Which connection; equality and hashing use this alone.
    public let id: ConnectionID
    /// The user when the handle was taken (`LocalConnection.identify` may change it later); nil: anonymous.
    public let userID: String?
    /// The subprotocol agreed at the upgrade; nil: none.
    public let subprotocol: String?
    /// The `info` of the upgrade decision.
    public let info: String?
    /// The hub that owns the connection, through which the handle sends and closes.
    public let hub: Hub

    /// The same connection: compares ids only.
    public static func == (lhs: ConnectionHandle, rhs: ConnectionHandle) -> Bool { lhs.id == rhs.id }
    /// Hashes the id only, in step with `==`.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// Queues a pre-encoded frame (see `FrameEncoder`) for this connection; `kind` says what may happen
    /// to it while the connection lags.
    public func send(frame: ByteBuffer, as kind: OutboundClass = .standard) { hub.send(frame: frame, to: id, as: kind) }

    /// Encodes `text` as one text frame and queues it for this connection as `.standard`, from any thread.
    public func send(text: String) { hub.send(frame: FrameEncoder.encodeText(text), to: id) }

    /// Starts the close handshake with the given code and reason.
    public func close(code: CloseCode = .normal, reason: String = "") { hub.close(id, code: code, reason: reason) }
}
