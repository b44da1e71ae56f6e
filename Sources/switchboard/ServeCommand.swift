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
            without ':'; no history, no presence) and `chat` (history of 100 publications for 5 minutes, \
            presence, join/leave events).
            """)

    @OptionGroup var transport: TransportOptions

    @Option(help: "Path of the WebSocket endpoint.")
    var path = "/ws"

    @Flag(help: "Development only: take the user id from the `user` query parameter, unauthenticated.")
    var insecureUserFromQuery = false

    func run() async throws {
        let trustQuery = insecureUserFromQuery
        let application = ChannelsApplication(configuration: .chatDefaults) { request in
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
