/// Every way a connection can end, as one table: the metrics label, the close code and reason the
/// server sends (when it is the one closing), and whether a client should reconnect.
public enum DisconnectReason: String, CaseIterable, Hashable, Sendable {
    /// The client sent a close frame.
    case clientClosed = "client_closed"
    /// TCP ended (EOF or reset) without a close handshake.
    case connectionLost = "connection_lost"
    case protocolError = "protocol_error"
    /// The client sent data the application does not take (a binary message where only text is spoken).
    case unsupportedData = "unsupported_data"
    case invalidPayload = "invalid_payload"
    case messageTooBig = "message_too_big"
    case pongTimeout = "pong_timeout"
    case idleTimeout = "idle_timeout"
    case slowConsumer = "slow_consumer"
    /// The client sent more messages or bytes per second than `AbuseLimits` allows, sustained.
    case inboundRateLimited = "inbound_rate_limited"
    /// The user already has `AbuseLimits.maxConnectionsPerUser` connections (known after in-band `connect`).
    case tooManyUserConnections = "too_many_user_connections"
    case shutdown = "shutdown"
    /// The credentials the connection was accepted with expired (the upgrade decision's `expiresAt`).
    case tokenExpired = "token_expired"
    /// The connection did not authenticate within the time allowed.
    case authenticationTimeout = "authentication_timeout"
    /// The credentials the connection offered were refused.
    case invalidToken = "invalid_token"
    /// The application closed the connection.
    case serverClosed = "server_closed"
    /// The application closed the connection and told the client not to come back.
    case rejected = "rejected"

    /// The code the server sends when it closes for this reason. For the reasons where the peer ended the
    /// connection (`clientClosed`, `connectionLost`) it is the code recorded, not sent.
    public var closeCode: CloseCode {
        switch self {
        case .clientClosed, .serverClosed: return .normal
        case .rejected: return .disconnected
        case .authenticationTimeout: return .authenticationTimeout
        case .invalidToken: return .invalidToken
        case .connectionLost: return .abnormal
        case .protocolError: return .protocolError
        case .unsupportedData: return .unsupportedData
        case .invalidPayload: return .invalidPayload
        case .messageTooBig: return .messageTooBig
        case .pongTimeout, .idleTimeout, .slowConsumer, .inboundRateLimited, .tooManyUserConnections:
            return .policyViolation
        case .shutdown: return .goingAway
        case .tokenExpired: return .tokenExpired
        }
    }

    /// The close frame's reason text when whoever closes for this reason passes none; empty for
    /// `clientClosed`.
    public var defaultMessage: String {
        switch self {
        case .clientClosed: return ""
        case .connectionLost: return "connection lost"
        case .protocolError: return "protocol error"
        case .unsupportedData: return "unsupported data"
        case .invalidPayload: return "invalid payload"
        case .messageTooBig: return "message too big"
        case .pongTimeout: return "pong timeout"
        case .idleTimeout: return "idle timeout"
        case .slowConsumer: return "slow consumer"
        case .inboundRateLimited: return "inbound rate limit exceeded"
        case .tooManyUserConnections: return "too many connections for this user"
        case .shutdown: return "server shutting down"
        case .tokenExpired: return "token expired"
        case .serverClosed: return "closed by server"
        case .rejected: return "disconnected by server"
        case .authenticationTimeout: return "not authenticated in time"
        case .invalidToken: return "invalid token"
        }
    }

    /// Whether a well-behaved client should reconnect: a client that broke the protocol or sent
    /// oversized messages would only repeat the error.
    public var shouldReconnect: Bool {
        switch self {
        case .protocolError, .unsupportedData, .invalidPayload, .messageTooBig, .invalidToken, .rejected: return false
        default: return true
        }
    }

    /// The reason matching a wire-level failure the server detected.
    package init(failure: WebSocketFailure) {
        switch failure.code {
        case .invalidPayload: self = .invalidPayload
        case .messageTooBig: self = .messageTooBig
        default: self = .protocolError
        }
    }
}
