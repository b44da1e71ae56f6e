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
@Suite("Lifecycle")
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
        server.hub.close(id, code: .normal, reason: "done")
        // The client reads the close frame but never replies: the server must still let go.
        #expect(try await client.waitForClose()?.code == 1000)
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
