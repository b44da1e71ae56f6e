import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Every way out leaves every table: registry empty, gauge at 0, the reason counted.
@Suite("Lifecycle", .timeLimit(.minutes(5)))
struct LifecycleTests {
    @Test func clientCloseIsEchoedAndTheServerClosesTCP() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered(user: "ada")
        client.close(code: 4001, reason: "bye")
        let close = try await client.waitForClose()
        #expect(close?.code == 4001)
        try await server.expectNoConnections()
        #expect(server.closedCount(.clientClosed) == 1)
        #expect(try await server.hub.connections(ofUser: "ada").get().isEmpty)
        await server.stop()
    }

    @Test func closeWithoutCodeIsAnsweredWith1000() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered()
        client.close(code: nil)
        #expect(try await client.waitForClose()?.code == 1000)
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func tcpDropWithoutCloseFrame() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered(user: "bob")
        await client.disconnect()
        try await server.expectNoConnections()
        try await eventually { server.closedCount(.connectionLost) == 1 }
        #expect(server.app.closedReasons == [.connectionLost])
        await server.stop()
    }

    @Test func tcpResetWithoutCloseFrame() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered()
        // SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        let provider = try #require(client.channel as? any SocketOptionProvider)
        try await provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).get()
        await client.disconnect()
        try await server.expectNoConnections()
        try await eventually { server.closedCount(.connectionLost) == 1 }
        await server.stop()
    }

    @Test func applicationClose() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered()
        let id = try #require(server.app.opened.first?.id)
        server.hub.close(id, code: CloseCode(4000), reason: "kicked")
        let event = try await client.next()
        #expect(event == .close(code: 4000, reason: "kicked"))
        client.close(code: 4000)
        #expect(try await client.waitForClose() == nil)  // the close frame was already consumed above
        try await server.expectNoConnections()
        #expect(server.closedCount(.serverClosed) == 1)
        await server.stop()
    }

    @Test func peerThatNeverAnswersOurCloseIsDroppedAfterTheCloseTimeout() async throws {
        let server = try await TestServer.start { $0.closeTimeout = .milliseconds(200) }
        let client = try await server.connectRegistered(autoPong: false)
        let id = try #require(server.app.opened.first?.id)
        let started = ContinuousClock.now
        server.hub.close(id, code: .normal, reason: "done")
        // The client reads the close frame but never replies: the server must still let go, at the 0.2 s
        // configured, not the test server's 2 s.
        #expect(try await client.waitForClose()?.code == 1000)
        try await eventually("the server let go") { server.hub.connectionCount == 0 }
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(150) && waited < .milliseconds(1500), "\(waited)")
        try await server.expectNoConnections()
        await server.stop()
    }

    /// A client that stopped reading (its receive window full of our data) and then sends Close: our close
    /// reply can never be written, yet the connection, its user count and its slot are gone within the close
    /// timeout, whatever the peer does.
    @Test(arguments: [true, false])
    func aClientCloseWithUnsentDataEndsWithinTheCloseTimeout(directWrites: Bool) async throws {
        let server = try await TestServer.start(echo: false) {
            $0.closeTimeout = .milliseconds(500)
            $0.directWrites = directWrites
            $0.queueMaxBytes = 256 << 20
            $0.queueMaxMessages = 1 << 20
            $0.abuseLimits.maxConnectionsPerUser = 1
        }
        let client = try await server.connectRegistered(user: "zed")
        try await client.channel.setOption(.autoRead, value: false).get()
        let padding = String(repeating: "x", count: 1000)
        var sent = 0
        // Until the socket and NIO's buffer are full and messages wait in the connection's queue.
        while try await server.hub.snapshot().get().allSatisfy({ $0.queuedMessages == 0 }), sent < 1_000_000 {
            for _ in 0..<1000 { server.hub.broadcast(text: padding) }
            sent += 1000
        }
        client.close(code: 1000)
        try await eventually(timeout: .seconds(30), "the stuck connection closed") {
            server.hub.connectionCount == 0
        }
        #expect(server.closedCount(.clientClosed) == 1)
        // The user's slot is free again: the same user may connect.
        let again = try await server.connectRegistered(user: "zed")
        #expect(server.hub.connectionCount == 1)
        await again.disconnect()
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func protocolErrorLeavesNoTrace() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered(user: "eve")
        client.sendRaw(ClientFrameEncoder.encode(opcode: 1, payload: Array("x".utf8), masked: false))
        #expect(try await client.waitForClose()?.code == 1002)
        try await server.expectNoConnections()
        #expect(try await server.hub.connections(ofUser: "eve").get().isEmpty)
        await server.stop()
    }
}
