/// The error replies of client protocol v1. `all` is the table docs/PROTOCOL.md prints; a test keeps the
/// documents (PROTOCOL.md, CONFIGURATION.md) in step with it.
public struct ProtocolError: Error, Equatable, Sendable {
    public let code: Int
    public let message: String

    public init(_ code: Int, _ message: String) {
        self.code = code
        self.message = message
    }

    public static func badRequest(_ detail: String) -> ProtocolError { .init(100, "bad request: \(detail)") }
    public static let unknownCommand = ProtocolError(101, "unknown command")
    public static let unknownNamespace = ProtocolError(102, "unknown namespace")
    public static let invalidChannel = ProtocolError(103, "invalid channel name")
    public static func notAllowed(_ what: String) -> ProtocolError { .init(104, "not allowed: \(what)") }
    public static let tooManySubscriptions = ProtocolError(105, "limit exceeded: too many subscriptions")
    public static let rateLimited = ProtocolError(106, "limit exceeded: publish rate")
    public static let alreadySubscribed = ProtocolError(107, "already subscribed")
    public static let notSubscribed = ProtocolError(108, "not subscribed")
    public static let tooManyWaitingCommands = ProtocolError(109, "limit exceeded: too many commands waiting")
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
    public static let notAuthenticated = ProtocolError(111, "not authenticated")
    public static func invalidToken(_ failure: TokenFailure) -> ProtocolError { .init(112, failure.message) }
    public static let tokenExpired = ProtocolError(113, "token expired")
    public static let alreadyConnected = ProtocolError(114, "already connected")
    public static let unauthorized = ProtocolError(115, "unauthorized")
    public static let notFound = ProtocolError(116, "not found")
    public static let tooLarge = ProtocolError(117, "request too large")

    /// A refused token as an error reply: 113 when a fresh token would do, 112 otherwise.
    public static func refused(_ failure: TokenFailure) -> ProtocolError {
        failure == .expired ? .tokenExpired : .invalidToken(failure)
    }

    /// Every code with its meaning (the detail of 100 and 104 varies).
    public static let all: [ProtocolError] = [
        .init(100, "bad request"), .unknownCommand, .unknownNamespace, .invalidChannel, .init(104, "not allowed"),
        .tooManySubscriptions, .rateLimited, .alreadySubscribed, .notSubscribed, .tooManyWaitingCommands,
        .unavailable, .notAuthenticated, .init(112, "invalid token"), .tokenExpired, .alreadyConnected,
        .unauthorized, .notFound, .tooLarge,
    ]
}
