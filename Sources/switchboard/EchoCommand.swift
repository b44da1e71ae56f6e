import ArgumentParser
import SwitchboardCore
import SwitchboardNIO

struct EchoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "The same transport with a trivial application: echo each message, or broadcast it to everyone.",
        discussion: "Accepts WebSocket upgrades at any path. Used for Autobahn conformance runs and benchmarks.")

    @OptionGroup var transport: TransportOptions

    @Flag(help: "Send each message to every open connection (sender included) instead of back to its sender.")
    var broadcast = false

    func run() async throws {
        _ = bootstrap(transport)
        try await runServer(transport, path: nil, application: EchoApplication(broadcast: broadcast))
    }
}
