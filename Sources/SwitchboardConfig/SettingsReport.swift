/// What `switchboard check-config` prints: every setting, its effective value (secrets redacted) and the
/// layer it came from, then the namespaces and any warnings.
public enum SettingsReport {
    /// The `check-config` output for `loaded`, as lines joined with newlines (no trailing newline).
    public static func render(_ loaded: LoadedSettings) -> String {
        let width = (loaded.entries.map(\.key.count).max() ?? 0) + 2
        let valueWidth = min((loaded.entries.map(\.value.count).max() ?? 0) + 2, 40)
        var lines = ["configuration OK" + (loaded.filePath.map { " (file \($0))" } ?? "")]
        for entry in loaded.entries {
            let shown = entry.value.isEmpty ? "-" : entry.value
            lines.append(pad(entry.key, width) + pad(shown, valueWidth) + entry.source)
        }
        let namespaces = loaded.settings.channels.namespaces.keys.sorted().map { $0.isEmpty ? "\"\"" : $0 }
        lines.append(pad("namespaces", width) + namespaces.joined(separator: ", "))
        lines += loaded.warnings.map { "warning: \($0)" }
        return lines.joined(separator: "\n")
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
    }
}

extension SettingsReport {
    /// The settings table of docs/CONFIGURATION.md, made from the catalog (a test keeps the two equal).
    public static var markdownTable: String {
        var lines = [
            "| file key | flag / environment | default | reload | meaning |", "|---|---|---|---|---|",
        ]
        for key in SettingKey.all {
            let shown = key.defaultValue.isEmpty ? "–" : "`\(key.defaultValue)`"
            lines.append(
                "| `\(key.name)` | `\(key.flag)` `\(key.environmentVariable)` | \(shown) | \(key.reloadable ? "yes" : "no") | \(key.kind.rawValue); \(key.help)\(key.isSecret ? " (secret: redacted)" : "") |"
            )
        }
        return lines.joined(separator: "\n")
    }
}
