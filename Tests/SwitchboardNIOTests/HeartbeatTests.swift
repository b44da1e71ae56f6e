import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

@Suite("Heartbeats", .timeLimit(.minutes(5)))
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
        try await eventually("the idle close is counted") { server.closedCount(.idleTimeout) == 1 }
        // The chatty client opens first, so its idle deadline comes before the silent one's: if talking
        // did not push it back, it would be closed first. Talk until the silent one is closed.
        let chatty = try await server.connectRegistered()
        let silent = try await server.connectRegistered()
        var index = 0
        while server.closedCount(.idleTimeout) < 2 {
            chatty.send(text: "\(index)")
            #expect(try await chatty.nextMessage() == .text("\(index)"))
            index += 1
            try await Task.sleep(for: .milliseconds(50))  // pacing the talk, well inside the idle timeout
        }
        #expect(try await silent.waitForClose()?.reason == "idle timeout")
        chatty.send(text: "still here")
        #expect(try await chatty.nextMessage() == .text("still here"))
        #expect(server.hub.connectionCount == 1)
        await chatty.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}
