import ArgumentParser
import Foundation
import SwitchboardCore
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
            JSON file (docs/CONFIGURATION.md); the options below override the file.
            """)

    @OptionGroup var transport: TransportOptions

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
        let trustQuery = insecureUserFromQuery
        let channels = try channelsConfiguration()
        let application = ChannelsApplication(configuration: channels) { request in
            guard trustQuery else { return .accept(userID: nil, subprotocol: nil) }
            return .accept(
                userID: queryParameter("user", in: request.uri), subprotocol: nil,
                info: queryParameter("info", in: request.uri).map(ServerMessage.quote))
        }
        try await runServer(transport, path: path, application: application)
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
        subcommands: [ServeCommand.self, EchoCommand.self])
}
