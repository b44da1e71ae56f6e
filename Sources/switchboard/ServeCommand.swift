import ArgumentParser
import SwitchboardCore
import SwitchboardNIO

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the Switchboard hub (single node, in-process; nothing else to start).")

    @OptionGroup var transport: TransportOptions

    @Option(help: "Path of the WebSocket endpoint.")
    var path = "/ws"

    func run() async throws {
        try await runServer(transport, path: path, application: EchoApplication(broadcast: true))
    }
}

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A high-concurrency WebSocket hub on SwiftNIO.",
        subcommands: [ServeCommand.self, EchoCommand.self])
}
