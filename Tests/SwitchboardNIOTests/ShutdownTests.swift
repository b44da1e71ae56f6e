import Logging
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

@Suite("Shutdown", .timeLimit(.minutes(5)))
struct ShutdownTests {
    @Test func drainsQueuesThenClosesEveryConnectionWith1001AndAReconnectHint() async throws {
        let server = try await TestServer.start(echo: false) { $0.shutdownBatchSize = 3 }
        var clients: [WebSocketClient] = []
        for _ in 0..<10 { clients.append(try await server.connectRegistered()) }
        for index in 0..<50 { server.hub.broadcast(text: "m\(index)") }
        async let stopped: Void = server.stop()
        for client in clients {
            // Every queued message arrives before the close frame.
            for index in 0..<50 {
                #expect(try await client.nextMessage() == .text("m\(index)"))
            }
            guard case .close(let code, let reason) = try await client.nextMessage() else {
                Issue.record("expected a close frame")
                continue
            }
            #expect(code == 1001)
            #expect(reason.contains("reconnect after"))
            client.close(code: 1001)
        }
        await stopped
        #expect(server.hub.connectionCount == 0)
        #expect(server.closedCount(.shutdown) == 10)
        #expect(server.openGauge == 0)
        // New connections are refused once shut down.
        await #expect(throws: (any Error).self) { _ = try await server.connect() }
    }

    @Test func unresponsiveClientsAreDroppedAtTheDeadline() async throws {
        let server = try await TestServer.start(echo: false) { $0.shutdownTimeout = .milliseconds(500) }
        let client = try await server.connectRegistered()
        try await client.channel.setOption(.autoRead, value: false).get()
        let clock = ContinuousClock()
        let started = clock.now
        await server.stop()
        // Bounded by the 0.5 s deadline, not by the client nor the test server's 5 s.
        let waited = clock.now - started
        #expect(waited >= .milliseconds(450) && waited < .seconds(3), "\(waited)")
        #expect(server.hub.connectionCount == 0)
        await client.disconnect()
    }

    /// While it drains, the server no longer listens: a new connection is refused by TCP, as docs/PROTOCOL.md says.
    @Test func newConnectionsAreRefusedByTCPWhileDraining() async throws {
        let server = try await TestServer.start(echo: false) {
            $0.shutdownTimeout = .seconds(30)
            $0.closeTimeout = .seconds(30)  // the held client stays until the test lets it go
        }
        let holder = try await server.connectRegistered()
        try await holder.channel.setOption(.autoRead, value: false).get()
        async let stopped: Void = server.stop()
        try await eventually("the drain began") { server.hub.isShuttingDown }
        var refusal = ""
        try await eventually("a new connection refused") {
            do {
                await (try await RawConnection.connect(port: server.port)).close()
                return false
            } catch {
                refusal = "\(error)"
                return true
            }
        }
        #expect(refusal.lowercased().contains("refused"), "\(refusal)")
        #expect(server.hub.connectionCount == 1, "the refusal came while the drain was still waiting for a client")
        await holder.disconnect()
        await stopped
        #expect(server.hub.connectionCount == 0)
    }

    @Test func anEmbeddersEventLoopGroupIsUsedAndOutlivesTheServer() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 3)
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 1  // ignored: the group decides
        var logger = Logger(label: "embedded")
        logger.logLevel = .critical
        let server = WebSocketServer(
            configuration: configuration, application: EchoApplication(broadcast: false), eventLoopGroup: group,
            logger: logger)
        #expect(server.hub.eventLoops.count == 3)
        let port = try await server.start().port ?? 0
        var clients: [WebSocketClient] = []
        for _ in 0..<6 {
            let client = try await WebSocketClient.connect(
                host: "127.0.0.1", port: port, options: ClientOptions(path: "/ws"),
                group: MultiThreadedEventLoopGroup.singleton)
            client.send(text: "hi")
            #expect(try await client.nextMessage() == .text("hi"))
            clients.append(client)
        }
        #expect(Set(try await server.hub.snapshot().get().map(\.id.shard)).count == 3)
        async let stopped: Void = server.shutdown()
        for client in clients { _ = try await client.waitForClose() }
        await stopped
        // The group is the embedder's: still running after the server stopped.
        #expect(try await group.next().submit { 42 }.get() == 42)
        try await group.shutdownGracefully()
    }
}
