import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// Each malformed input gets its close code; the bystander connection keeps working; nothing leaks.
@Suite("Frame errors", .timeLimit(.minutes(5)))
struct FrameErrorTests {
    static let cases: [(String, [ByteBuffer], UInt16, DisconnectReason)] = [
        (
            "unmasked frame", [ClientFrameEncoder.encode(opcode: 1, payload: Array("hi".utf8), masked: false)], 1002,
            .protocolError
        ),
        (
            "reserved bits", [ClientFrameEncoder.encode(opcode: 1, rsv: 4, payload: Array("hi".utf8))], 1002,
            .protocolError
        ),
        ("reserved opcode", [ClientFrameEncoder.encode(opcode: 3, payload: [])], 1002, .protocolError),
        ("fragmented ping", [ClientFrameEncoder.encode(opcode: 9, fin: false, payload: [])], 1002, .protocolError),
        (
            "ping over 125 bytes", [ClientFrameEncoder.encode(opcode: 9, payload: [UInt8](repeating: 1, count: 126))],
            1002, .protocolError
        ),
        (
            "continuation without a start", [ClientFrameEncoder.encode(opcode: 0, payload: Array("x".utf8))], 1002,
            .protocolError
        ),
        (
            "new message inside a fragmented one",
            [
                ClientFrameEncoder.encode(opcode: 1, fin: false, payload: Array("a".utf8)),
                ClientFrameEncoder.encode(opcode: 1, payload: Array("b".utf8)),
            ], 1002, .protocolError
        ),
        (
            "invalid UTF-8",
            [
                ClientFrameEncoder.encode(
                    opcode: 1,
                    payload: [0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xCF, 0x83, 0xCE, 0xBC, 0xCE, 0xB5, 0xED, 0xA0, 0x80])
            ], 1007, .invalidPayload
        ),
        (
            "UTF-8 cut across fragments",
            [
                ClientFrameEncoder.encode(opcode: 1, fin: false, payload: [0xE2, 0x82]),
                ClientFrameEncoder.encode(opcode: 0, payload: [0x41]),
            ], 1007, .invalidPayload
        ),
        (
            "message over the size limit",
            [ClientFrameEncoder.encode(opcode: 2, payload: [UInt8](repeating: 7, count: 5000))], 1009, .messageTooBig
        ),
        (
            "fragments over the size limit",
            [
                ClientFrameEncoder.encode(opcode: 2, fin: false, payload: [UInt8](repeating: 7, count: 3000)),
                ClientFrameEncoder.encode(opcode: 0, payload: [UInt8](repeating: 7, count: 3000)),
            ], 1009, .messageTooBig
        ),
        ("close code 1005 on the wire", [ClientFrameEncoder.close(code: 1005)], 1002, .protocolError),
        (
            "close reason not UTF-8", [ClientFrameEncoder.encode(opcode: 8, payload: [0x03, 0xE8, 0xFF])], 1007,
            .invalidPayload
        ),
    ]

    @Test(arguments: cases.indices)
    func closesWithTheRightCode(index: Int) async throws {
        let (name, frames, code, reason) = Self.cases[index]
        let server = try await TestServer.start { $0.maxMessageSize = 4096 }
        let bystander = try await server.connectRegistered()
        let offender = try await server.connectRegistered()
        for frame in frames { offender.sendRaw(frame) }
        let close = try await offender.waitForClose()
        #expect(close?.code == code, "\(name)")
        try await eventually { server.closedCount(reason) == 1 }

        bystander.send(text: "still here")
        #expect(try await bystander.nextMessage() == .text("still here"), "\(name)")
        bystander.close()
        _ = try await bystander.waitForClose()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func pingIsAnsweredWithTheSamePayload() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect()
        client.ping([1, 2, 3])
        #expect(try await client.next() == .pong(ByteBuffer(bytes: [1, 2, 3])))
        await client.disconnect()
        await server.stop()
    }

    @Test func fragmentedMessageWithInterleavedPingIsReassembled() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect()
        client.sendRaw(ClientFrameEncoder.encode(opcode: 1, fin: false, payload: Array("frag".utf8)))
        client.sendRaw(ClientFrameEncoder.encode(opcode: 9, payload: Array("p".utf8)))
        client.sendRaw(ClientFrameEncoder.encode(opcode: 0, fin: false, payload: Array("men".utf8)))
        client.sendRaw(ClientFrameEncoder.encode(opcode: 0, payload: Array("ted ✓".utf8)))
        #expect(try await client.next() == .pong(ByteBuffer(string: "p")))
        #expect(try await client.next() == .text("fragmented ✓"))
        await client.disconnect()
        await server.stop()
    }
}
