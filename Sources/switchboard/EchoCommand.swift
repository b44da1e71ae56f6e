import ArgumentParser
import Foundation
import SwitchboardConfig
import SwitchboardCore
import SwitchboardNIO

struct EchoCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo",
        abstract: "The same transport with a trivial application: echo each message, or broadcast it to everyone.",
        discussion: """
            Accepts WebSocket upgrades at any path. Used for Autobahn conformance runs and benchmarks. Takes the \
            transport settings of `serve` (docs/CONFIGURATION.md), e.g. --port, --threads, --deflate.
            """)

    @Flag(help: "Send each message to every open connection (sender included) instead of back to its sender.")
    var broadcast = false

    @Argument(parsing: .allUnrecognized, help: "Settings as --name value, as for serve.")
    var settings: [String] = []

    func run() async throws {
        let loaded: LoadedSettings
        do {
            loaded = try SettingsLoader.load(arguments: settings, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError("\(error)")
        }
        _ = bootstrap(logLevel: loaded.settings.logLevel)
        try await runServer(loaded.settings, path: nil, application: EchoApplication(broadcast: broadcast))
    }
}
