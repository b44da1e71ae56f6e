import NIOCore

@testable import SwitchboardCore

/// A masked client frame, as a browser would send it.
func clientFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D])
    -> ByteBuffer
{
    var buffer = ByteBuffer()
    buffer.writeInteger((fin ? 0x80 : 0) | opcode)
    if payload.count < 126 {
        buffer.writeInteger(UInt8(0x80 | payload.count))
    } else if payload.count <= 0xFFFF {
        buffer.writeInteger(UInt8(0x80 | 126))
        buffer.writeInteger(UInt16(payload.count))
    } else {
        buffer.writeInteger(UInt8(0x80 | 127))
        buffer.writeInteger(UInt64(payload.count))
    }
    buffer.writeBytes(mask)
    buffer.writeBytes(payload.enumerated().map { $0.element ^ mask[$0.offset % 4] })
    return buffer
}

extension MessageAssembler {
    /// Feeds the bytes one at a time (the worst split the network can produce) and collects messages.
    mutating func feedBytewise(_ buffer: ByteBuffer) throws(WebSocketFailure) -> [InboundMessage] {
        var out: [InboundMessage] = []
        var pending = ByteBuffer()
        for byte in buffer.readableBytesView {
            pending.writeInteger(byte)
            while let message = try next(from: &pending) { out.append(message) }
        }
        return out
    }

    mutating func feed(_ buffer: ByteBuffer) throws(WebSocketFailure) -> [InboundMessage] {
        var buffer = buffer
        var out: [InboundMessage] = []
        while let message = try next(from: &buffer) { out.append(message) }
        return out
    }
}
