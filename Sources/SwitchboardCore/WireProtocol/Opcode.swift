/// RFC 6455 §5.2 opcodes. Values outside this set are reserved and fail the connection.
public enum Opcode: UInt8, Sendable {
    case continuation = 0x0
    case text = 0x1
    case binary = 0x2
    case close = 0x8
    case ping = 0x9
    case pong = 0xA

    /// Close, ping and pong: RFC 6455 limits their payload to 125 bytes and forbids fragmenting them.
    public var isControl: Bool { rawValue & 0x8 != 0 }
}
