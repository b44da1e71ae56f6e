import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

@Suite("Registry", .timeLimit(.minutes(5)))
struct RegistryTests {
    /// Connections open and close from many tasks at once while others look them up; the registry
    /// ends consistent: every lookup of a live id succeeds, every user index matches, and it drains to empty.
    @Test func concurrentAddRemoveAndLookup() async throws {
        let server = try await TestServer.start(echo: false) { $0.threads = 4 }
        let hub = server.hub
        let users = 20
        let perUser = 10
        let clients = try await withThrowingTaskGroup(of: WebSocketClient.self) { group in
            for index in 0..<(users * perUser) {
                group.addTask { try await server.connect(user: "user\(index % users)") }
                if index % 10 == 0 {
                    group.addTask {
                        // Lookups racing the adds: whatever they see must be coherent.
                        for info in try await hub.snapshot().get() {
                            let found = try await hub.lookup(info.id).get()
                            #expect(found == nil || found?.userID == info.userID)
                        }
                        return try await server.connect(user: "extra")
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        try await eventually { hub.connectionCount == clients.count }
        for user in 0..<users {
            #expect(try await hub.connections(ofUser: "user\(user)").get().count == perUser)
        }
        let snapshot = try await hub.snapshot().get()
        #expect(snapshot.count == clients.count)
        #expect(Set(snapshot.map(\.id)).count == clients.count)
        for info in snapshot.prefix(50) {
            #expect(try await hub.lookup(info.id).get()?.id == info.id)
        }
        // Spread over every shard.
        #expect(Set(snapshot.map(\.id.shard)).count == 4)

        // Remove half concurrently with lookups; the other half stays findable.
        let (leaving, staying) = (clients.prefix(clients.count / 2), clients.suffix(clients.count - clients.count / 2))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for client in leaving { group.addTask { await client.disconnect() } }
            group.addTask {
                for _ in 0..<20 { _ = try await hub.snapshot().get() }
            }
            try await group.waitForAll()
        }
        try await eventually { hub.connectionCount == staying.count }
        let remaining = try await hub.snapshot().get()
        #expect(remaining.count == staying.count)
        let perUserTotal = try await (0..<users).asyncSum { try await hub.connections(ofUser: "user\($0)").get().count }
        let extras = try await hub.connections(ofUser: "extra").get().count
        #expect(perUserTotal + extras == staying.count)
        #expect(try await hub.lookup(ConnectionID(shard: 3, sequence: 999_999)).get() == nil)
        #expect(try await hub.lookup(ConnectionID(shard: 60, sequence: 1)).get() == nil)

        for client in staying { await client.disconnect() }
        try await server.expectNoConnections()
        for user in 0..<users {
            #expect(try await hub.connections(ofUser: "user\(user)").get().isEmpty)
        }
        await server.stop()
    }
}

extension Range where Bound == Int {
    func asyncSum(_ body: (Int) async throws -> Int) async rethrows -> Int {
        var total = 0
        for value in self { total += try await body(value) }
        return total
    }
}
