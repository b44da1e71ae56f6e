import NIOCore
import Testing

@testable import SwitchboardCore

@Suite("Wire protocol", .timeLimit(.minutes(5)))
struct WireProtocolTests {
    @Test func utf8ValidatorAcceptsValidAndRejectsInvalid() {
        #expect(UTF8Validator.isValid(Array("Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞".utf8)))
        #expect(!UTF8Validator.isValid([0xED, 0xA0, 0x80]))  // surrogate
        #expect(!UTF8Validator.isValid([0xF4, 0x90, 0x80, 0x80]))  // above U+10FFFF
        #expect(!UTF8Validator.isValid([0xC0, 0xAF]))  // overlong
        #expect(!UTF8Validator.isValid([0xE2, 0x82]))  // truncated
        #expect(!UTF8Validator.isValid([0xFF]))
    }

    @Test func utf8ValidatorFailsAtTheOffendingChunk() {
        var validator = UTF8Validator()
        #expect([UInt8]([0xCE, 0xBA, 0xE1]).withUnsafeBytes { validator.feed($0) })
        #expect(!validator.isAtBoundary)
        #expect([UInt8]([0xBD, 0xB9]).withUnsafeBytes { validator.feed($0) })
        #expect(validator.isAtBoundary)
        #expect(![UInt8]([0xED, 0xA0]).withUnsafeBytes { validator.feed($0) })
    }

    @Test func unmaskingMatchesEveryOffsetAndLength() {
        let payload = (0..<67).map { UInt8($0 * 7 & 0xFF) }
        for split in [0, 1, 2, 3, 5, 13, 66] {
            var assembler = MessageAssembler(maxMessageSize: 1000)
            var frame = clientFrame(2, payload)
            // Deliver in two reads split at an arbitrary byte.
            var first = frame.readSlice(length: 6 + split)!
            var out = (try? assembler.feed(first)) ?? []
            first = frame
            out += (try? assembler.feed(first)) ?? []
            #expect(out == [.binary(ByteBuffer(bytes: payload))], "split \(split)")
        }
    }

    @Test func reassemblesFragmentsWithInterleavedControlFrames() throws {
        var assembler = MessageAssembler(maxMessageSize: 100)
        var input = clientFrame(1, Array("Hel".utf8), fin: false)
        var ping = clientFrame(9, [1, 2])
        var rest = clientFrame(0, Array("lo".utf8))
        input.writeBuffer(&ping)
        input.writeBuffer(&rest)
        let messages = try assembler.feedBytewise(input)
        #expect(messages == [.ping(ByteBuffer(bytes: [1, 2])), .text(ByteBuffer(string: "Hello"))])
    }

    @Test func parsesCloseFrames() throws {
        var assembler = MessageAssembler(maxMessageSize: 100)
        #expect(try assembler.feed(clientFrame(8, [])) == [.close(code: nil, reason: "")])
        #expect(
            try assembler.feed(clientFrame(8, [0x03, 0xE8] + Array("bye".utf8))) == [
                .close(code: .normal, reason: "bye")
            ])
    }

    @Test(arguments: [
        (clientFrame(8, [0x03]), CloseCode.protocolError),
        (clientFrame(8, [0x03, 0xEC]), .protocolError),  // 1004
        (clientFrame(8, [0x03, 0xE8, 0xFF]), .invalidPayload),
        (clientFrame(3, []), .protocolError),
        (clientFrame(9, [], fin: false), .protocolError),
        (clientFrame(9, [UInt8](repeating: 0, count: 126)), .protocolError),
        (clientFrame(0, [1]), .protocolError),
        (clientFrame(1, [0xC0, 0xAF]), .invalidPayload),
        (clientFrame(2, [UInt8](repeating: 0, count: 101)), .messageTooBig),
    ])
    func rejectsBadInput(frame: ByteBuffer, code: CloseCode) {
        var assembler = MessageAssembler(maxMessageSize: 100)
        let failure = #expect(throws: WebSocketFailure.self) { _ = try assembler.feed(frame) }
        #expect(failure?.code == code)
    }

    @Test func rejectsUnmaskedAndReservedBits() {
        var unmasked = ByteBuffer(bytes: [0x81, 0x01, 0x41])
        var reader = FrameReader(maxFrameSize: 100)
        #expect(throws: WebSocketFailure.protocolError("client frames must be masked")) {
            _ = try reader.next(from: &unmasked)
        }
        var rsv = clientFrame(1, [0x41])
        rsv.setInteger(UInt8(0xC1), at: 0)
        reader = FrameReader(maxFrameSize: 100)
        #expect(throws: WebSocketFailure.self) { _ = try reader.next(from: &rsv) }
    }

    @Test func oversizedFrameIsRejectedAtItsHeader() {
        // Only the header arrives: the 1009 must not wait for a gigabyte of payload.
        var header = ByteBuffer(bytes: [0x82, 0xFF])
        header.writeInteger(UInt64(1 << 30))
        header.writeBytes([1, 2, 3, 4])
        var reader = FrameReader(maxFrameSize: 1 << 20)
        #expect(throws: WebSocketFailure.tooBig(1 << 20)) { _ = try reader.next(from: &header) }
    }

    @Test func encodesServerFramesOfEverySizeClass() {
        for size in [0, 125, 126, 65535, 65536] {
            let frame = FrameEncoder.encode(.binary, bytes: [UInt8](repeating: 9, count: size))
            #expect(frame.readableBytes == size + FrameEncoder.headerSize(payloadLength: size))
            #expect(frame.getInteger(at: 0, as: UInt8.self) == 0x82)
        }
        let close = FrameEncoder.encodeClose(.goingAway, reason: String(repeating: "é", count: 100))
        #expect(close.readableBytes <= 127)
        var payload = close.getSlice(at: 2, length: close.readableBytes - 2)!
        #expect(payload.readInteger(as: UInt16.self) == 1001)
        #expect(UTF8Validator.isValid(payload.readableBytesView))
    }

    @Test func closeCodeValidity() {
        for code: UInt16 in [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4999] {
            #expect(CloseCode(code).isValidOnWire)
        }
        for code: UInt16 in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            #expect(!CloseCode(code).isValidOnWire)
        }
    }
}
