/// A parsed JSON value that keeps its source bytes: publication and presence data reach the application
/// as the exact text the publisher sent, and the rest of a server message is read by key.
struct JSONValue: Sendable {
    enum Kind: Sendable {
        case null
        case bool(Bool)
        /// Read from `raw` on demand (`int`): offsets and counts are all the client needs.
        case number
        case string(String)
        case array([JSONValue])
        case object([String: JSONValue])
    }

    let kind: Kind
    let raw: ArraySlice<UInt8>

    /// The value's source text, byte for byte.
    var text: String { String(decoding: raw, as: UTF8.self) }

    subscript(key: String) -> JSONValue? {
        guard case .object(let members) = kind else { return nil }
        return members[key]
    }

    var string: String? {
        guard case .string(let value) = kind else { return nil }
        return value
    }

    var int: Int? {
        guard case .number = kind else { return nil }
        return Int(text)
    }

    var bool: Bool? {
        guard case .bool(let value) = kind else { return nil }
        return value
    }

    var array: [JSONValue]? {
        guard case .array(let values) = kind else { return nil }
        return values
    }

    /// Parses one JSON value (RFC 8259) with nothing but whitespace around it; nil when `text` is not one.
    static func parse(_ text: String) -> JSONValue? {
        var parser = JSONParser(bytes: Array(text.utf8))
        return parser.document()
    }

    /// `string` as a JSON string literal: quote, backslash and control characters escaped.
    static func quote(_ string: String) -> String {
        var out = "\""
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case let control where control.value < 0x20:
                let hex = String(control.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// A recursive-descent JSON parser over UTF-8 bytes. Input comes from the network, so nesting is bounded
/// (the server allows 64 levels in publication data) and every malformed input fails rather than traps.
struct JSONParser {
    private struct Failure: Error {}

    static let maxDepth = 256
    let bytes: [UInt8]
    private var index = 0
    private var depth = 0

    init(bytes: [UInt8]) { self.bytes = bytes }

    mutating func document() -> JSONValue? {
        guard let parsed = try? value() else { return nil }
        skipWhitespace()
        return index == bytes.count ? parsed : nil
    }

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private mutating func skipWhitespace() {
        while let byte = peek, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    private mutating func consume(_ byte: UInt8) -> Bool {
        guard peek == byte else { return false }
        index += 1
        return true
    }

    private mutating func expect(_ byte: UInt8) throws {
        guard consume(byte) else { throw Failure() }
    }

    private mutating func value() throws -> JSONValue {
        skipWhitespace()
        guard let first = peek else { throw Failure() }
        let start = index
        let kind: JSONValue.Kind
        switch first {
        case UInt8(ascii: "{"): kind = .object(try object())
        case UInt8(ascii: "["): kind = .array(try array())
        case UInt8(ascii: "\""): kind = .string(try string())
        case UInt8(ascii: "t"): kind = try literal("true", .bool(true))
        case UInt8(ascii: "f"): kind = try literal("false", .bool(false))
        case UInt8(ascii: "n"): kind = try literal("null", .null)
        default:
            try number()
            kind = .number
        }
        return JSONValue(kind: kind, raw: bytes[start..<index])
    }

    private mutating func nested<T>(_ body: (inout JSONParser) throws -> T) throws -> T {
        depth += 1
        defer { depth -= 1 }
        guard depth <= Self.maxDepth else { throw Failure() }
        index += 1  // the opening bracket
        return try body(&self)
    }

    private mutating func object() throws -> [String: JSONValue] {
        try nested { parser in
            var members: [String: JSONValue] = [:]
            parser.skipWhitespace()
            if parser.consume(UInt8(ascii: "}")) { return members }
            while true {
                parser.skipWhitespace()
                guard parser.peek == UInt8(ascii: "\"") else { throw Failure() }
                let key = try parser.string()
                parser.skipWhitespace()
                try parser.expect(UInt8(ascii: ":"))
                members[key] = try parser.value()
                parser.skipWhitespace()
                if parser.consume(UInt8(ascii: ",")) { continue }
                try parser.expect(UInt8(ascii: "}"))
                return members
            }
        }
    }

    private mutating func array() throws -> [JSONValue] {
        try nested { parser in
            var values: [JSONValue] = []
            parser.skipWhitespace()
            if parser.consume(UInt8(ascii: "]")) { return values }
            while true {
                values.append(try parser.value())
                parser.skipWhitespace()
                if parser.consume(UInt8(ascii: ",")) { continue }
                try parser.expect(UInt8(ascii: "]"))
                return values
            }
        }
    }

    private mutating func literal(_ word: String, _ kind: JSONValue.Kind) throws -> JSONValue.Kind {
        for byte in word.utf8 { try expect(byte) }
        return kind
    }

    private mutating func digits() -> Int {
        let start = index
        while let byte = peek, byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") { index += 1 }
        return index - start
    }

    private mutating func number() throws {
        _ = consume(UInt8(ascii: "-"))
        guard digits() > 0 else { throw Failure() }
        if consume(UInt8(ascii: ".")) {
            guard digits() > 0 else { throw Failure() }
        }
        if consume(UInt8(ascii: "e")) || consume(UInt8(ascii: "E")) {
            if !consume(UInt8(ascii: "+")) { _ = consume(UInt8(ascii: "-")) }
            guard digits() > 0 else { throw Failure() }
        }
    }

    private mutating func string() throws -> String {
        index += 1  // the opening quote
        var decoded: [UInt8] = []
        var segment = index
        while let byte = peek {
            switch byte {
            case UInt8(ascii: "\""):
                decoded += bytes[segment..<index]
                index += 1
                return String(decoding: decoded, as: UTF8.self)
            case UInt8(ascii: "\\"):
                decoded += bytes[segment..<index]
                index += 1
                decoded += try escape()
                segment = index
            case ..<0x20:
                throw Failure()
            default:
                index += 1
            }
        }
        throw Failure()
    }

    /// The bytes an escape sequence (after its backslash) stands for.
    private mutating func escape() throws -> [UInt8] {
        guard let byte = peek else { throw Failure() }
        index += 1
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): return [byte]
        case UInt8(ascii: "b"): return [0x08]
        case UInt8(ascii: "f"): return [0x0C]
        case UInt8(ascii: "n"): return [0x0A]
        case UInt8(ascii: "r"): return [0x0D]
        case UInt8(ascii: "t"): return [0x09]
        case UInt8(ascii: "u"):
            var code = try hex4()
            // A high surrogate followed by an escaped low one is one character; a lone one becomes U+FFFD.
            if (0xD800..<0xDC00).contains(code), bytes[index...].starts(with: [0x5C, 0x75]) {
                index += 2
                let low = try hex4()
                code = (0xDC00..<0xE000).contains(low) ? 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00) : 0xFFFD
            }
            return Array(String(Unicode.Scalar(code).map(Character.init) ?? "\u{FFFD}").utf8)
        default:
            throw Failure()
        }
    }

    private mutating func hex4() throws -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let byte = peek else { throw Failure() }
            index += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw Failure()
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }
}
