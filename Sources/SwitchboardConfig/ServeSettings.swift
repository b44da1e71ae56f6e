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
    public var transport = SwitchboardConfiguration()
    public var logLevel = "info"
    public var tlsCertificate: String?
    public var tlsKey: String?
    public var tokenSecrets: [String] = []
    public var tokenPublicKeys: [String] = []
    public var jwksFile: String?
    public var jwksURL: String?
    public var tokenAudience: String?
    public var tokenIssuer: String?
    public var tokenLeeway = 5.0
    public var allowAnonymous: Bool?
    public var connectTimeout = 5.0
    public var refreshNotice = 30.0
    public var insecureUserFromQuery = false
    public var apiHost = "127.0.0.1"
    public var apiPort = 8081
    public var apiKey: String?
    public var noAPI = false
    public var web = true
    public var statsInterval = 1.0
    public var apiKeyFailureBurst = 10
    /// What all channels' history may take on this node (the in-process broker).
    public var historyMaxBytes = 64 << 20
    public var channels = ChannelsConfiguration.chatDefaults
    /// Set: this node joins a cluster through these Redis instances.
    public var cluster: ClusterConfiguration?
    public var nodeName = ProcessInfo.processInfo.hostName

    public init() {}

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
    public let description: String
    public init(_ description: String) { self.description = description }
}
