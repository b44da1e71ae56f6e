import Foundation
import NIOCore
import SwitchboardServer

/// Where the server API listens and who may call it.
public struct APIConfiguration: Sendable {
    /// Default loopback only: the API can publish and disconnect anyone.
    public var host = "127.0.0.1"
    /// Default 8081; 0 picks a free port.
    public var port = 8081
    /// Required in `Authorization: apikey KEY` or `X-API-Key: KEY` on every `/api/` request when set.
    /// A listener on a non-loopback address refuses to start without one.
    public var apiKey: String?
    /// Bodies larger than this are refused with 413 (error 117). Default 1 MiB.
    public var maxBodySize = 1 << 20
    /// API connections open at once; more wait in the listen backlog. The API can never take the
    /// descriptors the WebSocket listener needs. Default 128.
    public var maxConnections = 128
    /// A request's headers must arrive within this (from the connection's start or the previous
    /// response), and its body within `bodyTimeout` after them; otherwise the connection is closed.
    public var headerTimeout = TimeAmount.seconds(10)
    /// Time for a request's body once its headers are in. Default 30 s.
    public var bodyTimeout = TimeAmount.seconds(30)
    /// Wrong API keys one client address may send in a burst before it is held to one a second (429).
    public var failedKeyBurst = 10
    /// This node's name in `info`. Default: the host name.
    public var nodeName = ProcessInfo.processInfo.hostName

    /// Loopback, port 8081, no key: a listener only this host can reach.
    public init() {}

    /// Whether the listener is reachable from other hosts.
    var isLoopback: Bool { isLoopbackHost(host) }

    /// Throws what `APIServer` refuses to start with: a key under 16 bytes, or a listener other hosts can reach
    /// without a key. Public so a command can check a configuration without starting anything.
    public func validate() throws {
        if let apiKey, apiKey.utf8.count < 16 {
            throw APIConfigurationError(description: "apiKey: must be at least 16 bytes (openssl rand -hex 16)")
        }
        guard apiKey != nil || isLoopback else {
            throw APIConfigurationError(
                description: "apiHost \(host) is reachable from other hosts: set apiKey (at least 16 bytes)")
        }
    }
}

/// An API configuration `APIServer` refuses to start with; `description` names the setting.
public struct APIConfigurationError: Error, CustomStringConvertible {
    /// The problem, prefixed with the setting (`apiKey`, `apiHost`).
    public let description: String
}
