import Foundation
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// Builds the server's JSON messages as text frames. Hand-assembled so a publication's data goes out
/// as the very bytes the publisher sent, and a push for many subscribers is encoded once.
public enum ServerMessage {
    /// The success reply to command `id`: `{"id":…,"ok":result}`; `result` must be JSON text.
    public static func reply(id: Int, result: String = "{}") -> ByteBuffer {
        frame("{\"id\":\(id),\"ok\":\(result)}")
    }

    /// The error reply to command `id` (`null` when the command's id could not be read).
    public static func error(id: Int?, _ error: ProtocolError) -> ByteBuffer {
        let id = id.map(String.init) ?? "null"
        return frame("{\"id\":\(id),\"error\":{\"code\":\(error.code),\"message\":\(quote(error.message))}}")
    }

    /// The `pub` push for subscribers of `channel`; `showUser` adds the publisher's user id, when known.
    public static func publication(_ publication: Publication, channel: String, showUser: Bool) -> ByteBuffer {
        frame(publicationJSON(publication, channel: channel, showUser: showUser, push: true))
    }

    /// A publication as JSON text: the `pub` push when `push` is true, else the object history and
    /// recovery replies list (offset, data, user), without the channel.
    public static func publicationJSON(_ publication: Publication, channel: String?, showUser: Bool, push: Bool)
        -> String
    {
        var json = push ? "{\"push\":\"pub\",\"channel\":\(quote(channel ?? "")),\"offset\":" : "{\"offset\":"
        json += "\(publication.offset),\"data\":\(publication.data)"
        if showUser, let user = publication.user { json += ",\"user\":\(quote(user))" }
        return json + "}"
    }

    /// A presence push: `event` is `join` or `leave`, and `info` is the member's `json`.
    public static func membership(_ event: String, channel: String, member: PresenceMember) -> ByteBuffer {
        frame("{\"push\":\"\(event)\",\"channel\":\(quote(channel)),\"info\":\(member.json)}")
    }

    /// The `gap` push: `dropped` publications of `channel` were lost to the slow-consumer policy.
    public static func gap(channel: String, dropped: Int) -> ByteBuffer {
        frame("{\"push\":\"gap\",\"channel\":\(quote(channel)),\"dropped\":\(dropped)}")
    }

    /// The `disconnect` push sent just before the close frame; `afterMilliseconds` becomes `after_ms`, the
    /// delay to wait before reconnecting (on shutdown).
    public static func disconnect(code: CloseCode, reason: String, reconnect: Bool, afterMilliseconds: Int?)
        -> ByteBuffer
    {
        var json =
            "{\"push\":\"disconnect\",\"code\":\(code.rawValue),\"reason\":\(quote(reason)),\"reconnect\":\(reconnect)"
        if let after = afterMilliseconds { json += ",\"after_ms\":\(after)" }
        return frame(json + "}")
    }

    /// The token expires at `expiresAt` (Unix seconds): send `refresh` with a new one before then.
    public static func refresh(expiresAt: Double) -> ByteBuffer {
        frame("{\"push\":\"refresh\",\"expires_at\":\(unixSeconds(expiresAt))}")
    }

    /// Whole Unix seconds, clamped to a representable range (a token's `exp` can say anything).
    static func unixSeconds(_ seconds: Double) -> Int {
        seconds.isFinite ? Int(min(max(seconds, 0), 1e15)) : 0
    }

    /// The server subscribed the connection to a channel (a token's `channels`, or the server API).
    /// `result` is the object a subscribe reply would carry.
    static func subscribed(channel: String, result: String) -> ByteBuffer {
        frame("{\"push\":\"subscribed\",\"channel\":\(quote(channel))," + result.dropFirst())
    }

    /// The server ended a subscription (the server API, or a server-side subscribe that failed).
    static func unsubscribed(channel: String, error: ProtocolError?) -> ByteBuffer {
        let error = error.map { ",\"error\":{\"code\":\($0.code),\"message\":\(quote($0.message))}" } ?? ""
        return frame("{\"push\":\"unsubscribed\",\"channel\":\(quote(channel))\(error)}")
    }

    /// The HTTP transport's first message: the session id its `POST`s name.
    static func session(_ id: String) -> ByteBuffer {
        frame("{\"push\":\"session\",\"session\":\(quote(id))}")
    }

    /// A message the application's backend sent to this user (the server API's `send`).
    public static func message(data: String) -> ByteBuffer {
        frame("{\"push\":\"message\",\"data\":\(data)}")
    }

    static func frame(_ json: String) -> ByteBuffer { FrameEncoder.encodeText(json) }

    /// A JSON string literal (RFC 8259: quote, backslash and control characters escaped).
    public static func quote(_ string: String) -> String { JSONText.quote(string) }
}
