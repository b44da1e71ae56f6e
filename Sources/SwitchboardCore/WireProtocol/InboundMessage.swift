import NIOCore

/// A complete message or control frame from the peer, after reassembly and validation.
package enum InboundMessage: Equatable, Sendable {
    case text(ByteBuffer)
    case binary(ByteBuffer)
    case ping(ByteBuffer)
    case pong(ByteBuffer)
    /// `code` is nil when the close frame had no payload (status 1005).
    case close(code: CloseCode?, reason: String)
}
