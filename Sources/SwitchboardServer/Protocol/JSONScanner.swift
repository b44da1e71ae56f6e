/// A strict JSON (RFC 8259) reader over one command's UTF-8 bytes, written by hand for two things
/// Foundation's parsers do not do: keep a value's exact bytes (a publication's `data` goes out as the
/// publisher wrote it, encoded once, never re-serialized) and read a command without building a
/// dictionary of boxed values for every publish. It validates everything it passes over; text frames
/// reach it already checked as UTF-8 by the transport.
struct JSONScanner {
    struct Failure: Error {}

    /// Nesting deeper than this is refused rather than recursed into.
    static let maxDepth = 64

    private let bytes: UnsafeRawBufferPointer
    private(set) var index = 0
    /// Set when a value nested deeper than `maxDepth` was passed over by counting its brackets: nothing
    /// inside it was checked, so whoever reads must refuse it, but the rest (a command's `id`) can still be read.
    private(set) var tooDeep = false

    init(_ bytes: UnsafeRawBufferPointer) {
        self.bytes = bytes
    }

    var atEnd: Bool { index == bytes.count }

    /// Whether `text` is exactly one JSON value (whitespace around it allowed).
    static func isValue(_ text: String) -> Bool {
        var text = text
        return text.withUTF8 { bytes in
            var scanner = JSONScanner(UnsafeRawBufferPointer(bytes))
            guard (try? scanner.skipValue()) != nil else { return false }
            scanner.skipWhitespace()
            return scanner.atEnd && !scanner.tooDeep
        }
    }

    /// Goes back to `position` (an index this scanner passed), to read a value another way.
    mutating func rewind(to position: Int) {
        index = position
    }

    private var current: UInt8? { index < bytes.count ? bytes[index] : nil }

    mutating func skipWhitespace() {
        while let byte = current, byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { index += 1 }
    }

    /// Consumes `byte` (after whitespace) if it is next.
    mutating func take(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard current == byte else { return false }
        index += 1
        return true
    }

    mutating func expect(_ byte: UInt8) throws {
        guard take(byte) else { throw Failure() }
    }

    /// Calls `body` with each key of an object, which must read (or skip) the key's value.
    mutating func readObject(_ body: (inout JSONScanner, String) throws -> Void) throws {
        try expect(UInt8(ascii: "{"))
        if take(UInt8(ascii: "}")) { return }
        repeat {
            skipWhitespace()
            let key = try readString()
            try expect(UInt8(ascii: ":"))
            try body(&self, key)
        } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "}"))
    }

    /// Skips one value, checking it, and returns where its bytes are.
    mutating func skipValue(depth: Int = 0) throws -> Range<Int> {
        skipWhitespace()
        let start = index
        switch current {
        case UInt8(ascii: "\""):
            try skipString()
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            guard depth < Self.maxDepth else {
                try skipNested()
                break
            }
            if current == UInt8(ascii: "{") {
                try readObject { scanner, _ in _ = try scanner.skipValue(depth: depth + 1) }
                break
            }
            index += 1
            if !take(UInt8(ascii: "]")) {
                repeat { _ = try skipValue(depth: depth + 1) } while take(UInt8(ascii: ","))
                try expect(UInt8(ascii: "]"))
            }
        case UInt8(ascii: "t"):
            try skipLiteral("true")
        case UInt8(ascii: "f"):
            try skipLiteral("false")
        case UInt8(ascii: "n"):
            try skipLiteral("null")
        default:
            _ = try readNumberText()
        }
        return start..<index
    }

    func text(_ range: Range<Int>) -> String {
        String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    /// A string value, unescaped. Fails on anything else.
    mutating func readString() throws -> String {
        skipWhitespace()
        let start = index
        let escaped = try skipString()
        let inner = (start + 1)..<(index - 1)
        return escaped ? try unescape(inner) : text(inner)
    }

    /// A number written without fraction or exponent (or with a zero fraction), as an Int.
    mutating func readInteger() throws -> Int {
        skipWhitespace()
        let range = try readNumberText()
        let literal = text(range)
        if let value = Int(literal) { return value }
        guard let value = Double(literal), let exact = Int(exactly: value) else { throw Failure() }
        return exact
    }

    /// Any number, as a Double (a fraction or exponent allowed).
    mutating func readDouble() throws -> Double {
        skipWhitespace()
        let range = try readNumberText()
        guard let value = Double(text(range)), value.isFinite else { throw Failure() }
        return value
    }

    /// `true` or `false`. Fails on anything else.
    mutating func readBool() throws -> Bool {
        skipWhitespace()
        if current == UInt8(ascii: "t") {
            try skipLiteral("true")
            return true
        }
        try skipLiteral("false")
        return false
    }

    /// Calls `body` with each element of an array, which must read (or skip) it.
    mutating func readArray(_ body: (inout JSONScanner) throws -> Void) throws {
        try expect(UInt8(ascii: "["))
        if take(UInt8(ascii: "]")) { return }
        repeat { try body(&self) } while take(UInt8(ascii: ","))
        try expect(UInt8(ascii: "]"))
    }

    // MARK: pieces

    /// Passes over a value nested too deep to recurse into, counting brackets (strings skipped whole), without
    /// recursion and without checking what is inside.
    private mutating func skipNested() throws {
        tooDeep = true
        var open = 0
        repeat {
            guard let byte = current else { throw Failure() }
            switch byte {
            case UInt8(ascii: "\""):
                try skipString()
                continue
            case UInt8(ascii: "{"), UInt8(ascii: "["): open += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"): open -= 1
            default: break
            }
            index += 1
        } while open > 0
    }

    private mutating func skipLiteral(_ literal: StaticString) throws {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw Failure() }
        for offset in 0..<count where bytes[index + offset] != literal.utf8Start[offset] { throw Failure() }
        index += count
    }

    /// Skips a string (at its opening quote); returns whether it holds escapes.
    @discardableResult
    private mutating func skipString() throws -> Bool {
        guard current == UInt8(ascii: "\"") else { throw Failure() }
        index += 1
        var escaped = false
        while let byte = current {
            index += 1
            switch byte {
            case UInt8(ascii: "\""):
                return escaped
            case UInt8(ascii: "\\"):
                escaped = true
                guard let next = current else { throw Failure() }
                index += 1
                switch next {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"), UInt8(ascii: "b"), UInt8(ascii: "f"),
                    UInt8(ascii: "n"), UInt8(ascii: "r"), UInt8(ascii: "t"):
                    break
                case UInt8(ascii: "u"):
                    guard index + 4 <= bytes.count, (0..<4).allSatisfy({ Self.hexValue(bytes[index + $0]) != nil })
                    else { throw Failure() }
                    index += 4
                default:
                    throw Failure()
                }
            case 0..<0x20:
                throw Failure()
            default:
                break
            }
        }
        throw Failure()
    }

    /// Digits, sign, fraction and exponent as RFC 8259 spells a number.
    private mutating func readNumberText() throws -> Range<Int> {
        let start = index
        if current == UInt8(ascii: "-") { index += 1 }
        guard let first = current, Self.isDigit(first) else { throw Failure() }
        index += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if current == UInt8(ascii: ".") {
            index += 1
            guard try requireDigits() else { throw Failure() }
        }
        if current == UInt8(ascii: "e") || current == UInt8(ascii: "E") {
            index += 1
            if current == UInt8(ascii: "+") || current == UInt8(ascii: "-") { index += 1 }
            guard try requireDigits() else { throw Failure() }
        }
        return start..<index
    }

    private mutating func skipDigits() {
        while let byte = current, Self.isDigit(byte) { index += 1 }
    }

    private mutating func requireDigits() throws -> Bool {
        let start = index
        skipDigits()
        return index > start
    }

    private func unescape(_ range: Range<Int>) throws -> String {
        var scalars = String.UnicodeScalarView()
        var utf8: [UInt8] = []
        func flush() {
            scalars.append(contentsOf: String(decoding: utf8, as: UTF8.self).unicodeScalars)
            utf8.removeAll(keepingCapacity: true)
        }
        var position = range.lowerBound
        func hex4(at offset: Int) -> UInt32 {
            (0..<4).reduce(0) { $0 << 4 | UInt32(Self.hexValue(bytes[offset + $1]) ?? 0) }
        }
        while position < range.upperBound {
            let byte = bytes[position]
            guard byte == UInt8(ascii: "\\") else {
                utf8.append(byte)
                position += 1
                continue
            }
            let kind = bytes[position + 1]
            position += 2
            let simple: UInt8? =
                switch kind {
                case UInt8(ascii: "b"): 0x08
                case UInt8(ascii: "f"): 0x0C
                case UInt8(ascii: "n"): 0x0A
                case UInt8(ascii: "r"): 0x0D
                case UInt8(ascii: "t"): 0x09
                case UInt8(ascii: "u"): nil
                default: kind
                }
            if let simple {
                utf8.append(simple)
                continue
            }
            var code = hex4(at: position)
            position += 4
            if (0xD800..<0xDC00).contains(code), position + 6 <= range.upperBound,
                bytes[position] == UInt8(ascii: "\\"),
                bytes[position + 1] == UInt8(ascii: "u")
            {
                let low = hex4(at: position + 2)
                if (0xDC00..<0xE000).contains(low) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    position += 6
                }
            }
            // A lone surrogate cannot be a Unicode scalar: it becomes U+FFFD, as Foundation does.
            flush()
            scalars.append(Unicode.Scalar(code) ?? "\u{FFFD}")
        }
        flush()
        return String(scalars)
    }

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x41...0x46: byte - 0x41 + 10
        case 0x61...0x66: byte - 0x61 + 10
        default: nil
        }
    }
}
