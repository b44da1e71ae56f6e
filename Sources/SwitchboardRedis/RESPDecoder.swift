import NIOCore

/// A reply the server sent that is not RESP: the connection cannot be trusted any more.
public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    public let description: String
}

/// Incremental RESP2/RESP3 parser: returns a whole value once all its bytes have arrived, nil before,
/// consuming nothing until then (so a value split anywhere across reads parses the same). Aggregates are
/// bounded in depth and size so a broken or hostile stream cannot make it allocate without limit.
public struct RESPDecoder: Sendable {
    public static let maxDepth = 64
    public static let maxBulkLength = 512 << 20
    public static let maxElements = 1 << 24

    public init() {}

    public mutating func next(from buffer: inout ByteBuffer) throws(RESPProtocolError) -> RESPValue? {
        var reader = buffer
        guard let value = try Self.parse(&reader, depth: 0) else { return nil }
        buffer = reader
        return value
    }

    private static func parse(_ buffer: inout ByteBuffer, depth: Int) throws(RESPProtocolError) -> RESPValue? {
        guard depth < maxDepth else { throw RESPProtocolError(description: "nesting deeper than \(maxDepth)") }
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var probe = buffer
        probe.moveReaderIndex(forwardBy: 1)
        guard let line = readLine(&probe) else { return nil }
        let value: RESPValue
        switch type {
        case UInt8(ascii: "+"): value = .simpleString(line)
        case UInt8(ascii: "-"): value = .error(line)
        case UInt8(ascii: ":"): value = .integer(try integer(line))
        case UInt8(ascii: "("): value = .bigNumber(line)
        case UInt8(ascii: ","): value = .double(try double(line))
        case UInt8(ascii: "#"):
            guard line == "t" || line == "f" else { throw RESPProtocolError(description: "bad boolean \(line)") }
            value = .boolean(line == "t")
        case UInt8(ascii: "_"): value = .null
        case UInt8(ascii: "$"), UInt8(ascii: "!"), UInt8(ascii: "="):
            let length = try integer(line)
            if length == -1 {
                value = .null
                break
            }
            guard length >= 0, length <= maxBulkLength else {
                throw RESPProtocolError(description: "bad length \(length)")
            }
            guard probe.readableBytes >= Int(length) + 2, var payload = probe.readSlice(length: Int(length)) else {
                return nil
            }
            guard probe.readInteger(as: UInt16.self) == 0x0D0A else {
                throw RESPProtocolError(description: "bulk string without CRLF")
            }
            switch type {
            case UInt8(ascii: "$"): value = .bulkString(payload)
            case UInt8(ascii: "!"): value = .error(payload.readString(length: payload.readableBytes) ?? "")
            default:
                // Verbatim: a three-letter format and a colon before the text.
                let text = payload.readString(length: payload.readableBytes) ?? ""
                value = .verbatimString(text.count >= 4 ? String(text.dropFirst(4)) : text)
            }
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            let count = try integer(line)
            if count == -1 {
                value = .null
                break
            }
            guard count >= 0, count <= maxElements else { throw RESPProtocolError(description: "bad count \(count)") }
            let isMap = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(Int(count) * (isMap ? 2 : 1), 1024))
            for _ in 0..<(Int(count) * (isMap ? 2 : 1)) {
                guard let element = try parse(&probe, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            switch type {
            case UInt8(ascii: "*"): value = .array(elements)
            case UInt8(ascii: "~"): value = .set(elements)
            case UInt8(ascii: ">"): value = .push(elements)
            case UInt8(ascii: "|"):
                // Attributes describe the value that follows; the value is what the caller wants.
                guard let attributed = try parse(&probe, depth: depth + 1) else { return nil }
                value = attributed
            default:
                value = .map(stride(from: 0, to: elements.count, by: 2).map { (elements[$0], elements[$0 + 1]) })
            }
        default:
            throw RESPProtocolError(description: "unknown type byte \(type)")
        }
        buffer = probe
        return value
    }

    /// The text up to CRLF, consuming it; nil until the CRLF has arrived.
    private static func readLine(_ buffer: inout ByteBuffer) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 0x0D), view.index(after: cr) < view.endIndex,
            view[view.index(after: cr)] == 0x0A
        else { return nil }
        let length = cr - view.startIndex
        let line = buffer.readString(length: length)
        buffer.moveReaderIndex(forwardBy: 2)
        return line
    }

    private static func integer(_ line: String) throws(RESPProtocolError) -> Int64 {
        guard let value = Int64(line) else { throw RESPProtocolError(description: "bad integer \(line)") }
        return value
    }

    private static func double(_ line: String) throws(RESPProtocolError) -> Double {
        switch line {
        case "inf": return .infinity
        case "-inf": return -.infinity
        case "nan": return .nan
        default:
            guard let value = Double(line) else { throw RESPProtocolError(description: "bad double \(line)") }
            return value
        }
    }
}

/// Commands go out as RESP arrays of bulk strings, whatever the protocol version.
public enum RESPEncoder {
    public static func encode(_ arguments: [RESPArgument], into buffer: inout ByteBuffer) {
        buffer.writeString("*\(arguments.count)\r\n")
        for argument in arguments {
            switch argument {
            case .string(let text):
                buffer.writeString("$\(text.utf8.count)\r\n")
                buffer.writeString(text)
            case .bytes(let bytes):
                buffer.writeString("$\(bytes.readableBytes)\r\n")
                buffer.writeImmutableBuffer(bytes)
            }
            buffer.writeStaticString("\r\n")
        }
    }
}

/// One argument of a command: text, or bytes passed through untouched.
public enum RESPArgument: Sendable, ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    case string(String)
    case bytes(ByteBuffer)

    public init(stringLiteral value: String) { self = .string(value) }
    public init(_ value: Int) { self = .string(String(value)) }
}
