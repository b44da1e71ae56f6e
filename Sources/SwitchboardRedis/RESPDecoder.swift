import NIOCore

/// A reply the server sent that is not RESP: the connection cannot be trusted any more.
public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was wrong with the bytes.
    public let description: String
}

/// Incremental RESP2/RESP3 parser: returns a whole value once all its bytes have arrived, nil before. It is
/// resumable: every complete element of an unfinished aggregate is consumed from the buffer and kept here,
/// so a reply arriving over many reads is parsed once (not again from its start on each read) and the caller
/// keeps at most one unfinished scalar. Aggregates are bounded in depth and size so a broken or hostile
/// stream cannot make it allocate without limit.
public struct RESPDecoder: Sendable {
    /// Aggregates nested deeper than this are a protocol error.
    public static let maxDepth = 64
    /// Longest bulk string accepted, in bytes: 512 MiB, Redis's own limit.
    public static let maxBulkLength = 512 << 20
    /// Most elements one aggregate may announce.
    public static let maxElements = 1 << 24

    /// An aggregate whose header has been read and whose elements are still arriving.
    private struct Unfinished: Sendable {
        var type: UInt8
        var remaining: Int
        var elements: [RESPValue]
    }

    /// The aggregates being read, outermost first.
    private var open: [Unfinished] = []

    /// A decoder at the start of a stream; use one per connection.
    public init() {}

    /// The next whole value, consuming its bytes from `buffer`; nil until more bytes arrive. After a throw
    /// the stream cannot be trusted: close the connection.
    public mutating func next(from buffer: inout ByteBuffer) throws(RESPProtocolError) -> RESPValue? {
        while true {
            guard open.count < Self.maxDepth else {
                throw RESPProtocolError(description: "nesting deeper than \(Self.maxDepth)")
            }
            guard let token = try Self.token(&buffer) else { return nil }
            var value: RESPValue
            switch token {
            case .value(let scalar):
                value = scalar
            case .aggregate(let type, let count):
                let isMap = type == UInt8(ascii: "%") || type == UInt8(ascii: "|")
                // An attribute is followed by the value it describes: one more element.
                let remaining = count * (isMap ? 2 : 1) + (type == UInt8(ascii: "|") ? 1 : 0)
                let aggregate = Unfinished(type: type, remaining: remaining, elements: [])
                guard remaining > 0 else {
                    value = Self.build(aggregate)
                    break
                }
                open.append(aggregate)
                open[open.count - 1].elements.reserveCapacity(min(remaining, 1024))
                continue
            }
            // A finished value completes its parent, which may complete its own parent, and so on.
            while !open.isEmpty {
                open[open.count - 1].elements.append(value)
                open[open.count - 1].remaining -= 1
                guard open[open.count - 1].remaining == 0 else { break }
                value = Self.build(open.removeLast())
            }
            if open.isEmpty { return value }
        }
    }

    private enum Token {
        case value(RESPValue)
        case aggregate(UInt8, count: Int)
    }

    private static func build(_ aggregate: Unfinished) -> RESPValue {
        let elements = aggregate.elements
        switch aggregate.type {
        case UInt8(ascii: "~"): return .set(elements)
        case UInt8(ascii: ">"): return .push(elements)
        // Attributes describe the value that follows; the value is what the caller wants.
        case UInt8(ascii: "|"): return elements.last ?? .null
        case UInt8(ascii: "%"):
            return .map(stride(from: 0, to: elements.count - 1, by: 2).map { (elements[$0], elements[$0 + 1]) })
        default: return .array(elements)
        }
    }

    /// One scalar value or one aggregate header, consumed only once all its bytes are there.
    private static func token(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> Token? {
        guard let type = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self) else { return nil }
        var probe = buffer
        probe.moveReaderIndex(forwardBy: 1)
        guard let line = try readLine(&probe) else { return nil }
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
            buffer = probe
            if count == -1 { return .value(.null) }
            guard count >= 0, count <= maxElements else { throw RESPProtocolError(description: "bad count \(count)") }
            return .aggregate(type, count: Int(count))
        default:
            throw RESPProtocolError(description: "unknown type byte \(type)")
        }
        buffer = probe
        return .value(value)
    }

    /// The longest line a reply header or simple value may have before its CRLF: a stream without one
    /// is not RESP, and must not be buffered without bound while waiting for it.
    public static let maxLineLength = 64 << 10

    /// The text up to CRLF, consuming it; nil until the CRLF has arrived.
    private static func readLine(_ buffer: inout ByteBuffer) throws(RESPProtocolError) -> String? {
        let view = buffer.readableBytesView
        guard let cr = view.firstIndex(of: 0x0D), view.index(after: cr) < view.endIndex else {
            guard view.count <= maxLineLength else { throw RESPProtocolError(description: "line without CRLF") }
            return nil
        }
        guard view[view.index(after: cr)] == 0x0A else { throw RESPProtocolError(description: "CR without LF") }
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
