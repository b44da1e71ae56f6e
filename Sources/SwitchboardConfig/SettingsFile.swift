import Configuration
import Foundation
import Yams

/// A configuration file (JSON, or YAML by its `.yaml`/`.yml` extension): each top-level key is a setting of
/// the catalog, typed as the catalog says, or `namespaces`. Anything else is an error naming its path, so
/// a typo can never switch a feature off silently.
struct SettingsFile {
    let path: String
    let values: [AbsoluteConfigKey: ConfigValue]
    /// The `namespaces` object, re-encoded as `{"namespaces": …}` for the channels' own strict reader.
    let namespacesJSON: Data?

    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw SettingsError("\(path): cannot be read")
        }
        let document: Any?
        do {
            if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
                document = try Yams.load(yaml: String(decoding: data, as: UTF8.self))
            } else {
                document = try JSONSerialization.jsonObject(with: data)
            }
        } catch {
            throw SettingsError("\(path): cannot be parsed (\(error))")
        }
        guard let fields = document as? [String: Any] else { throw SettingsError("\(path): must be an object") }
        self.path = path
        var values: [AbsoluteConfigKey: ConfigValue] = [:]
        var namespaces: Data?
        for (name, value) in fields.sorted(by: { $0.key < $1.key }) {
            if name == "namespaces" {
                guard JSONSerialization.isValidJSONObject(["namespaces": value]) else {
                    throw SettingsError("\(path): namespaces: must be an object of plain values")
                }
                namespaces = try JSONSerialization.data(withJSONObject: ["namespaces": value])
                continue
            }
            guard let key = SettingKey.byName[name] else {
                throw SettingsError("\(path): \(name): unknown key\(Self.suggestion(for: name))")
            }
            guard let content = Self.content(value, as: key.kind) else {
                throw SettingsError("\(path): \(name): must be \(key.kind.rawValue)")
            }
            values[AbsoluteConfigKey([name])] = ConfigValue(content, isSecret: key.isSecret)
        }
        self.values = values
        self.namespacesJSON = namespaces
    }

    /// The setting a typo most likely meant: same letters ignoring case and dashes, or two edits away.
    static func suggestion(for name: String) -> String {
        let wanted = Array(name.lowercased().filter { $0.isLetter || $0.isNumber })
        let best = SettingKey.all.map { ($0.name, distance(wanted, Array($0.name.lowercased()))) }.min { $0.1 < $1.1 }
        guard let best, best.1 <= 2 else { return "" }
        return " (did you mean \(best.0)?)"
    }

    private static func distance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, x) in a.enumerated() {
            var row = [i + 1]
            for (j, y) in b.enumerated() {
                row.append(min(previous[j + 1] + 1, row[j] + 1, previous[j] + (x == y ? 0 : 1)))
            }
            previous = row
        }
        return previous[b.count]
    }

    /// JSON numbers arrive as NSNumber, booleans too (type "c"); YAML gives Swift values.
    private static func content(_ value: Any, as kind: SettingKey.Kind) -> ConfigContent? {
        let number = value as? NSNumber
        let isBool = value is Bool && (number.map { String(cString: $0.objCType) == "c" } ?? true)
        switch kind {
        case .bool:
            return isBool ? (value as? Bool).map(ConfigContent.bool) : nil
        case .int:
            guard !isBool, let double = number?.doubleValue, double == double.rounded(), abs(double) < 1e15 else {
                return nil
            }
            return .int(Int(double))
        case .double:
            guard !isBool, let double = number?.doubleValue, double.isFinite else { return nil }
            return .double(double)
        case .string:
            return (value as? String).map(ConfigContent.string)
        case .strings:
            if let single = value as? String { return .stringArray([single]) }
            guard let list = value as? [Any] else { return nil }
            let strings = list.compactMap { $0 as? String }
            return strings.count == list.count ? .stringArray(strings) : nil
        }
    }
}
