import CoreMetrics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer
import Testing

/// A server speaking client protocol v1, with namespaces for each behaviour under test.
struct ChannelsServer {
    let server: WebSocketServer
    let port: Int
    let application: ChannelsApplication

    static func start(
        broker: any Broker = LocalBroker(), presence: any PresenceManager = LocalPresence(),
        verifier: TokenVerifier? = nil, metrics: (any MetricsFactory)? = nil,
        transport: (inout SwitchboardConfiguration) -> Void = { _ in },
        channels configure: (inout ChannelsConfiguration) -> Void = { _ in },
        authenticate: ChannelsApplication.Authenticator? = nil, proxy: ProxyConfiguration? = nil,
        webhooks: WebhookConfiguration? = nil
    ) async throws -> ChannelsServer {
        var channels = ChannelsConfiguration.chatDefaults
        var big = NamespaceOptions()
        big.presence = true
        big.countsOnly = true
        channels.namespaces["big"] = big
        var readOnly = NamespaceOptions()
        readOnly.clientsMayPublish = false
        channels.namespaces["ro"] = readOnly
        var archive = NamespaceOptions()
        archive.historySize = 2000
        channels.namespaces["archive"] = archive
        for (name, policy) in [("prices", SlowConsumerPolicy.latest), ("feed", .dropOldest), ("strict", .disconnect)] {
            var options = NamespaceOptions()
            options.slowConsumer = policy
            channels.namespaces[name] = options
        }
        // Tests publish in bursts; the rate limit has its own test.
        channels.publishRate = 1_000_000
        channels.publishBurst = 1_000_000
        configure(&channels)
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 2
        configuration.shutdownTimeout = .seconds(5)
        transport(&configuration)
        var logger = Logger(label: "channels-test")
        logger.logLevel = .critical
        // With a verifier, the built-in token checks; without, the user from `?user=`.
        let fromQuery: ChannelsApplication.Authenticator = { request in
            let user = request.uri.split(separator: "=", maxSplits: 1).dropFirst().first.map(String.init)
            // Presence data as an authenticator would take it from a token; "raw" gets info that is not JSON.
            let info = user == "raw" ? "not json" : user.map { "{\"name\":\"\($0.uppercased())\"}" }
            return .accept(userID: user, subprotocol: nil, info: info)
        }
        let application = ChannelsApplication(
            configuration: channels, broker: broker, presence: presence, verifier: verifier,
            metricsFactory: metrics ?? NOOPMetricsHandler.instance, logger: logger,
            authenticate: authenticate ?? (verifier == nil ? fromQuery : nil), proxy: proxy, webhooks: webhooks)
        let server = WebSocketServer(
            configuration: configuration, application: application,
            metrics: SwitchboardMetrics(factory: metrics ?? NOOPMetricsHandler.instance), logger: logger)
        let address = try await server.start()
        return ChannelsServer(server: server, port: address.port ?? 0, application: application)
    }

    func connect(user: String? = nil, headers: [(String, String)] = []) async throws -> ProtocolClient {
        var options = ClientOptions(path: user.map { "/ws?user=\($0)" } ?? "/ws")
        options.headers = headers
        let client = try await WebSocketClient.connect(
            host: "127.0.0.1", port: port, options: options, group: MultiThreadedEventLoopGroup.singleton)
        return ProtocolClient(client: client)
    }

    func stop() async { await server.shutdown() }
}

/// A JSON message from the server, parsed.
// @unchecked Sendable: the dictionary is built once from JSON and only read.
struct JSONMessage: @unchecked Sendable {
    let object: [String: Any]
    subscript(key: String) -> Any? { object[key] }
    var id: Int? { object["id"] as? Int }
    var push: String? { object["push"] as? String }
    var ok: [String: Any]? { object["ok"] as? [String: Any] }
    var errorCode: Int? { (object["error"] as? [String: Any])?["code"] as? Int }
    var offset: Int? { object["offset"] as? Int }
}

/// Speaks protocol v1 through the test client: numbered commands, replies matched by id.
final class ProtocolClient: Sendable {
    let client: WebSocketClient
    private let nextID = NIOLockedBoxInt()

    init(client: WebSocketClient) { self.client = client }

    /// Sends a command and returns its id.
    @discardableResult
    func send(_ command: [String: Any]) -> Int {
        let id = nextID.increment()
        var command = command
        command["id"] = id
        let data = (try? JSONSerialization.data(withJSONObject: command, options: [.sortedKeys])) ?? Data()
        client.send(text: String(decoding: data, as: UTF8.self))
        return id
    }

    func next(timeout: TimeAmount = .seconds(10)) async throws -> JSONMessage {
        guard case .text(let text) = try await client.nextMessage(timeout: timeout) else {
            throw ConditionFailure("expected a text message")
        }
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw ConditionFailure("not a JSON object: \(text)")
        }
        return JSONMessage(object: object)
    }

    /// Sends a command and waits for its reply, collecting the pushes that arrive before it.
    func call(_ command: [String: Any]) async throws -> (reply: JSONMessage, pushes: [JSONMessage]) {
        let id = send(command)
        var pushes: [JSONMessage] = []
        while true {
            let message = try await next()
            if message.id == id { return (message, pushes) }
            pushes.append(message)
        }
    }

    /// Waits for a join or leave push about `user`, skipping others (including one's own join).
    func nextMembership(_ kind: String, user: String) async throws -> JSONMessage {
        while true {
            let message = try await nextPush(kind)
            if (message["info"] as? [String: Any])?["user"] as? String == user { return message }
        }
    }

    /// Waits for the next push of a kind, skipping others.
    func nextPush(_ kind: String) async throws -> JSONMessage {
        while true {
            let message = try await next()
            if message.push == kind { return message }
        }
    }
}

/// A counter for command ids.
final class NIOLockedBoxInt: Sendable {
    private let value = NIOLockedValueBox(0)
    func increment() -> Int {
        value.withLockedValue {
            $0 += 1; return $0
        }
    }
}

struct ConditionFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
