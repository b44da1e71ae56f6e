/// A close status code (RFC 6455 §7.4). A struct rather than an enum so applications can use 4000–4999.
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    /// The code as sent in the first two bytes of a close frame's payload.
    public var rawValue: UInt16
    /// Accepts any number; check `isValidOnWire` before trusting a code a peer sent.
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// Same as `init(rawValue:)`, shorter to write: `CloseCode(4100)`.
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    /// 1000: the connection did its job and is done.
    public static let normal = CloseCode(1000)
    /// 1001: the endpoint is going away; the server sends it when shutting down.
    public static let goingAway = CloseCode(1001)
    /// 1002: the peer broke the WebSocket protocol (bad framing, masking, opcodes).
    public static let protocolError = CloseCode(1002)
    /// 1003: a kind of message the endpoint does not take, e.g. binary where only text is spoken.
    public static let unsupportedData = CloseCode(1003)
    /// Never sent on the wire: stands for "the close frame carried no code".
    public static let noStatus = CloseCode(1005)
    /// Never sent on the wire: stands for "the TCP connection ended without a close frame".
    public static let abnormal = CloseCode(1006)
    /// 1007: a message's data does not match its type, e.g. a text message that is not valid UTF-8.
    public static let invalidPayload = CloseCode(1007)
    /// 1008: the connection broke a policy: pong or idle timeout, slow consumer, rate or connection limits.
    public static let policyViolation = CloseCode(1008)
    /// 1009: a message was larger than the endpoint accepts (`maxMessageSize` on this server).
    public static let messageTooBig = CloseCode(1009)
    /// 1011: the server hit a condition it could not handle (e.g. out of memory for an inflater).
    public static let internalError = CloseCode(1011)
    /// 1013: a temporary condition on the server's side; the client should reconnect after a delay.
    public static let tryAgainLater = CloseCode(1013)
    /// Switchboard's own (4000–4999 are the application's): the connection's credentials expired;
    /// reconnect with fresh ones.
    public static let tokenExpired = CloseCode(4001)
    /// The connection did not authenticate (the client protocol's `connect`) in time.
    public static let authenticationTimeout = CloseCode(4002)
    /// The credentials offered were refused; the reason says why. Reconnecting with the same ones is pointless.
    public static let invalidToken = CloseCode(4003)
    /// The application's backend ended the connection (the server API's disconnect, by default).
    public static let disconnected = CloseCode(4000)

    /// Whether a peer may legitimately send this code in a close frame. 1005, 1006 and 1015 are
    /// reserved for local use, 1004 and 1016–2999 are unassigned; 3000–4999 belong to libraries and apps.
    public var isValidOnWire: Bool {
        switch rawValue {
        case 1000...1003, 1007...1014, 3000...4999: return true
        default: return false
        }
    }

    /// The bare number, e.g. `1008`.
    public var description: String { String(rawValue) }
}

/// Why the server (or the peer) ended a connection: a close code and a human-readable reason, as sent
/// in the close frame. The failure cases below are the only places these pairs are spelled out.
package struct WebSocketFailure: Error, Equatable, Sendable {
    package var code: CloseCode
    package var reason: String
    package init(_ code: CloseCode, _ reason: String) {
        self.code = code
        self.reason = reason
    }

    static func protocolError(_ reason: String) -> WebSocketFailure { .init(.protocolError, reason) }
    static func invalidUTF8(_ reason: String = "invalid UTF-8") -> WebSocketFailure { .init(.invalidPayload, reason) }
    static func tooBig(_ limit: Int) -> WebSocketFailure { .init(.messageTooBig, "message exceeds \(limit) bytes") }
}
