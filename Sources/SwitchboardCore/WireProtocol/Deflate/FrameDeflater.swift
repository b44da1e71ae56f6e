import CompressNIO
import NIOCore

/// Compresses encoded server frames for the connections of one event loop (RFC 7692 §7.2.1). Without
/// context takeover a compressed frame depends only on the payload and the window, so a broadcast is
/// compressed once per loop and window and the result is shared by every receiver, like the plain frame.
/// Not thread-safe: used on its loop only.
package final class FrameDeflater {
    private let options: DeflateOptions
    private var compressors: [Int: ZlibCompressor] = [:]
    /// The last frames compressed, by identity of the source buffer (kept alive here, so its storage
    /// address cannot be reused while cached): the receivers of one broadcast ask for the same frame one
    /// after another. Four entries keep at most four payloads alive past their delivery.
    private var recent: [(source: ByteBuffer, windowBits: Int, compressed: ByteBuffer?)] = []
    private var nextSlot = 0
    /// Frames compressed so far: what sharing saves shows as this staying at one per broadcast and window.
    package private(set) var compressedCount = 0
    private static let cacheSize = 4

    package init(options: DeflateOptions) {
        self.options = options
    }

    /// The compressed form of an encoded final text or binary frame, or nil when it goes out as is
    /// (a control frame, below the minimum size, or not smaller compressed).
    package func compressed(_ frame: ByteBuffer, windowBits: Int) -> ByteBuffer? {
        guard let first = frame.getInteger(at: frame.readerIndex, as: UInt8.self),
            first & 0xF0 == 0x80, let opcode = Opcode(rawValue: first & 0x0F), opcode == .text || opcode == .binary,
            let second = frame.getInteger(at: frame.readerIndex + 1, as: UInt8.self)
        else { return nil }
        let headerSize = second < 126 ? 2 : (second == 126 ? 4 : 10)
        guard frame.readableBytes - headerSize >= options.minSize else { return nil }

        let identity = frame.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) }
        for entry in recent where entry.windowBits == windowBits && entry.source.readableBytes == frame.readableBytes {
            if entry.source.withUnsafeReadableBytes({ UInt(bitPattern: $0.baseAddress) }) == identity {
                return entry.compressed
            }
        }
        let result = compress(frame, headerSize: headerSize, opcode: opcode, windowBits: windowBits)
        if recent.count < Self.cacheSize {
            recent.append((frame, windowBits, result))
        } else {
            recent[nextSlot] = (frame, windowBits, result)
            nextSlot = (nextSlot + 1) % Self.cacheSize
        }
        return result
    }

    private func compress(_ frame: ByteBuffer, headerSize: Int, opcode: Opcode, windowBits: Int) -> ByteBuffer? {
        guard let compressor = compressor(windowBits: windowBits),
            var payload = frame.getSlice(at: frame.readerIndex + headerSize, length: frame.readableBytes - headerSize)
        else { return nil }
        let plainSize = payload.readableBytes
        compressedCount += 1
        // Room for the longest header in front, so the frame is one buffer written once.
        var output = ByteBufferAllocator().buffer(capacity: 10 + compressor.maxSize(from: payload))
        output.moveWriterIndex(forwardBy: 10)
        output.moveReaderIndex(forwardBy: 10)
        do {
            try compressor.reset()
            try compressor.deflate(from: &payload, to: &output, flush: .sync)
        } catch {
            return nil
        }
        // A sync flush ends with 00 00 FF FF, which the receiver appends itself.
        guard output.readableBytes >= 4 else { return nil }
        output.moveWriterIndex(to: output.writerIndex - 4)
        let size = output.readableBytes
        guard size < plainSize else { return nil }
        var header = ByteBufferAllocator().buffer(capacity: 10)
        FrameEncoder.writeHeader(opcode, payloadLength: size, into: &header)
        header.setInteger(0xC0 | opcode.rawValue, at: 0)  // FIN and RSV1: a compressed message
        output.moveReaderIndex(to: 10 - header.readableBytes)
        output.setBuffer(header, at: output.readerIndex)
        return output
    }

    private func compressor(windowBits: Int) -> ZlibCompressor? {
        if let existing = compressors[windowBits] { return existing }
        let configuration = ZlibConfiguration(
            windowSize: Int32(windowBits), compressionLevel: Int32(options.level), memoryLevel: 8)
        guard let created = try? ZlibCompressor(algorithm: .deflate, configuration: configuration) else { return nil }
        compressors[windowBits] = created
        return created
    }
}
