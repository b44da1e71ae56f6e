import ArgumentParser
import Foundation
import SwitchboardConfig

struct CheckConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-config",
        abstract: "Validate the settings `serve` would run with and print each, secrets redacted, with its source.",
        discussion: """
            Reads the same layers as serve: FILE (or --config FILE, or SWITCHBOARD_CONFIG), SWITCHBOARD_… \
            environment variables and the flags given after FILE. Exits 1 with the reason when serve would refuse \
            to start.
            """)

    @Flag(help: "Print the settings table of docs/CONFIGURATION.md (made from the code) and exit.")
    var markdownTable = false

    @Argument(help: "Configuration file (JSON, or YAML by its extension).")
    var file: String?

    @Argument(parsing: .allUnrecognized, help: "Flags, as for serve.")
    var settings: [String] = []

    func run() throws {
        if markdownTable { return print(SettingsReport.markdownTable) }
        let loaded: LoadedSettings
        do {
            loaded = try SettingsLoader.load(
                arguments: settings, environment: ProcessInfo.processInfo.environment, file: file)
        } catch {
            print("invalid configuration: \(error)")
            throw ExitCode(1)
        }
        print(SettingsReport.render(loaded))
    }
}
