import NIOCore

/// Encodes server-to-client frames (unmasked, final) into one buffer holding header and payload,
/// so one encoded frame can be written to any number of connections without copying.
public enum FrameEncoder {
    /// Size of an unmasked frame header for a payload of this many bytes: 2, 4 or 10.
    public static func headerSize(payloadLength: Int) -> Int {
        payloadLength < 126 ? 2 : (payloadLength <= 0xFFFF ? 4 : 10)
    }

    /// A final frame carrying `payload`'s readable bytes (copied; `payload` itself is left as it was).
    public static func encode(
        _ opcode: Opcode,
        payload: ByteBuffer,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var frame = allocator.buffer(capacity: headerSize(payloadLength: payload.readableBytes) + payload.readableBytes)
        writeHeader(opcode, payloadLength: payload.readableBytes, into: &frame)
        frame.writeImmutableBuffer(payload)
        return frame
    }

    /// A final frame carrying `bytes`.
    public static func encode(
        _ opcode: Opcode,
        bytes: some Collection<UInt8>,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var frame = allocator.buffer(capacity: headerSize(payloadLength: bytes.count) + bytes.count)
        writeHeader(opcode, payloadLength: bytes.count, into: &frame)
        frame.writeBytes(bytes)
        return frame
    }

    /// A final text frame carrying `text` as UTF-8.
    public static func encodeText(_ text: String, allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer
    {
        encode(.text, bytes: text.utf8, allocator: allocator)
    }

    /// A close frame; the reason is cut at a character boundary to fit the 123 bytes a control frame allows.
    public static func encodeClose(
        _ code: CloseCode,
        reason: String,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) -> ByteBuffer {
        var payload = allocator.buffer(capacity: 125)
        payload.writeInteger(code.rawValue)
        var used = 0
        for scalar in reason.unicodeScalars {
            let width = String(scalar).utf8.count
            guard used + width <= 123 else { break }
            payload.writeString(String(scalar))
            used += width
        }
        return encode(.close, payload: payload, allocator: allocator)
    }

    static func writeHeader(_ opcode: Opcode, payloadLength: Int, into frame: inout ByteBuffer) {
        frame.writeInteger(0x80 | opcode.rawValue)
        if payloadLength < 126 {
            frame.writeInteger(UInt8(payloadLength))
        } else if payloadLength <= 0xFFFF {
            frame.writeInteger(UInt8(126))
            frame.writeInteger(UInt16(payloadLength))
        } else {
            frame.writeInteger(UInt8(127))
            frame.writeInteger(UInt64(payloadLength))
        }
    }
}
