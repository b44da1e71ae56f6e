import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// Each limit tripped by real clients over loopback: the refusal, its status or close code, the counter.
@Suite("Abuse limits", .serialized, .timeLimit(.minutes(5)))
struct AbuseLimitTests {
    private func connect(
        _ server: TestServer, user: String? = nil, headers: [(String, String)] = []
    ) async throws -> WebSocketClient {
        var options = ClientOptions(path: user.map { "/ws?user=\($0)" } ?? "/ws")
        options.headers = headers
        return try await WebSocketClient.connect(
            host: "127.0.0.1", port: server.port, options: options, group: MultiThreadedEventLoopGroup.singleton)
    }

    private func refusal(
        _ server: TestServer, user: String? = nil, headers: [(String, String)] = []
    ) async throws -> HandshakeFailure {
        do {
            let client = try await connect(server, user: user, headers: headers)
            await client.disconnect()
        } catch let failure as HandshakeFailure {
            return failure
        }
        throw UnexpectedUpgrade()
    }

    private struct UnexpectedUpgrade: Error {}

    @Test func connectionsAtOnceFromOneAddress() async throws {
        let server = try await TestServer.start { $0.abuseLimits.maxConnectionsPerAddress = 2 }
        try await finally({ await server.stop() }) {
            let first = try await connect(server)
            let second = try await connect(server)
            let refused = try await refusal(server)
            #expect(refused.status == 503)
            #expect(refused.body.contains("too many connections from your address"))
            #expect((5...10).contains(Int(refused.headers["retry-after"] ?? "") ?? 0))
            #expect(server.rejectedCount("too_many_from_address") == 1)
            // A closed connection frees its place.
            await first.disconnect()
            try await eventually { server.hub.connectionCount == 1 }
            let third = try await connect(server)
            await second.disconnect()
            await third.disconnect()
            try await server.expectNoConnections()
        }
    }

    @Test func newConnectionsPerSecondFromOneAddress() async throws {
        let server = try await TestServer.start { $0.abuseLimits.connectionsPerSecondPerAddress = 0.5 }
        try await finally({ await server.stop() }) {
            let first = try await connect(server)
            let refused = try await refusal(server)
            #expect(refused.status == 503)
            #expect((1...3).contains(Int(refused.headers["retry-after"] ?? "") ?? 0))
            #expect(server.rejectedCount("address_rate_limited") == 1)
            await first.disconnect()
        }
    }

    @Test func forwardedAddressesCountOnlyBehindATrustedProxy() async throws {
        let trusted = try await TestServer.start {
            $0.abuseLimits.maxConnectionsPerAddress = 1
            $0.abuseLimits.trustedProxies = ["127.0.0.1"]
        }
        try await finally({ await trusted.stop() }) {
            let a = try await connect(trusted, headers: [("X-Forwarded-For", "10.0.0.1")])
            // A forged entry on the left does not help: the rightmost untrusted address is the client.
            let b = try await connect(trusted, headers: [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")])
            let c = try await connect(trusted, headers: [("Forwarded", #"for="[2001:db8::7]:4711";proto=https"#)])
            #expect(try await refusal(trusted, headers: [("X-Forwarded-For", "10.9.9.9, 10.0.0.1")]).status == 503)
            for client in [a, b, c] { await client.disconnect() }

            let untrusted = try await TestServer.start { $0.abuseLimits.maxConnectionsPerAddress = 1 }
            try await finally({ await untrusted.stop() }) {
                let d = try await connect(untrusted, headers: [("X-Forwarded-For", "10.0.0.1")])
                // From a peer that is not a trusted proxy the header is ignored: both are 127.0.0.1.
                #expect(try await refusal(untrusted, headers: [("X-Forwarded-For", "10.0.0.2")]).status == 503)
                await d.disconnect()
            }
        }
    }

    @Test func connectionsPerUser() async throws {
        let server = try await TestServer.start { $0.abuseLimits.maxConnectionsPerUser = 1 }
        try await finally({ await server.stop() }) {
            let ada = try await connect(server, user: "ada")
            let refused = try await refusal(server, user: "ada")
            #expect(refused.status == 429)
            #expect(refused.body.contains("too many connections for this user"))
            #expect(server.rejectedCount("too_many_for_user") == 1)
            let bob = try await connect(server, user: "bob")
            await ada.disconnect()
            try await eventually { server.hub.connectionCount == 1 }
            let adaAgain = try await connect(server, user: "ada")
            await adaAgain.disconnect()
            await bob.disconnect()
        }
    }

    @Test(
        "sustained inbound messages or bytes close 1008",
        arguments: [(5.0, 0.0, "hi"), (0.0, 2000.0, String(repeating: "x", count: 1000))])
    func inboundRate(messages: Double, bytes: Double, text: String) async throws {
        let server = try await TestServer.start(echo: false) {
            $0.abuseLimits.inboundMessagesPerSecond = messages
            $0.abuseLimits.inboundBytesPerSecond = bytes
            $0.maxMessageSize = 4096  // the byte bucket may go into debt by one message, no more
        }
        try await finally({ await server.stop() }) {
            let bystander = try await connect(server)
            let abuser = try await connect(server)
            for _ in 0..<60 { abuser.send(text: text) }
            let close = try await abuser.waitForClose(timeout: .seconds(20))
            #expect(close?.code == 1008)
            #expect(close?.reason.contains("inbound rate limit exceeded") == true)
            try await eventually { server.closedCount(.inboundRateLimited) == 1 }
            #expect(server.hub.connectionCount == 1)
            await bystander.disconnect()
        }
    }

    /// With the default limits, a client that streams empty continuation frames (no message ever completes,
    /// so no message limit sees them) is closed 1008 rather than served for ever; a bystander is untouched.
    @Test func anEndlessStreamOfEmptyFramesIsClosedByDefault() async throws {
        let server = try await TestServer.start(echo: true)
        try await finally({ await server.stop() }) {
            let bystander = try await connect(server)
            let abuser = try await connect(server)
            abuser.sendRaw(ClientFrameEncoder.encode(opcode: 1, fin: false, payload: Array("a".utf8)))
            var frames = ByteBuffer()
            for _ in 0..<1000 {
                var frame = ClientFrameEncoder.encode(opcode: 0, fin: false, payload: [UInt8]())
                frames.writeBuffer(&frame)
            }
            var sent = 0
            while abuser.channel.isActive, sent < 200 {
                abuser.sendRaw(frames)
                sent += 1
                if sent % 20 == 0 { try await Task.sleep(for: .milliseconds(10)) }
            }
            let close = try await abuser.waitForClose(timeout: .seconds(20))
            #expect(close?.code == 1008)
            #expect(close?.reason.contains("inbound rate limit exceeded") == true)
            try await eventually { server.closedCount(.inboundRateLimited) == 1 }
            bystander.send(text: "still here")
            #expect(try await bystander.nextMessage() == .text("still here"))
            await bystander.disconnect()
        }
    }
}
