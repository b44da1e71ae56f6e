import ArgumentParser
import Foundation
import SwitchboardConfig

struct CheckConfigCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the settings `serve` would run with and print each, secrets redacted, with its source.",
        usage: "switchboard check-config [FILE] [--config FILE] [flags as for serve]",
        discussion: """
            Reads the same layers as serve: FILE (or --config FILE, or SWITCHBOARD_CONFIG), SWITCHBOARD_… \
            environment variables and the flags given after FILE. Runs the checks serve runs before it binds \
            (token keys, the server API's key and host, the TLS certificate and key) and exits 1 with the reason \
            when serve would refuse to start.
            """)

    @Flag(help: "Print the settings table of docs/CONFIGURATION.md (made from the code) and exit.")
    var markdownTable = false

    @Argument(parsing: .allUnrecognized, help: "A configuration file (JSON, or YAML by its extension), then flags.")
    var arguments: [String] = []

    func run() async throws {
        if markdownTable { return print(SettingsReport.markdownTable) }
        var settings = arguments
        var file: String?
        if let first = settings.first, !first.hasPrefix("-") { file = settings.removeFirst() }
        do {
            if file != nil, settings.contains(where: { $0 == "--config" || $0.hasPrefix("--config=") }) {
                throw SettingsError("give the configuration file once: as FILE or as --config FILE, not both")
            }
            let loaded = try SettingsLoader.load(
                arguments: settings, environment: ProcessInfo.processInfo.environment, file: file)
            try await checkStartup(loaded.settings)
            print(SettingsReport.render(loaded))
        } catch {
            print("invalid configuration: \(error)")
            throw ExitCode(1)
        }
    }
}
