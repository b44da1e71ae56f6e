import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import Testing

@testable import SwitchboardNIO

/// Credentials' expiry runs on the loop's heartbeat wheel: a new deadline replaces the old one whether
/// earlier or later (the entry left in the wheel is skipped), and it works with heartbeats turned off.
@Suite("Expiry on the heartbeat wheel", .timeLimit(.minutes(5)))
struct ExpiryTests {
    @Test func aNewDeadlineReplacesTheOldOneEarlierOrLater() async throws {
        let server = try await TestServer.start {
            $0.pingInterval = .zero  // no heartbeat entries: only the expiries put connections in the wheel
            $0.idleTimeout = .zero
        }
        let brought = try await server.connectRegistered()
        let deferred = try await server.connectRegistered()
        let witness = try await server.connectRegistered()
        let ids = server.app.opened.map(\.id)
        try #require(ids.count == 3)
        func expire(_ id: ConnectionID, _ steps: [TimeAmount]) async throws {
            let shard = server.hub.shards[id.shard]
            try await shard.eventLoop.submit {
                for step in steps { shard.connection(id)?.expire(at: .now() + step) }
            }.get()
        }
        try await expire(ids[0], [.seconds(60), .milliseconds(300)])  // brought forward
        try await expire(ids[1], [.milliseconds(300), .seconds(60)])  // put off
        try await expire(ids[2], [.milliseconds(900)])
        #expect(try await brought.waitForClose(timeout: .seconds(20))?.code == 4001)
        #expect(try await witness.waitForClose(timeout: .seconds(20))?.code == 4001)
        // The witness expired well after the put-off connection's first deadline: that one is still open.
        #expect(server.closedCount(.tokenExpired) == 2)
        #expect(server.hub.connectionCount == 1)
        await deferred.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}
