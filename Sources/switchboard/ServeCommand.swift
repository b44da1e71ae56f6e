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
            Speaks client protocol v1 (docs/PROTOCOL.md) at --path. Namespaces: the default one (channels \
            without ':'; no history, no presence) and `chat` (history of --chat-history-size publications for 5 minutes, \
            presence, join/leave events).
            """)

    @OptionGroup var transport: TransportOptions

    @Option(help: "Path of the WebSocket endpoint.")
    var path = "/ws"

    @Option(help: "Publications each `chat:` channel keeps for history and recovery.")
    var chatHistorySize = 100

    @Option(help: "Publishes per second one connection may sustain.")
    var publishRate = 20.0

    @Option(help: "Publishes one connection may make in a burst.")
    var publishBurst = 40.0

    @Flag(help: "Development only: take the user id from the `user` query parameter, unauthenticated.")
    var insecureUserFromQuery = false

    func run() async throws {
        let trustQuery = insecureUserFromQuery
        var channels = ChannelsConfiguration.chatDefaults
        channels.namespaces["chat"]?.historySize = max(chatHistorySize, 0)
        channels.publishRate = publishRate
        channels.publishBurst = publishBurst
        let application = ChannelsApplication(configuration: channels) { request in
            .accept(userID: trustQuery ? queryParameter("user", in: request.uri) : nil, subprotocol: nil)
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
