import Crypto
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardChannelClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer
import SwitchboardTestSupport

/// An in-process `switchboard serve` on loopback: the same `ChannelsApplication` and `WebSocketServer`,
/// with fast heartbeats and a short shutdown hint so tests do not wait for defaults. Copied in part from
/// Tests/SwitchboardServerTests/ChannelsTestSupport.swift (test targets cannot import each other).
struct TestServer {
    let server: WebSocketServer
    let application: ChannelsApplication
    let port: Int

    /// Namespaces: `chat` (history 100, presence, join/leave), `tiny` (history 3), the default (none).
    /// `proxy`: the application's backend (an `RPCBackend` for `rpc`), none by default.
    static func start(
        port: Int = 0, verifier: TokenVerifier? = nil, authenticate: ChannelsApplication.Authenticator? = nil,
        proxy: ProxyConfiguration? = nil
    ) async throws -> TestServer {
        var channels = ChannelsConfiguration.chatDefaults
        var tiny = NamespaceOptions()
        tiny.historySize = 3
        channels.namespaces["tiny"] = tiny
        channels.publishRate = 1_000_000
        channels.publishBurst = 1_000_000
        var configuration = SwitchboardConfiguration()
        configuration.port = port
        configuration.threads = 1
        configuration.pingInterval = .seconds(1)
        configuration.pongTimeout = .seconds(5)
        configuration.shutdownTimeout = .seconds(2)
        configuration.reconnectJitterWindow = .milliseconds(100)
        var logger = Logger(label: "channel-client-test")
        logger.logLevel = .critical
        let application = ChannelsApplication(
            configuration: channels, verifier: verifier, logger: logger, authenticate: authenticate, proxy: proxy)
        let server = WebSocketServer(configuration: configuration, application: application, logger: logger)
        let address = try await server.start()
        return TestServer(server: server, application: application, port: address.port ?? port)
    }

    /// Binds `port` again after a server on it stopped; a bind that fails for a moment is retried.
    static func restart(on port: Int) async throws -> TestServer {
        var failure: (any Error)?
        for _ in 0..<50 {
            do {
                return try await start(port: port)
            } catch {
                failure = error
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        throw failure ?? BindFailure(port: port)
    }

    /// Publishes from the server side (no client involved) and returns the offset.
    @discardableResult
    func publish(_ channel: String, _ data: String) async throws -> Int {
        try await application.publish(channel: channel, data: data, on: MultiThreadedEventLoopGroup.singleton.next())
            .get().offset
    }

    /// A fault proxy in front of this server; when it cannot start, the server is stopped before the throw.
    func proxy() async throws -> FaultProxy {
        do {
            return try await FaultProxy.start(to: port)
        } catch {
            await stop()
            throw error
        }
    }

    func stop() async { await server.shutdown() }
}

struct BindFailure: Error {
    let port: Int
}

/// HS256 connection tokens, signed by hand (the server's verifier checks them as any other).
enum TestTokens {
    static let secret = "a-test-secret-of-at-least-32-bytes-for-hs256"
    static let otherSecret = "another-secret-the-server-does-not-know-000"

    static func make(user: String, expiresIn seconds: Double, secret: String = secret) -> String {
        let expiry = Int(Date().timeIntervalSince1970 + seconds)
        let header = base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let payload = base64URL(Data(#"{"sub":"\#(user)","exp":\#(expiry)}"#.utf8))
        let mac = HMAC<SHA256>.authenticationCode(
            for: Data("\(header).\(payload)".utf8), using: SymmetricKey(data: Data(secret.utf8)))
        return "\(header).\(payload).\(base64URL(Data(mac)))"
    }

    /// The server side: the test secret, no leeway, anonymous connections refused.
    static func verifier(refreshNotice: TimeAmount = .seconds(30)) async throws -> TokenVerifier {
        var auth = AuthConfiguration()
        auth.keys = [.hmac(secret: secret)]
        auth.rules.leeway = 0
        auth.allowAnonymous = false
        auth.refreshNotice = refreshNotice
        return try await TokenVerifier.make(auth)
    }

    private static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// A client for tests: loopback, quick backoff, a 3 s watchdog (the test server pings every second).
func makeClient(
    port: Int, _ configure: (inout ChannelClient.Configuration) -> Void = { _ in }
) -> ChannelClient {
    var configuration = ChannelClient.Configuration(host: "127.0.0.1", port: port)
    configuration.minReconnectDelay = .milliseconds(20)
    configuration.maxReconnectDelay = .milliseconds(500)
    configuration.watchdogTimeout = .seconds(3)
    configuration.connectTimeout = .seconds(2)
    configure(&configuration)
    return ChannelClient(configuration)
}

/// Collects what a stream yields, from a task of its own, for tests to wait on.
final class Recorder<Element: Sendable>: Sendable {
    // Lock: what arrived so far and whether the stream finished, written by the reading task.
    private let state: NIOLockedValueBox<(items: [Element], finished: Bool)>

    init(_ stream: AsyncStream<Element>) {
        let state = NIOLockedValueBox<(items: [Element], finished: Bool)>(([], false))
        self.state = state
        Task {
            for await item in stream { state.withLockedValue { $0.items.append(item) } }
            state.withLockedValue { $0.finished = true }
        }
    }

    var items: [Element] { state.withLockedValue { $0.items } }
    var finished: Bool { state.withLockedValue { $0.finished } }

    /// Waits until `condition` holds for what has arrived.
    func wait(
        _ what: String, timeout: Duration = .seconds(20), until condition: ([Element]) -> Bool
    ) async throws {
        try await eventually(timeout: timeout, what) { condition(self.items) }
    }
}

extension Array where Element == SubscriptionEvent {
    var publications: [SwitchboardChannelClient.Publication] {
        var publications: [SwitchboardChannelClient.Publication] = []
        for case .publication(let publication) in self { publications.append(publication) }
        return publications
    }

    var offsets: [Int] { publications.map(\.offset) }

    /// `recovered` of each `.subscribed`, in order (nil: a fresh subscription).
    var subscriptions: [Bool?] {
        var recovered: [Bool?] = []
        for case .subscribed(_, _, let value) in self { recovered.append(value) }
        return recovered
    }
}

extension ConnectionState {
    var isConnected: Bool {
        if case .connected = self { return true }
        return false
    }

    var isConnecting: Bool {
        if case .connecting = self { return true }
        return false
    }

    var isDisconnected: Bool {
        if case .disconnected = self { return true }
        return false
    }
}
