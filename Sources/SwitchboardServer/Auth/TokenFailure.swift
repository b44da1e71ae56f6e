/// Why a token was refused: each has its own reason on the wire (close reason, error message, HTTP
/// body) and its own metrics label, so an operator can tell a bot from a clock skew from a key rotation.
public enum TokenFailure: String, Error, CaseIterable, Sendable {
    /// Not three base64url parts with a JSON header and payload.
    case malformed
    /// `alg: none`: an unsigned token is never accepted.
    case unsigned = "alg_none"
    /// An algorithm the server has no key type for (or refuses, like a symmetric one against a public key).
    case unsupportedAlgorithm = "unsupported_algorithm"
    /// A `crit` header (RFC 7515 §4.1.11): it names extensions the verifier must understand, and this one
    /// understands none, so the token must be refused.
    case unsupportedCriticalHeader = "unsupported_critical_header"
    /// The `kid` names no configured key (after refetching the JWKS, when there is one).
    case unknownKey = "unknown_key"
    /// No configured key of the token's algorithm verifies the signature.
    case invalidSignature = "invalid_signature"
    case expired
    /// `nbf` or `iat` is in the future (beyond the leeway).
    case notYetValid = "not_yet_valid"
    case wrongAudience = "wrong_audience"
    case wrongIssuer = "wrong_issuer"
    /// No `sub` claim (or not a string).
    case missingSubject = "missing_subject"
    /// A refresh or subscription token for another user than the connection's.
    case wrongUser = "wrong_user"
    /// A subscription token for another channel.
    case wrongChannel = "wrong_channel"
    /// A subscription token (it has a `channel` claim) offered to connect or refresh: it opens one channel,
    /// never a session.
    case subscriptionToken = "subscription_token"
    /// A connection token (no `channel` claim) offered to subscribe.
    case notSubscriptionToken = "not_subscription_token"
    /// Too many refused tokens on one connection: it is closed.
    case tooManyRefused = "too_many_refused"
    /// An empty `sub` where anonymous connections are not allowed.
    case anonymousNotAllowed = "anonymous_not_allowed"

    /// The reason as clients and logs see it.
    public var message: String {
        switch self {
        case .malformed: return "invalid token: malformed"
        case .unsigned: return "invalid token: unsigned (alg none)"
        case .unsupportedAlgorithm: return "invalid token: unsupported algorithm"
        case .unsupportedCriticalHeader: return "invalid token: unsupported critical header"
        case .unknownKey: return "invalid token: unknown key"
        case .invalidSignature: return "invalid token: bad signature"
        case .expired: return "token expired"
        case .notYetValid: return "invalid token: not yet valid"
        case .wrongAudience: return "invalid token: wrong audience"
        case .wrongIssuer: return "invalid token: wrong issuer"
        case .missingSubject: return "invalid token: no sub claim"
        case .wrongUser: return "invalid token: for another user"
        case .wrongChannel: return "invalid token: for another channel"
        case .anonymousNotAllowed: return "invalid token: anonymous connections are not allowed"
        case .subscriptionToken: return "invalid token: a subscription token cannot connect"
        case .tooManyRefused: return "invalid token: too many refused tokens"
        case .notSubscriptionToken: return "invalid token: not a subscription token"
        }
    }
}
