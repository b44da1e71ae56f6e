/// A JSON object read one level deep, each field kept as the exact text of its value: the server API's
/// bodies and the backend's proxy answers, read by the same scanner as the client's commands, so a
/// `data` field reaches subscribers as the bytes its sender wrote, never re-serialized.
public struct JSONObject: Sendable {
    /// Each field's value as the exact JSON text it had (a later duplicate key wins).
    public let fields: [String: String]

    /// The text is not one JSON object (or is nested deeper than the scanner follows).
    public struct Malformed: Error {}

    /// Reads `bytes`, which must be exactly one JSON object (whitespace around it allowed) in valid UTF-8,
    /// each key once.
    public init(parsing bytes: some Collection<UInt8>) throws {
        // HTTP bodies reach here unchecked (WebSocket text is checked by the transport).
        guard String(validating: bytes, as: UTF8.self) != nil else { throw Malformed() }
        let read = bytes.withContiguousStorageIfAvailable { Self.read(UnsafeRawBufferPointer($0)) }
        guard let fields = read ?? Array(bytes).withUnsafeBytes({ Self.read($0) }) else { throw Malformed() }
        self.fields = fields
    }

    /// Reads `text`, which must be exactly one JSON object.
    public init(parsing text: String) throws {
        try self.init(parsing: Array(text.utf8))
    }

    private static func read(_ bytes: UnsafeRawBufferPointer) -> [String: String]? {
        var scanner = JSONScanner(bytes)
        var fields: [String: String] = [:]
        do {
            try scanner.readObject { scanner, key in
                // A key given twice would mean whichever the reader picked: refused.
                guard fields.updateValue(scanner.text(try scanner.skipValue()), forKey: key) == nil else {
                    throw JSONScanner.Failure()
                }
            }
            scanner.skipWhitespace()
            guard scanner.atEnd, !scanner.tooDeep else { return nil }
        } catch {
            return nil
        }
        return fields
    }

    /// Whether the object has `key` (with any value, null included).
    public func has(_ key: String) -> Bool { fields[key] != nil }

    /// The value of `key` as its exact JSON text; nil when absent.
    public func json(_ key: String) -> String? { fields[key] }

    /// A string; nil when absent. A value of another type is error 100 naming the key.
    public func string(_ key: String) throws -> String? {
        try read(key, "must be a string") { try $0.readString() }
    }

    /// A string that must be there: error 100 "missing KEY" otherwise.
    public func requiredString(_ key: String) throws -> String {
        guard let value = try string(key) else { throw ProtocolError.badRequest("missing \(key)") }
        return value
    }

    /// A whole number; nil when absent.
    public func integer(_ key: String) throws -> Int? {
        try read(key, "must be a whole number") { try $0.readInteger() }
    }

    /// A finite number; nil when absent, and when null where `nullable` (null then means left out).
    public func number(_ key: String, nullable: Bool = false) throws -> Double? {
        if nullable, fields[key] == "null" { return nil }
        return try read(key, "must be a number") { try $0.readDouble() }
    }

    /// `true` or `false`; nil when absent.
    public func bool(_ key: String) throws -> Bool? {
        try read(key, "must be true or false") { try $0.readBool() }
    }

    /// An array of strings; nil when absent.
    public func strings(_ key: String) throws -> [String]? {
        try read(key, "must be an array of strings") { scanner in
            var strings: [String] = []
            try scanner.readArray { strings.append(try $0.readString()) }
            return strings
        }
    }

    /// A nested object; nil when absent.
    public func object(_ key: String) throws -> JSONObject? {
        guard let text = fields[key] else { return nil }
        guard let object = try? JSONObject(parsing: text) else {
            throw ProtocolError.badRequest("\(key) must be an object")
        }
        return object
    }

    private func read<T>(_ key: String, _ problem: String, _ body: (inout JSONScanner) throws -> T) throws -> T? {
        guard var text = fields[key] else { return nil }
        let value = text.withUTF8 { bytes -> T? in
            var scanner = JSONScanner(UnsafeRawBufferPointer(bytes))
            guard let value = try? body(&scanner) else { return nil }
            scanner.skipWhitespace()
            return scanner.atEnd ? value : nil
        }
        guard let value else { throw ProtocolError.badRequest("\(key) \(problem)") }
        return value
    }
}
