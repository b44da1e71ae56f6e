import CompressNIO
import NIOCore
import Testing

@testable import SwitchboardCore

/// What a client compressor produces for one message (RFC 7692 §7.2.1): raw deflate, sync flush, the
/// trailing 00 00 FF FF removed. `compressor` is kept by the caller for context takeover.
func clientDeflate(_ bytes: [UInt8], compressor: ZlibCompressor? = nil) throws -> [UInt8] {
    let compressor = try compressor ?? ZlibCompressor(algorithm: .deflate)
    var input = ByteBuffer(bytes: bytes)
    var output = ByteBuffer()
    output.reserveCapacity(compressor.maxSize(from: input) + 64)
    try compressor.deflate(from: &input, to: &output, flush: .sync)
    return Array(output.readableBytesView.dropLast(4))
}

/// A compressed client frame: RSV1 on the first frame of the message only.
func compressedClientFrame(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true) -> ByteBuffer {
    var frame = clientFrame(opcode, payload, fin: fin)
    frame.setInteger(frame.getInteger(at: 0, as: UInt8.self).map { $0 | 0x40 } ?? 0, at: 0)
    return frame
}

/// Inflates a compressed server frame's payload as a client would.
func clientInflate(_ payload: ByteBuffer) throws -> [UInt8] {
    var input = payload
    input.writeBytes([0x00, 0x00, 0xFF, 0xFF])
    let inflater = try ZlibDecompressor(algorithm: .deflate)
    var output = ByteBuffer()
    output.reserveCapacity(1 << 20)
    do { try inflater.inflate(from: &input, to: &output) } catch let error as CompressNIOError
        where error == .inputBufferOverflow
    {}
    return Array(output.readableBytesView)
}

@Suite("permessage-deflate", .timeLimit(.minutes(5)))
struct DeflateTests {
    static let both = "permessage-deflate; server_no_context_takeover; client_no_context_takeover"

    @Test(
        "negotiation answers what the offer allows",
        arguments: [
            ("permessage-deflate", both, 15),
            ("permessage-deflate; client_max_window_bits", both, 15),
            ("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=10", both, 15),
            (
                "permessage-deflate; server_max_window_bits=10",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover",
                10
            ),
            (
                "permessage-deflate; server_max_window_bits=\"12\"; server_no_context_takeover",
                "permessage-deflate; server_no_context_takeover; server_max_window_bits=12; client_no_context_takeover",
                12
            ),
            // zlib cannot compress with an 8-bit window: that offer is declined, the next one taken.
            ("permessage-deflate; server_max_window_bits=8, permessage-deflate", both, 15),
        ])
    func negotiation(offer: String, response: String, bits: Int) throws {
        let accepted = try #require(DeflateNegotiation.negotiate([offer], options: DeflateOptions()))
        #expect(accepted.response == response)
        #expect(accepted.serverWindowBits == bits)
        #expect(!accepted.clientContextTakeover)
    }

    @Test(
        "malformed or unsupported offers are declined",
        arguments: [
            "permessage-deflate; server_max_window_bits=8", "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16", "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7", "permessage-deflate; client_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; mystery", "x-webkit-deflate-frame", "", "permessage-deflate; =",
            "permessage-deflate; =15", "permessage-deflate; server_max_window_bits=",
        ])
    func declined(offer: String) {
        #expect(DeflateNegotiation.negotiate([offer], options: DeflateOptions()) == nil)
    }

    @Test func clientContextTakeoverWhenAllowed() throws {
        var options = DeflateOptions()
        options.clientContextTakeover = true
        let kept = try #require(DeflateNegotiation.negotiate(["permessage-deflate"], options: options))
        #expect(kept.clientContextTakeover)
        #expect(kept.response == "permessage-deflate; server_no_context_takeover")
        // The client asked not to keep its context: the answer confirms it, and the server keeps nothing.
        let declined = try #require(
            DeflateNegotiation.negotiate(["permessage-deflate; client_no_context_takeover"], options: options))
        #expect(!declined.clientContextTakeover)
        #expect(declined.response == Self.both)
    }

    @Test func compressedTextAndBinaryRoundTrip() throws {
        let text = Array(String(repeating: "hello, compressed world ", count: 100).utf8)
        let binary = (0..<3000).map { UInt8($0 % 7) }
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool())
        var input = compressedClientFrame(1, try clientDeflate(text))
        input.writeImmutableBuffer(compressedClientFrame(2, try clientDeflate(binary)))
        input.writeImmutableBuffer(clientFrame(1, Array("plain".utf8)))  // uncompressed messages stay allowed
        let messages = try assembler.feedBytewise(input)
        #expect(
            messages == [
                .text(ByteBuffer(bytes: text)), .binary(ByteBuffer(bytes: binary)), .text(ByteBuffer(string: "plain")),
            ])
    }

    @Test func fragmentedCompressedMessageWithControlFrameBetween() throws {
        let text = Array(String(repeating: "fragment ", count: 200).utf8)
        let compressed = try clientDeflate(text)
        let cut = compressed.count / 2
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool())
        var input = compressedClientFrame(1, Array(compressed[..<cut]), fin: false)
        input.writeImmutableBuffer(clientFrame(9, [1]))
        input.writeImmutableBuffer(clientFrame(0, Array(compressed[cut...])))
        let messages = try assembler.feed(input)
        #expect(messages == [.ping(ByteBuffer(bytes: [1])), .text(ByteBuffer(bytes: text))])
    }

    @Test func contextTakeoverKeepsTheWindow() throws {
        let compressor = try ZlibCompressor(algorithm: .deflate)
        let text = Array(
            #"{"channel":"chat:lobby","data":{"user":"ada","text":"the quick brown fox jumps over"}}"#.utf8)
        let first = try clientDeflate(text, compressor: compressor)
        let second = try clientDeflate(text, compressor: compressor)  // refers back into the first message
        #expect(second.count < first.count / 4)  // only a back-reference
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool(), contextTakeover: true)
        var input = compressedClientFrame(1, first)
        input.writeImmutableBuffer(compressedClientFrame(1, second))
        #expect(try assembler.feed(input) == [.text(ByteBuffer(bytes: text)), .text(ByteBuffer(bytes: text))])
    }

    @Test(
        "RSV1 where it cannot be",
        arguments: [
            [compressedClientFrame(9, [])],
            [clientFrame(1, [0x41], fin: false), compressedClientFrame(0, [0x41])],
        ])
    func misplacedRSV1(frames: [ByteBuffer]) {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool())
        #expect(throws: WebSocketFailure.self) { for frame in frames { _ = try assembler.feed(frame) } }
    }

    @Test func rsv1WithoutNegotiationIsAProtocolError() {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20)
        #expect(throws: WebSocketFailure(.protocolError, "reserved bits set without a negotiated extension")) {
            _ = try assembler.feed(compressedClientFrame(1, try clientDeflate([1, 2, 3])))
        }
    }

    @Test(
        "a decompression bomb fails with 1009 after at most the limit", arguments: [100, 1000])
    func bomb(ratio: Int) throws {
        // Zeros compress about 1000:1; mixing in a varied byte every `ratio` bytes brings it down to ~100:1.
        let limit = 64 * 1024
        let expanded = (0..<(limit * ratio / 10)).map { ratio == 100 && $0 % 37 == 0 ? UInt8($0 % 251) : 0 }
        let compressed = try clientDeflate(expanded)
        #expect(compressed.count < limit)
        var assembler = MessageAssembler(maxMessageSize: limit, inflaters: InflaterPool())
        #expect(throws: WebSocketFailure(.messageTooBig, "message exceeds \(limit) bytes")) {
            _ = try assembler.feed(compressedClientFrame(2, compressed))
        }
    }

    @Test func garbageIsInvalidPayload() {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool())
        #expect(throws: WebSocketFailure(.invalidPayload, "invalid compressed data")) {
            _ = try assembler.feed(compressedClientFrame(1, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))
        }
    }

    @Test func invalidUTF8InsideCompressedTextIs1007() throws {
        var assembler = MessageAssembler(maxMessageSize: 1 << 20, inflaters: InflaterPool())
        let bad = try clientDeflate(Array(repeating: 0x41, count: 500) + [0xED, 0xA0, 0x80])
        let failure = #expect(throws: WebSocketFailure.self) { _ = try assembler.feed(compressedClientFrame(1, bad)) }
        #expect(failure?.code == .invalidPayload)
    }

    @Test func frameDeflaterSharesOneCompressedFramePerWindow() throws {
        let deflater = FrameDeflater(options: DeflateOptions())
        let text = String(repeating: "broadcast to many receivers; ", count: 50)
        let frame = FrameEncoder.encodeText(text)
        let first = try #require(deflater.compressed(frame, windowBits: 15))
        let again = try #require(deflater.compressed(frame, windowBits: 15))
        let address = { (buffer: ByteBuffer) in buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) } }
        #expect(address(first) == address(again))
        #expect(deflater.compressedCount == 1)
        let smallWindow = try #require(deflater.compressed(frame, windowBits: 9))
        #expect(deflater.compressedCount == 2)

        for compressedFrame in [first, smallWindow] {
            let bytes = Array(compressedFrame.readableBytesView)
            #expect(bytes[0] == 0xC1)  // FIN, RSV1, text
            #expect(Int(bytes[1]) == bytes.count - 2)
            #expect(try clientInflate(ByteBuffer(bytes: bytes.dropFirst(2))) == Array(text.utf8))
        }
    }

    @Test func smallControlAndIncompressibleFramesGoAsTheyAre() {
        let deflater = FrameDeflater(options: DeflateOptions(minSize: 100))
        #expect(deflater.compressed(FrameEncoder.encodeText("short"), windowBits: 15) == nil)
        #expect(
            deflater.compressed(FrameEncoder.encode(.ping, bytes: [UInt8](repeating: 0, count: 120)), windowBits: 15)
                == nil)
        var random = SystemRandomNumberGenerator()
        let noise = (0..<4000).map { _ in UInt8.random(in: 0...255, using: &random) }
        #expect(deflater.compressed(FrameEncoder.encode(.binary, bytes: noise), windowBits: 15) == nil)
    }
}
