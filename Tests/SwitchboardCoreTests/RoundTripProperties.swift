import NIOCore
import PropertyBased
import SwitchboardCore
import Testing

/// The wire parsers against generated input: what is framed comes back whole whatever the reads, and the
/// UTF-8 check agrees with Swift's own decoder on any bytes. The fuzz targets (`switchboard-fuzz`) look
/// for crashes; these look for wrong answers.
@Suite("Round trips, property-based", .timeLimit(.minutes(5)))
struct RoundTripProperties {
    /// A client frame, masked as RFC 6455 requires.
    static func frame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        if payload.count < 126 {
            bytes.append(0x80 | UInt8(payload.count))
        } else {
            bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        }
        let mask: [UInt8] = [0x37, 0xFA, 0x21, 0x3D]
        bytes += mask
        bytes += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
        return bytes
    }

    @Test func binaryMessagesComeBackWholeWhateverTheReadsAndFragments() async {
        await propertyCheck(input: Gen.uint8().array(of: 0...700), Gen.int(in: 1...97), Gen.int(in: 0...700)) {
            payload, step, split in
            let cut = min(split, payload.count)
            let stream =
                cut == 0 || cut == payload.count
                ? Self.frame(2, payload, fin: true)
                : Self.frame(2, Array(payload[..<cut]), fin: false) + Self.frame(9, [1, 2], fin: true)
                    + Self.frame(0, Array(payload[cut...]), fin: true)
            var assembler = MessageAssembler(maxMessageSize: 1 << 16)
            var buffer = ByteBuffer()
            var messages: [InboundMessage] = []
            for start in stride(from: 0, to: stream.count, by: step) {
                buffer.writeBytes(stream[start..<min(start + step, stream.count)])
                while let message = try? assembler.next(from: &buffer) { messages.append(message) }
            }
            let data = messages.compactMap { message -> [UInt8]? in
                if case .binary(let bytes) = message { return Array(bytes.readableBytesView) }
                return nil
            }
            #expect(data == [payload])
        }
    }

    @Test func textComesBackWholeWhateverTheReads() async {
        await propertyCheck(input: Gen.unicodeScalar(in: "a"..."\u{3000}").array(of: 0...200), Gen.int(in: 1...13)) {
            scalars, step in
            var text = ""
            text.unicodeScalars.append(contentsOf: scalars)
            let stream = Self.frame(1, Array(text.utf8), fin: true)
            var assembler = MessageAssembler(maxMessageSize: 1 << 16)
            var buffer = ByteBuffer()
            var received: [String] = []
            for start in stride(from: 0, to: stream.count, by: step) {
                buffer.writeBytes(stream[start..<min(start + step, stream.count)])
                while let message = try? assembler.next(from: &buffer) {
                    if case .text(let bytes) = message { received.append(String(buffer: bytes)) }
                }
            }
            #expect(received == [text])
        }
    }

    @Test func theUTF8CheckAgreesWithSwiftOnAnyBytes() async {
        await propertyCheck(count: 500, input: Gen.uint8().array(of: 0...40)) { bytes in
            var validator = UTF8Validator()
            let valid = bytes.withUnsafeBytes { validator.feed($0) } && validator.isAtBoundary
            #expect(valid == (String(validating: bytes, as: UTF8.self) != nil), "\(bytes)")
        }
    }

    /// What the server compresses (permessage-deflate) inflates back to what it was, through the bounded
    /// inflater a client's frames go through.
    @Test func compressedMessagesInflateToWhatWasSent() async {
        await propertyCheck(input: Gen.uint8(in: 0...3).array(of: 300...3000)) { payload in
            let deflater = FrameDeflater(options: DeflateOptions())
            let frame = FrameEncoder.encode(.binary, bytes: payload)
            guard var compressed = deflater.compressed(frame, windowBits: 15) else {
                Issue.record("low-entropy data did not compress")
                return
            }
            let lengthCode = (compressed.getInteger(at: compressed.readerIndex + 1, as: UInt8.self) ?? 0) & 0x7F
            compressed.moveReaderIndex(forwardBy: lengthCode < 126 ? 2 : lengthCode == 126 ? 4 : 10)
            do {
                let inflater = try MessageInflater()
                var output: ByteBuffer?
                try inflater.inflate(compressed, into: &output, limit: 1 << 20) { _ in true }
                try inflater.inflate(MessageInflater.tail, into: &output, limit: 1 << 20) { _ in true }
                #expect(Array(output?.readableBytesView ?? ByteBuffer().readableBytesView) == payload)
            } catch {
                Issue.record("inflating failed: \(error)")
            }
        }
    }
}
