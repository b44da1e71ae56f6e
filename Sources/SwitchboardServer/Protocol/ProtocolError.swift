/// The error replies of client protocol v1. `all` is the table docs/PROTOCOL.md prints; a test keeps the
/// documents (PROTOCOL.md, CONFIGURATION.md) in step with it.
public struct ProtocolError: Error, Equatable, Sendable {
    /// The protocol's error code, 100–118 (docs/PROTOCOL.md), or 1000 and up from the application's
    /// backend; stable, unlike `message`.
    public let code: Int
    /// A human-readable message, sent with the code; some errors append a detail.
    public let message: String

    /// Any code and message; prefer the named errors below, which match the documented table.
    public init(_ code: Int, _ message: String) {
        self.code = code
        self.message = message
    }

    /// 100: the command could not be read; `detail` names what is missing or malformed.
    public static func badRequest(_ detail: String) -> ProtocolError { .init(100, "bad request: \(detail)") }
    /// 101: a `cmd` the server does not know.
    public static let unknownCommand = ProtocolError(101, "unknown command")
    /// 102: the channel's namespace is not configured.
    public static let unknownNamespace = ProtocolError(102, "unknown namespace")
    /// 103: the channel name is empty, too long or has characters outside the allowed set.
    public static let invalidChannel = ProtocolError(103, "invalid channel name")
    /// 104: refused by the namespace's options or permissions; `what` says which rule.
    public static func notAllowed(_ what: String) -> ProtocolError { .init(104, "not allowed: \(what)") }
    /// 105: the connection holds `maxSubscriptionsPerConnection` subscriptions already.
    public static let tooManySubscriptions = ProtocolError(105, "limit exceeded: too many subscriptions")
    /// 106: the connection publishes faster than `publishRate` (with `publishBurst`) allows.
    public static let rateLimited = ProtocolError(106, "limit exceeded: publish rate")
    /// 107: the connection is subscribed to the channel already.
    public static let alreadySubscribed = ProtocolError(107, "already subscribed")
    /// 108: unsubscribing from a channel the connection is not in.
    public static let notSubscribed = ProtocolError(108, "not subscribed")
    /// 109: too many commands for one channel wait behind its subscribe in progress.
    public static let tooManyWaitingCommands = ProtocolError(109, "limit exceeded: too many commands waiting")
    /// 110: the broker or presence store failed or did not answer in time; the client may retry.
    public static let unavailable = ProtocolError(110, "temporarily unavailable")
    /// 110 for a publish that was sent and not answered: retrying blindly may publish twice.
    public static let unavailableMaybePublished = ProtocolError(
        110,
        "temporarily unavailable: no answer in time, the publication may have been made; check history before publishing again"
    )

    /// What a failed publish tells its client: whether it may have been made.
    public static func publishFailure(_ error: any Error) -> ProtocolError {
        if let failure = error as? ProtocolError { return failure }
        if let failure = error as? BrokerError, failure == .timedOut || failure == .outcomeUnknown {
            return .unavailableMaybePublished
        }
        return .unavailable
    }
    /// 111: a command other than `connect` or `ping` before authenticating, where anonymous is not allowed.
    public static let notAuthenticated = ProtocolError(111, "not authenticated")
    /// 112: a refused connect, refresh or subscription token; the message is the failure's reason.
    public static func invalidToken(_ failure: TokenFailure) -> ProtocolError { .init(112, failure.message) }
    /// 113: the token's `exp` has passed; the client should get a fresh one.
    public static let tokenExpired = ProtocolError(113, "token expired")
    /// 114: a second `connect` with a token on the same connection.
    public static let alreadyConnected = ProtocolError(114, "already connected")
    /// 115: server API only, a missing or wrong API key.
    public static let unauthorized = ProtocolError(115, "unauthorized")
    /// 116: server API only, no such endpoint.
    public static let notFound = ProtocolError(116, "not found")
    /// 117: server API only, a request body over the size limit.
    public static let tooLarge = ProtocolError(117, "request too large")
    /// 118: the application's backend (an event proxy) answered something the server cannot use: not
    /// JSON, not one of result, error or disconnect, a status other than 2xx or 5xx.
    public static let badBackendAnswer = ProtocolError(
        118, "the application's backend gave an answer the server cannot use")

    /// A refused token as an error reply: 113 when a fresh token would do, 112 otherwise.
    public static func refused(_ failure: TokenFailure) -> ProtocolError {
        failure == .expired ? .tokenExpired : .invalidToken(failure)
    }

    /// Every code with its meaning (the detail of 100 and 104 varies).
    public static let all: [ProtocolError] = [
        .init(100, "bad request"), .unknownCommand, .unknownNamespace, .invalidChannel, .init(104, "not allowed"),
        .tooManySubscriptions, .rateLimited, .alreadySubscribed, .notSubscribed, .tooManyWaitingCommands,
        .unavailable, .notAuthenticated, .init(112, "invalid token"), .tokenExpired, .alreadyConnected,
        .unauthorized, .notFound, .tooLarge, .badBackendAnswer,
    ]
}
