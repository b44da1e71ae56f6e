import Foundation

/// What a verified token says. Times are seconds since the Unix epoch, as in the token.
public struct TokenClaims: Sendable, Equatable {
    /// The user id; "" is anonymous.
    public var subject: String
    /// The `exp` claim; nil when the token does not expire.
    public var expiresAt: Double?
    /// The `info` claim as JSON text: the connection's presence data.
    public var info: String?
    /// Channels to subscribe the connection to at connect (`channels` claim).
    public var channels: [String]
    /// The channel a subscription token is for (`channel` claim).
    public var channel: String?

    /// Claims as a verified token would carry them; for an authenticator or a test that makes its own.
    public init(
        subject: String, expiresAt: Double? = nil, info: String? = nil, channels: [String] = [], channel: String? = nil
    ) {
        self.subject = subject
        self.expiresAt = expiresAt
        self.info = info
        self.channels = channels
        self.channel = channel
    }

    /// Checks and reads a token's payload (`sub`, `exp`, `nbf`, `iat`, `aud`, `iss`, `info`, `channels`,
    /// `channel`) at `now`, with `leeway` seconds of clock skew either way.
    static func read(
        _ payload: [String: Any], now: Double, leeway: Double, audience: String?, issuer: String?
    ) -> Result<TokenClaims, TokenFailure> {
        func number(_ key: String) -> Double?? {
            guard let value = payload[key] else { return .some(nil) }
            guard let number = value as? NSNumber, !(value is Bool) else { return nil }
            return .some(number.doubleValue)
        }
        guard let exp = number("exp"), let nbf = number("nbf"), let iat = number("iat") else {
            return .failure(.malformed)
        }
        if let exp, exp <= now - leeway { return .failure(.expired) }
        if let nbf, nbf > now + leeway { return .failure(.notYetValid) }
        if let iat, iat > now + leeway { return .failure(.notYetValid) }
        if let audience {
            let claimed = (payload["aud"] as? String).map { [$0] } ?? (payload["aud"] as? [String]) ?? []
            guard claimed.contains(audience) else { return .failure(.wrongAudience) }
        }
        if let issuer, payload["iss"] as? String != issuer { return .failure(.wrongIssuer) }
        guard let sub = payload["sub"], !(sub is NSNull) else { return .failure(.missingSubject) }
        guard let subject = sub as? String else { return .failure(.malformed) }
        var claims = TokenClaims(subject: subject, expiresAt: exp)
        if let info = payload["info"], !(info is NSNull) {
            guard let data = try? JSONSerialization.data(withJSONObject: info, options: [.fragmentsAllowed]) else {
                return .failure(.malformed)
            }
            claims.info = String(decoding: data, as: UTF8.self)
        }
        if let channels = payload["channels"] {
            guard let list = channels as? [String] else { return .failure(.malformed) }
            claims.channels = list
        }
        if let channel = payload["channel"] {
            guard let name = channel as? String else { return .failure(.malformed) }
            claims.channel = name
        }
        return .success(claims)
    }
}
