import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

@Suite("Heartbeats")
struct HeartbeatTests {
    @Test func serverPingsAndAResponsiveClientStays() async throws {
        let server = try await TestServer.start {
            $0.pingInterval = .milliseconds(100)
            $0.pongTimeout = .milliseconds(400)
        }
        let client = try await server.connectRegistered()
        // Three pings answered: well past a pong timeout, the connection is still open.
        for _ in 0..<3 {
            guard case .ping = try await client.next() else {
                Issue.record("expected a ping")
                return
            }
        }
        #expect(server.hub.connectionCount == 1)
        #expect(server.closedCount(.pongTimeout) == 0)
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func silentClientIsReapedAfterThePongTimeout() async throws {
        let server = try await TestServer.start {
            $0.pingInterval = .milliseconds(100)
            $0.pongTimeout = .milliseconds(200)
        }
        let alive = try await server.connectRegistered()
        let silent = try await server.connectRegistered(autoPong: false)
        let close = try await silent.waitForClose()
        #expect(close?.code == 1008)
        #expect(close?.reason == "pong timeout")
        try await eventually { server.closedCount(.pongTimeout) == 1 }
        #expect(server.hub.connectionCount == 1)
        await alive.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func idleClientIsClosedButActivityKeepsItOpen() async throws {
        let server = try await TestServer.start {
            $0.pingInterval = .zero
            $0.idleTimeout = .seconds(1)
        }
        let idle = try await server.connectRegistered()
        let close = try await idle.waitForClose()
        #expect(close?.code == 1008)
        #expect(close?.reason == "idle timeout")
        #expect(server.closedCount(.idleTimeout) == 1)
        let chatty = try await server.connectRegistered()
        // The chatty one keeps talking every 150 ms for 2.4 s (more than twice the idle timeout).
        for index in 0..<16 {
            chatty.send(text: "\(index)")
            #expect(try await chatty.nextMessage() == .text("\(index)"))
            try await Task.sleep(for: .milliseconds(150))
        }
        #expect(server.hub.connectionCount == 1)
        await chatty.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}
