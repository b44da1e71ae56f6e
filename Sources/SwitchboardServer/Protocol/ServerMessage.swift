import Foundation
import NIOCore
import SwitchboardCore

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

    /// A message the application's backend sent to this user (the server API's `send`).
    public static func message(data: String) -> ByteBuffer {
        frame("{\"push\":\"message\",\"data\":\(data)}")
    }

    static func frame(_ json: String) -> ByteBuffer { FrameEncoder.encodeText(json) }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    /// A JSON string literal (RFC 8259: quote, backslash and control characters escaped). By hand: it
    /// runs for every publication's push, where Foundation's serializer cost more than the rest of it.
    public static func quote(_ string: String) -> String {
        let utf8 = string.utf8
        guard utf8.contains(where: { $0 < 0x20 || $0 == 0x22 || $0 == 0x5C }) else { return "\"" + string + "\"" }
        var out: [UInt8] = [0x22]
        out.reserveCapacity(utf8.count + 8)
        for byte in utf8 {
            switch byte {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, 0x6E]
            case 0x0D: out += [0x5C, 0x72]
            case 0x09: out += [0x5C, 0x74]
            case 0x08: out += [0x5C, 0x62]
            case 0x0C: out += [0x5C, 0x66]
            case ..<0x20:
                out += [0x5C, 0x75, 0x30, 0x30, hexDigits[Int(byte >> 4)], hexDigits[Int(byte & 0x0F)]]
            default: out.append(byte)
            }
        }
        out.append(0x22)
        return String(decoding: out, as: UTF8.self)
    }
}
