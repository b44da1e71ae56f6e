import NIOHTTP1

/// How a connection reaches the hub. Whatever the transport, a connection has the same lifecycle, registry
/// entry, heartbeats, outbound queue, limits and hooks: a transport is a way in and out, not a second hub.
public enum Transport: String, Sendable, CaseIterable {
    /// An upgraded WebSocket (RFC 6455).
    case webSocket = "websocket"
    /// Server-Sent Events, one way: a `GET` answered `text/event-stream`, for `EventSource` and `curl -N`.
    case eventStream = "sse"
    /// The two-way emulation for networks that refuse the upgrade: the client protocol's messages down an
    /// event stream, commands up by `POST`, tied together by a session id.
    case httpStream = "http_stream"

    /// Streams answer with an HTTP response that never ends rather than a 101.
    public var isStream: Bool { self != .webSocket }
}

/// A `POST` of the HTTP transport: commands for the session the client's stream belongs to.
public struct StreamPost: Sendable {
    /// The session id the stream's first message gave the client.
    public var session: String
    /// The body: one command per line, as a WebSocket client sends one per message.
    public var body: String
    /// The request's `Origin`, checked as a stream's upgrade is.
    public var origin: String?
}

/// What a `POST` of the HTTP transport is answered: a status and a JSON body.
public struct StreamPostAnswer: Sendable, Equatable {
    /// 202 when taken; 400, 403, 404, 413 or 503 otherwise.
    public var status: HTTPResponseStatus
    /// A JSON object: `{"ok":true}`, or `{"error":{"code":…,"message":…}}`.
    public var body: String

    /// An answer of `status` with `body` (JSON text).
    public init(status: HTTPResponseStatus, body: String) {
        self.status = status
        self.body = body
    }

    /// Taken: the commands reach the session's connection (on another node of a cluster, perhaps), and
    /// their replies come down its stream.
    public static let accepted = StreamPostAnswer(status: .accepted, body: #"{"ok":true}"#)

    /// An error answer with the protocol's error object.
    public static func error(_ status: HTTPResponseStatus, code: Int, _ message: String) -> StreamPostAnswer {
        StreamPostAnswer(
            status: status, body: #"{"error":{"code":\#(code),"message":\#(JSONText.quote(message))}}"#)
    }
}
