import ArgumentParser
import Foundation
import NIOCore
import SwitchboardServer

/// Token authentication for `serve` (docs/CONFIGURATION.md, "Authentication").
struct AuthOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "HMAC secret for HS256/384/512 tokens, at least 32 bytes; repeat to accept several (rotation).",
            discussion: "Also read from SWITCHBOARD_TOKEN_SECRET. Prefer the environment: arguments show in ps."))
    var tokenSecret: [String] = []

    @Option(help: "PEM file with an RSA or EC public key for RS*/ES* tokens; repeat for several.")
    var tokenPublicKey: [String] = []

    @Option(help: "JSON Web Key Set file.")
    var jwksFile: String?

    @Option(help: "JSON Web Key Set URL, fetched at start and again for an unknown key id (at most every 30 s).")
    var jwksURL: String?

    @Option(help: "Required `aud` claim.")
    var tokenAudience: String?

    @Option(help: "Required `iss` claim.")
    var tokenIssuer: String?

    @Option(help: "Seconds of clock skew allowed on exp, nbf and iat (default 5).")
    var tokenLeeway: Double?

    @Option(
        help:
            "Accept connections without a token (anonymous): true or false. Default: true only when no key is configured."
    )
    var allowAnonymous: Bool?

    @Option(help: "Seconds a connection without a token in its upgrade has to send `connect` (default 5).")
    var connectTimeout: Double?

    @Option(help: "Seconds before a token expires that the server asks for a refresh (default 30).")
    var refreshNotice: Double?

    func validate() throws {
        for value in [tokenLeeway, connectTimeout, refreshNotice].compactMap({ $0 }) where !(value >= 0) {
            throw ValidationError("durations must be ≥ 0")
        }
    }

    /// Whether any token key is configured.
    var hasKeys: Bool {
        !Self.secrets(tokenSecret).isEmpty || !tokenPublicKey.isEmpty || jwksFile != nil || jwksURL != nil
    }

    /// The secrets from the command line and the environment.
    static func secrets(_ given: [String]) -> [String] {
        given + (ProcessInfo.processInfo.environment["SWITCHBOARD_TOKEN_SECRET"].map { [$0] } ?? [])
    }

    func configuration() throws -> AuthConfiguration {
        var auth = AuthConfiguration()
        auth.keys = Self.secrets(tokenSecret).map { .hmac(secret: $0) }
        for path in tokenPublicKey {
            auth.keys.append(.publicKey(pem: try read(path, "--token-public-key")))
        }
        if let jwksFile { auth.keys.append(.jwks(json: try read(jwksFile, "--jwks-file"))) }
        auth.jwksURL = jwksURL
        auth.rules.audience = tokenAudience
        auth.rules.issuer = tokenIssuer
        if let tokenLeeway { auth.rules.leeway = tokenLeeway }
        auth.allowAnonymous = allowAnonymous
        if let connectTimeout { auth.connectTimeout = .nanoseconds(Int64(connectTimeout * 1e9)) }
        if let refreshNotice { auth.refreshNotice = .nanoseconds(Int64(refreshNotice * 1e9)) }
        return auth
    }

    private func read(_ path: String, _ option: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("\(option): cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// The HTTP server API's listener for `serve` (docs/API.md).
struct APIOptions: ParsableArguments {
    @Option(help: "Address of the server API, /metrics, /health and /ready (default 127.0.0.1: this host only).")
    var apiHost = "127.0.0.1"

    @Option(help: "Port of the server API (0 picks a free one).")
    var apiPort = 8081

    @Option(
        help: ArgumentHelp(
            "Key the server API requires (Authorization: apikey KEY, or X-API-Key).",
            discussion: "Also read from SWITCHBOARD_API_KEY. Required when --api-host is not loopback."))
    var apiKey: String?

    @Flag(help: "Do not start the server API listener.")
    var noAPI = false

    var key: String? { apiKey ?? ProcessInfo.processInfo.environment["SWITCHBOARD_API_KEY"] }
}
