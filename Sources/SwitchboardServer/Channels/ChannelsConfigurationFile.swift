import Foundation
import NIOCore
import SwitchboardCore

/// A mistake in a configuration file, named by its path in the document (`namespaces.chat.presence`).
public struct ConfigurationError: Error, CustomStringConvertible {
    /// Dotted path of the offending key, e.g. `namespaces.chat.presence`; empty for the document itself.
    public let path: String
    /// What is wrong with the value, for the operator.
    public let problem: String
    /// `path: problem`, with "configuration" standing in for an empty path.
    public var description: String { "\(path.isEmpty ? "configuration" : path): \(problem)" }
}

extension ChannelsConfiguration {
    /// Reads namespaces and per-connection limits from JSON (documented in docs/CONFIGURATION.md).
    /// Keys left out keep their defaults; the namespaces listed are the only ones that exist. Unknown
    /// keys are errors rather than silently ignored, so a typo cannot switch a feature off.
    public init(json: Data) throws {
        let document: Any
        do {
            document = try JSONSerialization.jsonObject(with: json)
        } catch {
            throw ConfigurationError(path: "", problem: "not valid JSON (\(error.localizedDescription))")
        }
        var reader = try ObjectReader(document, path: "")
        self.init()
        maxSubscriptionsPerConnection = try reader.int("maxSubscriptionsPerConnection") ?? maxSubscriptionsPerConnection
        publishRate = try reader.number("publishRate") ?? publishRate
        publishBurst = try reader.number("publishBurst") ?? publishBurst
        guard publishRate > 0 else { throw reader.error("publishRate", "must be greater than 0") }
        guard publishBurst >= 1 else { throw reader.error("publishBurst", "must be at least 1") }
        maxRejectedPublishes = try reader.int("maxRejectedPublishes") ?? maxRejectedPublishes
        if let namespaces = try reader.object("namespaces") {
            self.namespaces = [:]
            for (name, value) in namespaces.fields {
                guard name.isEmpty || ChannelName.validNamespace(name) else {
                    throw ConfigurationError(path: "namespaces", problem: "\"\(name)\" is not a valid namespace name")
                }
                self.namespaces[name] = try NamespaceOptions(try ObjectReader(value, path: "namespaces.\(name)"))
            }
        }
        try reader.finish()
    }
}

extension NamespaceOptions {
    fileprivate static let maxHistoryTTLSeconds = 365.0 * 24 * 3600

    fileprivate init(_ reader: ObjectReader) throws {
        var reader = reader
        self.init()
        historySize = try reader.int("historySize") ?? historySize
        historyMaxBytes = try reader.int("historyMaxBytes") ?? historyMaxBytes
        if let seconds = try reader.number("historyTTL") {
            guard seconds <= Self.maxHistoryTTLSeconds else {
                throw reader.error("historyTTL", "must be at most \(Int(Self.maxHistoryTTLSeconds)) seconds (a year)")
            }
            historyTTL = .nanoseconds(Int64(seconds * 1e9))
        }
        presence = try reader.bool("presence") ?? presence
        joinLeave = try reader.bool("joinLeave") ?? joinLeave
        countsOnly = try reader.bool("countsOnly") ?? countsOnly
        joinLeaveMaxMembers = try reader.int("joinLeaveMaxMembers") ?? joinLeaveMaxMembers
        clientsMayPublish = try reader.bool("clientsMayPublish") ?? clientsMayPublish
        showPublisher = try reader.bool("showPublisher") ?? showPublisher
        proxySubscribe = try reader.bool("proxySubscribe") ?? proxySubscribe
        proxyPublish = try reader.bool("proxyPublish") ?? proxyPublish
        publicationEvents = try reader.bool("publicationEvents") ?? publicationEvents
        if let policy = try reader.string("slowConsumer") {
            guard let parsed = SlowConsumerPolicy(configurationName: policy) else {
                throw reader.error("slowConsumer", "must be \"disconnect\", \"dropOldest\" or \"latest\"")
            }
            slowConsumer = parsed
        }
        if let permissions = try reader.object("permissions") {
            var permissionsReader = permissions
            for action in ChannelPermissions.Action.allCases {
                guard let value = try permissionsReader.string(action.rawValue) else { continue }
                let allowed = ChannelPermissions.allowed(for: action)
                guard let access = ChannelPermissions.Access(rawValue: value), allowed.contains(access) else {
                    throw permissionsReader.error(
                        action.rawValue, "must be " + allowed.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))
                }
                self.permissions[action] = access
            }
            try permissionsReader.finish()
        }
        if (joinLeave || countsOnly) && !presence {
            throw reader.error("presence", "must be true when joinLeave or countsOnly is")
        }
        try reader.finish()
    }
}

extension SlowConsumerPolicy {
    /// The protocol docs' spelling (`dropOldest`), with the command line's (`drop-oldest`) accepted too.
    init?(configurationName: String) {
        if configurationName == "dropOldest" {
            self = .dropOldest
        } else {
            self.init(rawValue: configurationName)
        }
    }
}

/// Takes typed fields out of a JSON object, remembering which were read so leftovers can be reported.
private struct ObjectReader {
    let fields: [String: Any]
    let path: String
    private var unread: Set<String>

    init(_ value: Any, path: String) throws {
        guard let fields = value as? [String: Any] else {
            throw ConfigurationError(path: path, problem: "must be an object")
        }
        self.fields = fields
        self.path = path
        unread = Set(fields.keys)
    }

    func error(_ key: String, _ problem: String) -> ConfigurationError {
        ConfigurationError(path: path.isEmpty ? key : "\(path).\(key)", problem: problem)
    }

    private mutating func take<T>(_ key: String, as type: T.Type, named: String) throws -> T? {
        guard let value = fields[key] else { return nil }
        unread.remove(key)
        // JSONSerialization gives NSNumber for booleans as well as numbers; booleans have type "c".
        let isBool = (value as? NSNumber).map { String(cString: $0.objCType) == "c" } ?? false
        guard let typed = value as? T, (T.self == Bool.self) == isBool else { throw error(key, "must be \(named)") }
        return typed
    }

    mutating func bool(_ key: String) throws -> Bool? { try take(key, as: Bool.self, named: "true or false") }
    mutating func string(_ key: String) throws -> String? { try take(key, as: String.self, named: "a string") }
    mutating func object(_ key: String) throws -> ObjectReader? {
        guard let value = try take(key, as: [String: Any].self, named: "an object") else { return nil }
        return try ObjectReader(value, path: path.isEmpty ? key : "\(path).\(key)")
    }

    mutating func number(_ key: String) throws -> Double? {
        guard let value = try take(key, as: Double.self, named: "a number") else { return nil }
        guard value >= 0, value.isFinite else { throw error(key, "must not be negative") }
        return value
    }

    mutating func int(_ key: String) throws -> Int? {
        guard let value = try number(key) else { return nil }
        guard value == value.rounded(), value <= Double(Int32.max) else { throw error(key, "must be a whole number") }
        return Int(value)
    }

    func finish() throws {
        if let key = unread.sorted().first { throw error(key, "unknown key") }
    }
}
