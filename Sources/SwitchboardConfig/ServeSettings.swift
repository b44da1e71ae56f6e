import Foundation
import NIOCore
import SwitchboardCluster
import SwitchboardCore
import SwitchboardRedis
import SwitchboardServer

/// Everything `switchboard serve` runs with, read from the layers (flags over environment over file over
/// defaults) and validated. Values that name files (keys, certificates) stay paths here; the files are
/// read when the server starts or reloads.
public struct ServeSettings: Sendable {
    /// The WebSocket server's settings (host, port, limits, timeouts, deflate, abuse limits).
    public var transport = SwitchboardConfiguration()
    /// `logLevel`: trace, debug, info, notice, warning, error or critical. Default info.
    public var logLevel = "info"
    /// `tlsCertificate`: path of the PEM certificate chain; set together with `tlsKey` for wss://.
    public var tlsCertificate: String?
    /// `tlsKey`: path of the PEM private key; set together with `tlsCertificate`.
    public var tlsKey: String?
    /// `tokenSecret`: HMAC secrets themselves (not paths), at least 32 bytes each.
    public var tokenSecrets: [String] = []
    /// `tokenPublicKey`: paths of PEM files with RSA or EC public keys.
    public var tokenPublicKeys: [String] = []
    /// `jwksFile`: path of a JSON Web Key Set file.
    public var jwksFile: String?
    /// `jwksUrl`: where to fetch a JSON Web Key Set (https://, or http:// on loopback).
    public var jwksURL: String?
    /// `tokenAudience`: the `aud` every token must carry; nil: not checked.
    public var tokenAudience: String?
    /// `tokenIssuer`: the `iss` every token must carry; nil: not checked.
    public var tokenIssuer: String?
    /// `tokenLeeway`: seconds of clock skew allowed on `exp`, `nbf` and `iat`. Default 5.
    public var tokenLeeway = 5.0
    /// `allowAnonymous`; nil: anonymous connections only when no token key is configured.
    public var allowAnonymous: Bool?
    /// `connectTimeout`: seconds a connection without a token has to send `connect`. Default 5.
    public var connectTimeout = 5.0
    /// `refreshNotice`: seconds before a token's expiry that the server asks for a refresh. Default 30.
    public var refreshNotice = 30.0
    /// `insecureUserFromQuery`: trust `?user=` and `?info=` without a token (the demo). The loader turns it
    /// on by default only on loopback without token keys or trusted proxies.
    public var insecureUserFromQuery = false
    /// `apiHost`: address of the server API, /metrics, /health and /ready. Default loopback.
    public var apiHost = "127.0.0.1"
    /// `apiPort`: port of the server API listener (0 picks a free one). Default 8081.
    public var apiPort = 8081
    /// `apiKey`: the key the server API requires; needed when `apiHost` is not loopback.
    public var apiKey: String?
    /// `noApi`: do not start the server API listener.
    public var noAPI = false
    /// `web`: serve the chat demo at / and the dashboard at /dashboard on the WebSocket port. Default true.
    public var web = true
    /// `statsInterval`: seconds between statistics on `sys:stats`; 0 publishes none. Default 1.
    public var statsInterval = 1.0
    /// `apiKeyFailureBurst`: wrong API keys one address may send in a burst before being slowed. Default 10.
    public var apiKeyFailureBurst = 10
    /// What all channels' history may take on this node (the in-process broker).
    public var historyMaxBytes = 64 << 20
    /// Namespaces and per-connection channel limits: the file's `namespaces` (with `sys` added), or the
    /// chat defaults when the file has none.
    public var channels = ChannelsConfiguration.chatDefaults
    /// The application's backend, asked about the events whose URLs are set; nil: none is.
    public var proxy: ProxyConfiguration?
    /// Where lifecycle events are POSTed; nil: nowhere.
    public var webhooks: WebhookConfiguration?
    /// Set: this node joins a cluster through these Redis instances.
    public var cluster: ClusterConfiguration?
    /// `nodeName`: what node info calls this node. Default: the host name.
    public var nodeName = ProcessInfo.processInfo.hostName

    /// The built-in defaults, unvalidated; `SettingsLoader.load` is the usual way to get settings.
    public init() {}

    /// Whether any token key source is set: a secret, a public key, a JWKS file or a JWKS URL.
    public var hasTokenKeys: Bool {
        !tokenSecrets.isEmpty || !tokenPublicKeys.isEmpty || jwksFile != nil || jwksURL != nil
    }

    /// The token verifier's configuration, with the key files read now (a reload reads them again).
    public func authConfiguration() throws -> AuthConfiguration {
        var auth = AuthConfiguration()
        auth.keys = tokenSecrets.map { .hmac(secret: $0) }
        for path in tokenPublicKeys { auth.keys.append(.publicKey(pem: try Self.read(path, "tokenPublicKey"))) }
        if let jwksFile { auth.keys.append(.jwks(json: try Self.read(jwksFile, "jwksFile"))) }
        auth.jwksURL = jwksURL
        auth.rules.audience = tokenAudience
        auth.rules.issuer = tokenIssuer
        auth.rules.leeway = tokenLeeway
        auth.allowAnonymous = allowAnonymous
        auth.connectTimeout = .nanoseconds(Int64(connectTimeout * 1e9))
        auth.refreshNotice = .nanoseconds(Int64(refreshNotice * 1e9))
        return auth
    }

    private static func read(_ path: String, _ key: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SettingsError("\(key): cannot read \(path)")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A setting that cannot be used, named by where it came from.
public struct SettingsError: Error, CustomStringConvertible, Equatable {
    /// The problem, starting with the setting's name.
    public let description: String
    /// A settings error whose text is `description`.
    public init(_ description: String) { self.description = description }
}
