/// A close status code (RFC 6455 §7.4). A struct rather than an enum so applications can use 4000–4999.
public struct CloseCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    public static let normal = CloseCode(1000)
    public static let goingAway = CloseCode(1001)
    public static let protocolError = CloseCode(1002)
    public static let unsupportedData = CloseCode(1003)
    /// Never sent on the wire: stands for "the close frame carried no code".
    public static let noStatus = CloseCode(1005)
    /// Never sent on the wire: stands for "the TCP connection ended without a close frame".
    public static let abnormal = CloseCode(1006)
    public static let invalidPayload = CloseCode(1007)
    public static let policyViolation = CloseCode(1008)
    public static let messageTooBig = CloseCode(1009)
    public static let internalError = CloseCode(1011)
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
