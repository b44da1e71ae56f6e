import Foundation
import NIOCore
import SwitchboardClient
import SwitchboardServer
import Testing

@Suite("Protocol errors and limits", .timeLimit(.minutes(5)))
struct ProtocolErrorTests {
    @Test func everyErrorIsAnsweredAndTheConnectionLivesOn() async throws {
        let server = try await ChannelsServer.start(channels: { $0.maxSubscriptionsPerConnection = 2 })
        let client = try await server.connect(user: "ada")

        client.client.send(text: "{not json")
        let bad = try await client.next()
        #expect(bad.errorCode == 100)
        #expect(bad["id"] is NSNull)

        let cases: [([String: Any], Int)] = [
            (["cmd": "teleport"], 101),
            (["channel": "chat:x"], 100),
            (["cmd": "subscribe"], 100),
            (["cmd": "subscribe", "channel": "nowhere:x"], 102),
            (["cmd": "subscribe", "channel": "bad channel!"], 103),
            (["cmd": "subscribe", "channel": String(repeating: "a", count: 256)], 103),
            (["cmd": "publish", "channel": "ro:news", "data": 1], 104),
            (["cmd": "presence", "channel": "plain"], 104),
            (["cmd": "history", "channel": "plain"], 104),
            (["cmd": "unsubscribe", "channel": "chat:never"], 108),
            (["cmd": "subscribe", "channel": "chat:recover", "recover": ["offset": 1]], 100),
        ]
        for (command, code) in cases {
            let reply = try await client.call(command).reply
            #expect(reply.errorCode == code, "\(command)")
        }
        #expect(try await client.call(["cmd": "subscribe", "channel": "chat:a"]).reply.ok != nil)
        #expect(try await client.call(["cmd": "subscribe", "channel": "chat:a"]).reply.errorCode == 107)
        #expect(try await client.call(["cmd": "subscribe", "channel": "chat:b"]).reply.ok != nil)
        #expect(try await client.call(["cmd": "subscribe", "channel": "chat:c"]).reply.errorCode == 105)
        #expect(try await client.call(["cmd": "ping"]).reply.ok != nil)
        await server.stop()
    }

    /// Before: no notice preceded 1009, 1007 and 1002, although a client needs it most there (it must not
    /// reconnect and repeat the error).
    @Test(arguments: [
        (ClientFrameEncoder.encode(opcode: 1, payload: [UInt8](repeating: 0x61, count: 5000)), 1009),
        (ClientFrameEncoder.encode(opcode: 1, payload: [0x61, 0xED, 0xA0, 0x80]), 1007),
        (ClientFrameEncoder.encode(opcode: 3, payload: []), 1002),
        (ClientFrameEncoder.encode(opcode: 2, payload: [1, 2, 3]), 1003),
    ])
    func theServerSaysWhyAndWhetherToReconnectBeforeClosing(frame: ByteBuffer, code: Int) async throws {
        let server = try await ChannelsServer.start(transport: { $0.maxMessageSize = 4096 })
        let client = try await server.connect()
        client.client.sendRaw(frame)
        let notice = try await client.nextPush("disconnect")
        #expect(notice["code"] as? Int == code)
        #expect(notice["reconnect"] as? Bool == false)
        #expect(try await client.client.waitForClose()?.code == UInt16(code))
        await server.stop()
    }

    @Test func publishRateIsLimitedAndSustainedAbuseCloses() async throws {
        let server = try await ChannelsServer.start(channels: {
            $0.publishRate = 0.001
            $0.publishBurst = 2
            $0.maxRejectedPublishes = 3
        })
        let client = try await server.connect(user: "spammer")
        var codes: [Int?] = []
        for _ in 0..<5 {
            codes.append(try await client.call(["cmd": "publish", "channel": "chat:s", "data": 1]).reply.errorCode)
        }
        // Closed right after the third rejected publish (maxRejectedPublishes), as documented.
        #expect(codes == [nil, nil, 106, 106, 106])
        let notice = try await client.nextPush("disconnect")
        #expect(notice["code"] as? Int == 1008)
        #expect(try await client.client.waitForClose()?.code == 1008)
        await server.stop()
    }
}
