import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import SwitchboardCore
import SwitchboardHTTPAPI
import SwitchboardNIO
import SwitchboardServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the Switchboard hub (single node, in-process; nothing else to start).",
        discussion: """
            Speaks client protocol v1 (docs/PROTOCOL.md) at --path. Without --config there are two namespaces: the \
            default one (channels without ':'; no history, no presence) and `chat` (history of 100 publications for \
            5 minutes, presence, join/leave events). --config FILE replaces them with the namespaces and limits in a \
            JSON file (docs/CONFIGURATION.md); the options below override the file. With a token key \
            (--token-secret, --token-public-key, --jwks-file, --jwks-url) clients authenticate with JSON Web Tokens. \
            The server API, /metrics, /health and /ready listen on --api-host:--api-port (docs/API.md).
            """)

    @OptionGroup var transport: TransportOptions
    @OptionGroup var auth: AuthOptions
    @OptionGroup var api: APIOptions

    @Option(help: "Path of the WebSocket endpoint.")
    var path = "/ws"

    @Option(help: "JSON file with namespaces and per-connection limits (docs/CONFIGURATION.md).")
    var config: String?

    @Option(help: "Publications each `chat:` channel keeps for history and recovery (default 100).")
    var chatHistorySize: Int?

    @Option(help: "Publishes per second one connection may sustain (default 20).")
    var publishRate: Double?

    @Option(help: "Publishes one connection may make in a burst (default 40).")
    var publishBurst: Double?

    @Flag(
        help:
            "Development only: take the user id from the `user` query parameter and the connection's presence data from `info` (as a JSON string), unauthenticated."
    )
    var insecureUserFromQuery = false

    func validate() throws {
        if let chatHistorySize, chatHistorySize < 0 { throw ValidationError("--chat-history-size must be ≥ 0") }
        if let publishRate, !(publishRate > 0) { throw ValidationError("--publish-rate must be > 0") }
        if let publishBurst, !(publishBurst >= 1) { throw ValidationError("--publish-burst must be ≥ 1") }
        if insecureUserFromQuery, auth.hasKeys {
            throw ValidationError(
                "--insecure-user-from-query would let anyone bypass the token keys: use one or the other")
        }
        if auth.allowAnonymous == false, !auth.hasKeys, !insecureUserFromQuery {
            throw ValidationError(
                "--allow-anonymous false needs a token key (--token-secret, --token-public-key, --jwks-…)")
        }
    }

    private func channelsConfiguration() throws -> ChannelsConfiguration {
        var channels = ChannelsConfiguration.chatDefaults
        if let config {
            guard let data = FileManager.default.contents(atPath: config) else {
                throw ValidationError("cannot read --config \(config)")
            }
            do {
                channels = try ChannelsConfiguration(json: data)
            } catch let error as ConfigurationError {
                throw ValidationError("\(config): \(error)")
            }
        }
        if let chatHistorySize {
            guard channels.namespaces["chat"] != nil else {
                throw ValidationError("--chat-history-size: the configuration has no `chat` namespace")
            }
            channels.namespaces["chat"]?.historySize = chatHistorySize
        }
        if let publishRate { channels.publishRate = publishRate }
        if let publishBurst { channels.publishBurst = publishBurst }
        return channels
    }

    func run() async throws {
        let registry = bootstrap(transport)
        let channels = try channelsConfiguration()
        let authConfiguration = try auth.configuration()
        if !auth.hasKeys,
            let namespace = channels.namespaces.first(where: { $0.value.permissions.subscribe == .token })?.key
        {
            throw ValidationError(
                "namespace \"\(namespace)\" requires subscription tokens, but no token key is configured")
        }
        let verifier: TokenVerifier?
        do {
            verifier =
                authConfiguration.keys.isEmpty && authConfiguration.jwksURL == nil
                ? nil : try await TokenVerifier.make(authConfiguration)
        } catch {
            throw ValidationError("token keys: \(error)")
        }
        // Development only: the user named in the query string, unauthenticated.
        let fromQuery: ChannelsApplication.Authenticator = { request in
            .accept(
                userID: queryParameter("user", in: request.uri), subprotocol: nil,
                info: queryParameter("info", in: request.uri).map(ServerMessage.quote))
        }
        let application = ChannelsApplication(
            configuration: channels, verifier: verifier, authenticate: insecureUserFromQuery ? fromQuery : nil)
        var apiConfiguration = APIConfiguration()
        apiConfiguration.host = api.apiHost
        apiConfiguration.port = api.apiPort
        apiConfiguration.apiKey = api.key
        let noAPI = api.noAPI
        try await runServer(transport, path: path, application: application) { ready in
            guard !noAPI else { return [] }
            let server = try APIServer(
                configuration: apiConfiguration, application: application, ready: ready, registry: registry,
                logger: Logger(label: "switchboard.api"))
            return [AnnouncingAPI(server: server)]
        }
    }
}

private func queryParameter(_ name: String, in uri: String) -> String? {
    guard let query = uri.split(separator: "?", maxSplits: 1).dropFirst().first else { return nil }
    for pair in query.split(separator: "&") {
        let parts = pair.split(separator: "=", maxSplits: 1)
        if parts.count == 2, parts[0] == name { return String(parts[1]).removingPercentEncoding }
    }
    return nil
}

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A high-concurrency WebSocket hub on SwiftNIO.",
        subcommands: [ServeCommand.self, EchoCommand.self, TokenCommand.self])
}

/// Runs the server API and prints where it listens (scripts wait for the line).
private struct AnnouncingAPI: Service {
    let server: APIServer

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.run() }
            if let address = await server.boundAddress() {
                print("switchboard API on http://\(address.ipAddress ?? "127.0.0.1"):\(address.port ?? 0)")
                fflush(nil)
            }
            try await group.waitForAll()
        }
    }
}
