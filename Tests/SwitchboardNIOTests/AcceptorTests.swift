import NIOCore
import NIOPosix
import SwitchboardClient
import Testing

@testable import SwitchboardNIO

/// The server's own accept thread: connections reach every loop, and after shutdown nothing listens.
@Suite("Acceptor", .timeLimit(.minutes(5)))
struct AcceptorTests {
    @Test func connectionsAreDealtToEveryLoop() async throws {
        let server = try await TestServer.start()  // two loops
        var clients: [WebSocketClient] = []
        for _ in 0..<6 { clients.append(try await server.connectRegistered()) }
        var perShard: [Int] = []
        for shard in server.hub.shards {
            perShard.append(try await shard.eventLoop.submit { shard.registry.byID.count }.get())
        }
        #expect(perShard == [3, 3])
        for client in clients { await client.disconnect() }
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func nothingListensAfterShutdown() async throws {
        let server = try await TestServer.start()
        let client = try await server.connectRegistered()
        await server.stop()
        #expect(try await client.waitForClose()?.code == 1001)
        await #expect(throws: (any Error).self) { try await server.connect() }
        #expect(server.server.localAddress == nil)
    }
}
