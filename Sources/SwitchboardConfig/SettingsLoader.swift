import Configuration
import Foundation
import NIOCore
import SwitchboardCore
import SwitchboardServer
import Synchronization

/// One setting as it ended up: its value (secrets redacted) and which layer gave it.
public struct SettingEntry: Sendable, Equatable {
    /// The setting's file key, as in `SettingKey.name`.
    public let key: String
    /// The value as text (lists joined); the catalog's default when unset; secrets shown redacted.
    public let value: String
    /// `default`, `file PATH`, `environment SWITCHBOARD_…` or `flag --…`.
    public let source: String
}

/// The effective settings and how they came about.
public struct LoadedSettings: Sendable {
    /// The validated settings to run with.
    public let settings: ServeSettings
    /// One entry per `SettingKey.all`, in that order: what `check-config` prints.
    public let entries: [SettingEntry]
    /// Things worth saying that do not stop the server (an unknown `SWITCHBOARD_` variable).
    public let warnings: [String]
    /// The configuration file read, if any (`--config` or `SWITCHBOARD_CONFIG`).
    public let filePath: String?

    /// Reloadable and not: what differs from `previous`, by key.
    public func changes(since previous: LoadedSettings) -> (reloadable: [String], restartNeeded: [String]) {
        let before = Dictionary(uniqueKeysWithValues: previous.entries.map { ($0.key, $0.value) })
        var reloadable: [String] = []
        var restart: [String] = []
        for entry in entries where before[entry.key] != entry.value {
            if SettingKey.byName[entry.key]?.reloadable ?? true {
                reloadable.append(entry.key)
            } else {
                restart.append(entry.key)
            }
        }
        return (reloadable, restart)
    }
}

/// Reads the settings of `serve` through swift-configuration: command-line flags over `SWITCHBOARD_…`
/// environment variables over the file (`--config FILE` or `SWITCHBOARD_CONFIG`) over the catalog's defaults.
public enum SettingsLoader {
    /// Reads and validates every setting. `arguments` are the flags after `serve` (no program name);
    /// `file` overrides `--config` and `SWITCHBOARD_CONFIG`. Throws `SettingsError` naming the setting.
    public static func load(
        arguments: [String], environment: [String: String], file explicitFile: String? = nil
    ) throws -> LoadedSettings {
        let (flags, flagFile) = try checkFlags(arguments)
        let filePath = explicitFile ?? flagFile ?? environment["SWITCHBOARD_CONFIG"]
        let file = try filePath.map(SettingsFile.init(path:))
        let known = Set(SettingKey.all.map(\.environmentVariable) + ["SWITCHBOARD_CONFIG"])
        let warnings = environment.keys.sorted().filter { $0.hasPrefix("SWITCHBOARD_") && !known.contains($0) }
            .map { "environment variable \($0) is not a setting; ignored" }

        let secretFlags = Set(SettingKey.all.filter(\.isSecret).map(\.flag))
        let secretVariables = Set(SettingKey.all.filter(\.isSecret).map(\.environmentVariable))
        let recorder = AccessRecorder()
        let reader = ConfigReader(
            providers: [
                CommandLineArgumentsProvider(
                    arguments: ["switchboard"] + flags, secretsSpecifier: .specific(secretFlags)),
                EnvironmentVariablesProvider(
                    environmentVariables: environment.filter { $0.key.hasPrefix("SWITCHBOARD_") },
                    secretsSpecifier: .specific(secretVariables)
                ).prefixKeys(with: "switchboard"),
                InMemoryProvider(name: "file", values: file?.values ?? [:]),
            ], accessReporter: recorder)

        var values: [String: ConfigContent] = [:]
        var entries: [SettingEntry] = []
        for key in SettingKey.all {
            let configKey = ConfigKey([key.name])
            let content: ConfigContent? =
                switch key.kind {
                case .int: reader.int(forKey: configKey, isSecret: key.isSecret).map(ConfigContent.int)
                case .double: reader.double(forKey: configKey, isSecret: key.isSecret).map(ConfigContent.double)
                case .bool: reader.bool(forKey: configKey, isSecret: key.isSecret).map(ConfigContent.bool)
                case .string: reader.string(forKey: configKey, isSecret: key.isSecret).map(ConfigContent.string)
                case .strings:
                    reader.stringArray(forKey: configKey, isSecret: key.isSecret).map(ConfigContent.stringArray)
                }
            let source = try recorder.source(of: key, file: filePath)
            if let content { values[key.name] = content }
            entries.append(
                SettingEntry(
                    key: key.name, value: content.map { display($0, secret: key.isSecret) } ?? key.defaultValue,
                    source: content == nil ? "default" : source))
        }
        let settings = try build(values, namespaces: file?.namespacesJSON, filePath: filePath)
        return LoadedSettings(settings: settings, entries: entries, warnings: warnings, filePath: filePath)
    }

    /// Every `--name` must be a setting (or `--config`): an unknown flag is an error, not a silent no-op.
    /// Returns the arguments without `--config FILE`, and that file.
    static func checkFlags(_ arguments: [String]) throws -> ([String], String?) {
        var rest: [String] = []
        var file: String?
        var index = 0
        var sawFlag = false
        while index < arguments.count {
            let argument = arguments[index]
            index += 1
            guard argument.hasPrefix("--") else {
                guard sawFlag else { throw SettingsError("unexpected argument \"\(argument)\"") }
                rest.append(argument)
                continue
            }
            sawFlag = true
            let name = String(argument.prefix { $0 != "=" })
            if name == "--config" {
                if argument.contains("=") {
                    file = String(argument.dropFirst("--config=".count))
                } else if index < arguments.count {
                    file = arguments[index]
                    index += 1
                } else {
                    throw SettingsError("--config needs a file")
                }
                continue
            }
            guard SettingKey.byFlag[name] != nil else {
                throw SettingsError("unknown option \(name)\(SettingsFile.suggestion(for: String(name.dropFirst(2))))")
            }
            rest.append(argument)
        }
        return (rest, file)
    }

    private static func display(_ content: ConfigContent, secret: Bool) -> String {
        if secret { return "<redacted>" }
        switch content {
        case .string(let value): return value
        case .int(let value): return String(value)
        case .double(let value):
            return value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
        case .bool(let value): return String(value)
        case .stringArray(let values): return values.joined(separator: ", ")
        default: return "\(content)"
        }
    }
}

/// Records what each read found in each provider: where a value came from, and which provider could not
/// give a value of the right type (swift-configuration then falls back to the default quietly).
private final class AccessRecorder: AccessReporter {
    // Mutex: guards the events, reported synchronously from the reads in `load`.
    private let events = Mutex<[String: AccessEvent]>([:])

    func report(_ event: AccessEvent) {
        events.withLock { $0[event.metadata.key.components.joined(separator: ".")] = event }
    }

    func source(of key: SettingKey, file: String?) throws -> String {
        guard let event = events.withLock({ $0[key.name] }) else { return "default" }
        for result in event.providerResults {
            let label = Self.label(result.providerName, key: key, file: file)
            switch result.result {
            case .failure: throw SettingsError("\(label): must be \(key.kind.rawValue)")
            case .success(let lookup) where lookup.value != nil: return label
            case .success: continue
            }
        }
        if event.conversionError != nil { throw SettingsError("\(key.name): must be \(key.kind.rawValue)") }
        return "default"
    }

    private static func label(_ provider: String, key: SettingKey, file: String?) -> String {
        if provider.contains("CommandLine") { return "flag \(key.flag)" }
        if provider.contains("Environment") { return "environment \(key.environmentVariable)" }
        return "file \(file ?? "?"): \(key.name)"
    }
}
