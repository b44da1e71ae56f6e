import NIOCore

/// Commands go out as RESP arrays of bulk strings, whatever the protocol version.
public enum RESPEncoder {
    /// Appends one command, `arguments` as an array of bulk strings, to `buffer`.
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

    /// A literal argument: `"GET"`.
    public init(stringLiteral value: String) { self = .string(value) }
    /// An integer, sent as its decimal text.
    public init(_ value: Int) { self = .string(String(value)) }
}
