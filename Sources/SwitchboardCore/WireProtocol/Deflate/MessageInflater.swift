import CompressNIO
import NIOCore

/// Inflates the payload of one compressed message (RFC 7692 §7.2.2) without ever holding more than the
/// maximum message size: output goes through a fixed scratch buffer and is checked before it is kept, so
/// a small frame that would expand to gigabytes fails with 1009 after at most `limit` bytes.
package final class MessageInflater {
    private let zlib: ZlibDecompressor
    private var scratch: ByteBuffer
    /// The peer ended the deflate stream (a final block); what follows in the message is ignored.
    private var streamEnded = false

    package init() throws {
        zlib = try ZlibDecompressor(algorithm: .deflate, windowSize: 15)
        scratch = ByteBufferAllocator().buffer(capacity: 16 * 1024)
    }

    /// The four bytes a sender strips from the end of every message (§7.2.1), fed back at its end.
    package static let tail: ByteBuffer = {
        var buffer = ByteBufferAllocator().buffer(capacity: 4)
        buffer.writeBytes([0x00, 0x00, 0xFF, 0xFF])
        return buffer
    }()

    /// Inflates `input`, appending to `output`, and hands each piece to `check` (UTF-8 validation) first.
    /// Throws `tooBig` as soon as `output` would pass `limit` bytes.
    package func inflate(
        _ input: ByteBuffer, into output: inout ByteBuffer?, limit: Int,
        check: (UnsafeRawBufferPointer) -> Bool
    ) throws(WebSocketFailure) {
        var input = input
        var outputSize = output?.readableBytes ?? 0
        while !streamEnded {
            scratch.clear()
            var scratchFull = false
            do {
                try zlib.inflate(from: &input, to: &scratch)
                // A normal return with input left means the stream ended (Z_STREAM_END).
                streamEnded = input.readableBytes > 0
            } catch let error as CompressNIOError where error == .bufferOverflow {
                scratchFull = true
            } catch let error as CompressNIOError where error == .inputBufferOverflow {
                // All input consumed and nothing more to produce until the next frame.
            } catch {
                throw WebSocketFailure(.invalidPayload, "invalid compressed data")
            }
            outputSize += scratch.readableBytes
            guard outputSize <= limit else { throw .tooBig(limit) }
            if scratch.readableBytes > 0 {
                guard scratch.withUnsafeReadableBytes(check) else { throw .invalidUTF8() }
                if output == nil {
                    output = ByteBufferAllocator().buffer(capacity: scratch.readableBytes)
                }
                output?.writeBuffer(&scratch)
            }
            guard scratchFull || input.readableBytes > 0 else { return }
        }
    }

    /// Between two messages of a connection with context takeover: the window is kept unless the peer
    /// ended its deflate stream, after which its next message starts a new one.
    package func endMessage() {
        if streamEnded { reset() }
    }

    /// Ready for the next message of a connection without context takeover (or one taken from the pool).
    package func reset() {
        streamEnded = false
        try? zlib.reset()
    }
}

/// Idle inflaters of one event loop. Without client context takeover an inflater is needed only while a
/// compressed message arrives, so connections borrow one per message and idle connections hold none.
/// Not thread-safe: used on its loop only.
package final class InflaterPool {
    private var idle: [MessageInflater] = []
    private let maxIdle: Int

    package init(maxIdle: Int = 8) { self.maxIdle = maxIdle }

    package func take() throws(WebSocketFailure) -> MessageInflater {
        if let inflater = idle.popLast() { return inflater }
        do { return try MessageInflater() } catch { throw WebSocketFailure(.internalError, "out of memory") }
    }

    package func give(_ inflater: MessageInflater) {
        inflater.reset()
        if idle.count < maxIdle { idle.append(inflater) }
    }
}
