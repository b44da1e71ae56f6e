import NIOCore
import SwitchboardCore

/// A frame from the server (server frames are never masked).
public struct ServerFrame: Sendable, Equatable {
    /// The final frame of its message.
    public var fin: Bool
    /// The raw 4-bit opcode; compare with `Opcode.rawValue`. Unknown values are passed through.
    public var opcode: UInt8
    /// The frame's payload, a slice of the bytes read (still compressed when `compressed`).
    public var payload: ByteBuffer
    /// RSV1: the payload is deflated (permessage-deflate); this client does not inflate it itself.
    public var compressed = false
}

/// Parses server-to-client frames. Kept minimal: the client trusts the server's framing and only
/// needs to split frames; it exists beside `FrameReader` because that one demands client masking.
struct ServerFrameParser {
    /// Returns the next whole frame, or nil when more bytes are needed.
    mutating func next(from buffer: inout ByteBuffer) -> ServerFrame? {
        let start = buffer.readerIndex
        guard let first = buffer.getInteger(at: start, as: UInt8.self),
            let second = buffer.getInteger(at: start + 1, as: UInt8.self)
        else { return nil }
        var length = Int(second & 0x7F)
        var offset = 2
        if length == 126 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt16.self) else { return nil }
            length = Int(value)
            offset = 4
        } else if length == 127 {
            guard let value = buffer.getInteger(at: start + 2, as: UInt64.self), value < UInt64(Int.max / 2) else {
                return nil
            }
            length = Int(value)
            offset = 10
        }
        guard buffer.readableBytes >= offset + length else { return nil }
        buffer.moveReaderIndex(forwardBy: offset)
        guard let payload = buffer.readSlice(length: length) else { return nil }
        return ServerFrame(
            fin: first & 0x80 != 0, opcode: first & 0x0F, payload: payload, compressed: first & 0x40 != 0)
    }
}

/// Encodes client-to-server frames, masked as RFC 6455 requires.
public enum ClientFrameEncoder {
    /// Any frame, valid or not: `rsv` goes into the three RSV bits (4 is RSV1), and `masked: false`
    /// produces the unmasked frame a server must reject.
    public static func encode(
        opcode: UInt8, fin: Bool = true, rsv: UInt8 = 0, payload: some Collection<UInt8>, masked: Bool = true,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var frame = allocator.buffer(capacity: payload.count + 14)
        frame.writeInteger((fin ? 0x80 : 0) | (rsv & 0x7) << 4 | (opcode & 0x0F))
        let maskBit: UInt8 = masked ? 0x80 : 0
        if payload.count < 126 {
            frame.writeInteger(maskBit | UInt8(payload.count))
        } else if payload.count <= 0xFFFF {
            frame.writeInteger(maskBit | 126)
            frame.writeInteger(UInt16(payload.count))
        } else {
            frame.writeInteger(maskBit | 127)
            frame.writeInteger(UInt64(payload.count))
        }
        guard masked else {
            frame.writeBytes(payload)
            return frame
        }
        let key = (
            UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255), UInt8.random(in: 0...255)
        )
        frame.writeMultipleIntegers(key.0, key.1, key.2, key.3)
        var index = 0
        for byte in payload {
            let k: UInt8
            switch index & 3 {
            case 0: k = key.0
            case 1: k = key.1
            case 2: k = key.2
            default: k = key.3
            }
            frame.writeInteger(byte ^ k)
            index += 1
        }
        return frame
    }

    /// A final, masked text frame.
    public static func text(_ text: String) -> ByteBuffer {
        encode(opcode: Opcode.text.rawValue, payload: Array(text.utf8))
    }

    /// A masked close frame; with `code` nil the payload is empty and `reason` is dropped.
    public static func close(code: UInt16?, reason: String = "") -> ByteBuffer {
        var payload: [UInt8] = []
        if let code { payload = [UInt8(code >> 8), UInt8(code & 0xFF)] + Array(reason.utf8) }
        return encode(opcode: Opcode.close.rawValue, payload: payload)
    }
}
