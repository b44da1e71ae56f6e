import Foundation
import JWTKit

/// A key the server verifies tokens with, as configured.
public enum TokenKey: Sendable {
    /// An HMAC secret (HS256; HS384 and HS512 too when it is long enough for them). At least 32 bytes.
    case hmac(secret: String, kid: String? = nil)
    /// An RSA (RS256/384/512) or EC (ES256/384/512, by curve) public key in PEM.
    case publicKey(pem: String, kid: String? = nil)
    /// A JSON Web Key Set (RFC 7517). Keys it cannot use are skipped, one by one: other types (`oct`,
    /// `OKP`), other uses (`use` other than `sig`), unknown curves or algorithms. A set with no usable key
    /// is an error. Keys without `kid` serve tokens without one.
    case jwks(json: String)
}

/// A configured key that cannot be used; `description` says why, for the operator.
public struct TokenKeyError: Error, CustomStringConvertible {
    /// The problem, e.g. "the JSON Web Key Set has no usable key".
    public let description: String
}

/// The keys tokens are checked against, ready to use synchronously on any thread: jwt-kit's algorithms,
/// taken out of its key collection (an actor) once, when the ring is made, so that verifying a token
/// costs no hop and no allocation beyond the decoding.
public struct TokenKeyRing: Sendable {
    private(set) var byKID: [String: [any JWTAlgorithm]] = [:]
    private(set) var unnamed: [any JWTAlgorithm] = []

    /// An empty ring, which verifies no token; build a real one with `make(_:)`.
    public init() {}

    /// True when the ring holds no key at all.
    public var isEmpty: Bool { byKID.isEmpty && unnamed.isEmpty }

    /// Makes a ring of `keys`; throws with the first unusable key's problem.
    public static func make(_ keys: [TokenKey]) async throws -> TokenKeyRing {
        var ring = TokenKeyRing()
        for key in keys {
            switch key {
            case .hmac(let secret, let kid):
                ring.add(try await hmac(secret), kid: kid)
            case .publicKey(let pem, let kid):
                ring.add(try await publicKey(pem), kid: kid)
            case .jwks(let json):
                guard let set = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any],
                    let keys = set["keys"] as? [Any]
                else { throw TokenKeyError(description: "not a JSON Web Key Set (an object with \"keys\")") }
                var usable = 0
                for case var entry as [String: Any] in keys {
                    let kid = entry["kid"] as? String
                    // jwt-kit files a JWK by its kid; one without gets a placeholder, then serves kid-less tokens.
                    if kid == nil { entry["kid"] = "switchboard-unnamed" }
                    guard (entry["use"] as? String ?? "sig") == "sig",
                        let data = try? JSONSerialization.data(withJSONObject: entry),
                        let jwk = try? JSONDecoder().decode(JWK.self, from: data),
                        let algorithm = try? await algorithm(of: jwk)
                    else { continue }
                    ring.add([algorithm], kid: kid)
                    usable += 1
                }
                guard usable > 0 else { throw TokenKeyError(description: "the JSON Web Key Set has no usable key") }
            }
        }
        return ring
    }

    /// This ring with the keys of `other` added (static keys plus a fetched JWKS).
    func merged(with other: TokenKeyRing) -> TokenKeyRing {
        var ring = self
        for (kid, keys) in other.byKID { ring.byKID[kid, default: []] += keys }
        ring.unnamed += other.unnamed
        return ring
    }

    private mutating func add(_ algorithms: [any JWTAlgorithm], kid: String?) {
        if let kid { byKID[kid, default: []] += algorithms } else { unnamed += algorithms }
    }

    private static func hmac(_ secret: String) async throws -> [any JWTAlgorithm] {
        let length = secret.utf8.count
        // jwt-kit asserts a key at least as long as the digest; shorter secrets are guessable anyway.
        guard length >= 32 else { throw TokenKeyError(description: "an HMAC secret must be at least 32 bytes") }
        let key = HMACKey(from: secret)
        var algorithms: [any JWTAlgorithm] = []
        for (digest, minimum) in [(DigestAlgorithm.sha256, 32), (.sha384, 48), (.sha512, 64)] where length >= minimum {
            algorithms.append(try await JWTKeyCollection().add(hmac: key, digestAlgorithm: digest).getKey())
        }
        return algorithms
    }

    private static func publicKey(_ pem: String) async throws -> [any JWTAlgorithm] {
        if let rsa = try? Insecure.RSA.PublicKey(pem: pem) {
            var algorithms: [any JWTAlgorithm] = []
            for digest in [DigestAlgorithm.sha256, .sha384, .sha512] {
                algorithms.append(try await JWTKeyCollection().add(rsa: rsa, digestAlgorithm: digest).getKey())
            }
            return algorithms
        }
        if let key = try? ES256PublicKey(pem: pem) { return [try await JWTKeyCollection().add(ecdsa: key).getKey()] }
        if let key = try? ES384PublicKey(pem: pem) { return [try await JWTKeyCollection().add(ecdsa: key).getKey()] }
        if let key = try? ES512PublicKey(pem: pem) { return [try await JWTKeyCollection().add(ecdsa: key).getKey()] }
        throw TokenKeyError(description: "not an RSA or EC (P-256, P-384, P-521) public key in PEM")
    }

    private static func algorithm(of jwk: JWK) async throws -> any JWTAlgorithm {
        var name = jwk.algorithm?.rawValue
        if name == nil {
            switch jwk.keyType.rawValue {
            case "RSA": name = "RS256"
            case "EC":
                switch jwk.curve?.rawValue {
                case "P-256": name = "ES256"
                case "P-384": name = "ES384"
                case "P-521": name = "ES512"
                default: break
                }
            default: break
            }
        }
        let collection = JWTKeyCollection()
        try await collection.add(jwk: jwk, isDefault: true)
        return try await collection.getKey(for: jwk.keyIdentifier, alg: name)
    }

    /// Checks `token`'s signature and claims, at `now` (Unix seconds).
    func verify(_ token: String, now: Double, rules: TokenRules) -> Result<TokenClaims, TokenFailure> {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = Base64URL.decode(parts[0]),
            let header = (try? JSONSerialization.jsonObject(with: headerData)) as? [String: Any],
            let algorithm = header["alg"] as? String
        else { return .failure(.malformed) }
        guard algorithm.lowercased() != "none" else { return .failure(.unsigned) }
        guard TokenRules.algorithms.contains(algorithm) else { return .failure(.unsupportedAlgorithm) }
        guard header["crit"] == nil else { return .failure(.unsupportedCriticalHeader) }
        guard let signature = Base64URL.decode(parts[2]), !signature.isEmpty else { return .failure(.malformed) }
        let candidates: [any JWTAlgorithm]
        if let kid = header["kid"] as? String {
            guard let keys = byKID[kid] else { return .failure(.unknownKey) }
            candidates = keys
        } else {
            // No kid: try every key (rotation without key ids: the old and the new secret both work).
            candidates = unnamed + byKID.values.joined()
        }
        let matching = candidates.filter { $0.name == algorithm }
        guard !matching.isEmpty else { return .failure(.unknownKey) }
        let signed = Array(token.utf8.prefix(parts[0].utf8.count + 1 + parts[1].utf8.count))
        guard matching.contains(where: { (try? $0.verify(signature, signs: signed)) == true }) else {
            return .failure(.invalidSignature)
        }
        guard let payloadData = Base64URL.decode(parts[1]),
            let payload = (try? JSONSerialization.jsonObject(with: payloadData)) as? [String: Any]
        else { return .failure(.malformed) }
        return TokenClaims.read(
            payload, now: now, leeway: rules.leeway, audience: rules.audience, issuer: rules.issuer)
    }
}

/// The claim checks every token goes through.
public struct TokenRules: Sendable {
    /// Seconds of clock skew allowed on `exp`, `nbf` and `iat`. Default 5.
    public var leeway = 5.0
    /// Required in `aud` when set.
    public var audience: String?
    /// Required as `iss` when set.
    public var issuer: String?

    static let algorithms: Set<String> = [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512",
    ]

    /// Five seconds of leeway, no audience or issuer required.
    public init() {}
}

enum Base64URL {
    static func decode(_ text: some StringProtocol) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        guard !base64.contains("=") else { return nil }
        base64 += String(repeating: "=", count: (4 - base64.count % 4) % 4)
        return Data(base64Encoded: base64)
    }
}
