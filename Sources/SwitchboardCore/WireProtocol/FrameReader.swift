import NIOCore

/// A frame header as read off the wire, already validated against RFC 6455 §5.2.
package struct FrameHeader: Equatable, Sendable {
    package var fin: Bool
    package var opcode: Opcode
    package var payloadLength: Int
    /// RSV1 on the first frame of a message: its payload is deflated (RFC 7692 §6).
    package var compressed = false
}

/// What the reader found next in the byte stream: a header, a chunk of unmasked payload, or the end
/// of the current frame. Payload is streamed rather than buffered whole so that a text frame can be
/// UTF-8-checked while it arrives and a large frame does not sit twice in memory.
package enum FrameEvent: Equatable, Sendable {
    case header(FrameHeader)
    case payload(ByteBuffer)
    case frameEnd
}

/// Incremental parser for client-to-server frames. Hand-written rather than NIOWebSocket's decoder,
/// which waits for whole frames, accepts reserved bits and opcodes and unmasked frames.
package struct FrameReader: Sendable {
    private enum State: Sendable {
        case header
        case payload(remaining: Int, mask: UInt32, maskOffset: Int)
    }

    private var state: State = .header
    /// The largest payload a single frame may announce: larger frames fail with 1009 at the header.
    package var maxFrameSize: Int
    /// permessage-deflate was negotiated: RSV1 may mark the first frame of a data message.
    package var allowsCompression: Bool

    package init(maxFrameSize: Int, allowsCompression: Bool = false) {
        self.maxFrameSize = maxFrameSize
        self.allowsCompression = allowsCompression
    }

    /// Returns the next event, or nil when `buffer` holds too few bytes to make progress.
    package mutating func next(from buffer: inout ByteBuffer) throws(WebSocketFailure) -> FrameEvent? {
        switch state {
        case .header:
            return try readHeader(from: &buffer)
        case .payload(let remaining, let mask, let maskOffset):
            if remaining == 0 {
                state = .header
                return .frameEnd
            }
            let count = min(remaining, buffer.readableBytes)
            guard count > 0, var chunk = buffer.readSlice(length: count) else { return nil }
            chunk.unmask(key: mask, offset: maskOffset)
            state = .payload(remaining: remaining - count, mask: mask, maskOffset: (maskOffset + count) & 3)
            return .payload(chunk)
        }
    }

    private mutating func readHeader(from buffer: inout ByteBuffer) throws(WebSocketFailure) -> FrameEvent? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }

        guard let opcode = Opcode(rawValue: first & 0x0F) else { throw .protocolError("reserved opcode") }
        let compressed = first & 0x40 != 0
        guard first & 0x30 == 0, !compressed || (allowsCompression && (opcode == .text || opcode == .binary)) else {
            throw .protocolError(
                allowsCompression
                    ? "RSV1 set on a control or continuation frame" : "reserved bits set without a negotiated extension"
            )
        }
        let fin = first & 0x80 != 0
        guard second & 0x80 != 0 else { throw .protocolError("client frames must be masked") }

        var length = Int(second & 0x7F)
        var offset = 2
        if length == 126 {
            guard let extended = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(extended)
            offset = 4
        } else if length == 127 {
            guard let extended = buffer.getInteger(at: start + 2, as: UInt64.self) else { return nil }
            guard extended & (1 << 63) == 0 else { throw .protocolError("payload length has its top bit set") }
            guard extended <= UInt64(maxFrameSize) else { throw .tooBig(maxFrameSize) }
            length = Int(extended)
            offset = 10
        }
        if opcode.isControl {
            guard fin else { throw .protocolError("fragmented control frame") }
            guard length <= 125 else { throw .protocolError("control frame payload over 125 bytes") }
        }
        guard length <= maxFrameSize else { throw .tooBig(maxFrameSize) }
        guard let mask = buffer.getInteger(at: start + offset, as: UInt32.self) else { return nil }

        buffer.moveReaderIndex(forwardBy: offset + 4)
        state = .payload(remaining: length, mask: mask, maskOffset: 0)
        return .header(FrameHeader(fin: fin, opcode: opcode, payloadLength: length, compressed: compressed))
    }
}

extension ByteBuffer {
    /// XORs the readable bytes with a big-endian 32-bit masking key, starting `offset` bytes into it.
    /// Works a word at a time: unmasking is the one per-byte cost on the inbound path.
    mutating func unmask(key: UInt32, offset: Int) {
        guard key != 0 else { return }
        let rotated = offset == 0 ? key : (key << (UInt32(offset) * 8)) | (key >> (32 - UInt32(offset) * 8))
        // Big-endian key bytes k0 k1 k2 k3 as they appear on the wire.
        let k0 = UInt8(truncatingIfNeeded: rotated >> 24)
        let k1 = UInt8(truncatingIfNeeded: rotated >> 16)
        let k2 = UInt8(truncatingIfNeeded: rotated >> 8)
        let k3 = UInt8(truncatingIfNeeded: rotated)
        let word = UInt64(k0) | UInt64(k1) << 8 | UInt64(k2) << 16 | UInt64(k3) << 24
        let wide = word | word << 32  // little-endian memory layout of k0 k1 k2 k3 k0 k1 k2 k3
        self.withUnsafeMutableReadableBytes { bytes in
            var index = 0
            let count = bytes.count
            while index &+ 8 <= count {
                let value = bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
                bytes.storeBytes(of: value ^ wide.littleEndianIfNeeded, toByteOffset: index, as: UInt64.self)
                index &+= 8
            }
            let keys = (k0, k1, k2, k3)
            while index < count {
                let k: UInt8
                switch index & 3 {
                case 0: k = keys.0
                case 1: k = keys.1
                case 2: k = keys.2
                default: k = keys.3
                }
                bytes[index] ^= k
                index &+= 1
            }
        }
    }
}

extension UInt64 {
    /// The wide mask above is built for little-endian memory; swap it on big-endian hosts.
    fileprivate var littleEndianIfNeeded: UInt64 { UInt64(littleEndian: self) }
}
