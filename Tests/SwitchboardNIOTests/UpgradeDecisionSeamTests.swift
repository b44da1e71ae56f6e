import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// The upgrade decision is the application's: it may come from a database or an HTTP client on another
/// event loop group, late or never. Every test here decides on a second `EventLoopGroup`.
@Suite("Upgrade decision from another event loop group", .timeLimit(.minutes(5)))
struct UpgradeDecisionSeamTests {
    /// Decisions held until the test releases them, made on a loop of another group.
    final class Gate: Sendable {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        // Lock: guards the held decisions and the switch that stops holding new ones.
        private let state = NIOLockedValueBox<(held: [EventLoopPromise<UpgradeDecision>], open: Bool)>(([], false))

        var decide: Decider {
            Decider { _, _ in
                let loop = self.group.next()
                return self.state.withLockedValue { state in
                    if state.open { return loop.makeSucceededFuture(.accept(userID: "later", subprotocol: nil)) }
                    let promise = loop.makePromise(of: UpgradeDecision.self)
                    state.held.append(promise)
                    return promise.futureResult
                }
            }
        }

        var heldCount: Int { state.withLockedValue { $0.held.count } }

        /// Completes every held decision with an acceptance and lets later ones through at once.
        func open() {
            let held = state.withLockedValue { state -> [EventLoopPromise<UpgradeDecision>] in
                state.open = true
                defer { state.held = [] }
                return state.held
            }
            for promise in held { promise.succeed(.accept(userID: "held", subprotocol: nil)) }
        }

        /// Waits until decisions released by `open` have reached the server's loops and been acted on:
        /// the gate's loop ran their callbacks (the hop), then each server loop ran what was queued.
        func settle(_ server: TestServer) async throws {
            try await group.next().submit {}.get()
            for _ in 0..<2 {
                for loop in server.hub.eventLoops { try await loop.submit {}.get() }
            }
        }

        /// Lets later decisions through at once, leaving the held ones pending.
        func letNewOnesThrough() { state.withLockedValue { $0.open = true } }

        /// Holds new decisions again.
        func close() { state.withLockedValue { $0.open = false } }

        func shutdown() async throws {
            open()
            try await group.shutdownGracefully()
        }
    }

    private func pendingHandshakes(_ server: TestServer) async throws -> Int {
        try await server.hub.statistics().get().pendingHandshakes
    }

    @Test func aDecisionCompletedLaterOnAnotherGroupUpgrades() async throws {
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await TestServer.start(
            decide: Decider { _, _ in
                other.next().scheduleTask(in: .milliseconds(100)) {
                    UpgradeDecision.accept(userID: "remote", subprotocol: nil)
                }.futureResult
            })
        let client = try await server.connect()
        client.send(text: "hello")
        #expect(try await client.nextMessage() == .text("hello"))
        #expect(server.app.opened.map(\.userID) == ["remote"])
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
        try await other.shutdownGracefully()
    }

    @Test func theHandshakeTimeoutBoundsAPendingDecisionAndFreesItsSlot() async throws {
        let gate = Gate()
        let server = try await TestServer.start(decide: gate.decide) {
            $0.handshakeTimeout = .seconds(1)
            $0.maxConnections = 1
        }
        let started = ContinuousClock.now  // before connecting: the server's timer starts at its accept
        let waiting = try await RawConnection.connect(port: server.port)
        waiting.send(upgradeRequest())
        #expect(try await waiting.waitForServerClose().isEmpty, "closed without an answer")
        // At the 1 s configured, not the test server's 5 s.
        let waited = ContinuousClock.now - started
        #expect(waited >= .seconds(1) && waited < .seconds(3), "\(waited)")
        #expect(server.rejectedCount("timeout") == 1)
        #expect(gate.heldCount == 1)
        // With the decision still pending, the one connection slot is free again: the next client gets in.
        gate.letNewOnesThrough()
        var admitted: WebSocketClient?
        try await eventually("the slot is given back") {
            admitted = try? await server.connect()
            return admitted != nil
        }
        let first = try #require(admitted)
        first.send(text: "first")
        #expect(try await first.nextMessage() == .text("first"))
        await first.disconnect()
        try await server.expectNoConnections()
        // The decision arrives after the timeout: nothing happens.
        gate.open()
        try await gate.settle(server)
        let client = try await server.connect()
        client.send(text: "in")
        #expect(try await client.nextMessage() == .text("in"))
        #expect(server.app.opened.map(\.userID) == ["later", "later"])
        #expect(try await pendingHandshakes(server) == 0)
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
        try await gate.shutdown()
    }

    @Test func aClientLeavingWhileTheDecisionIsPendingFreesItsSlot() async throws {
        let gate = Gate()
        let server = try await TestServer.start(decide: gate.decide) { $0.maxConnections = 1 }
        let leaving = try await RawConnection.connect(port: server.port)
        leaving.send(upgradeRequest())
        try await eventually("the decision is asked for") { gate.heldCount == 1 }
        await leaving.close()
        try await eventually("the handshake is gone") { try await pendingHandshakes(server) == 0 }
        gate.open()  // accepts the departed client: it must not be registered
        try await gate.settle(server)
        #expect(server.app.opened.isEmpty)
        #expect(server.hub.connectionCount == 0)
        let client = try await server.connect()
        client.send(text: "in")
        #expect(try await client.nextMessage() == .text("in"))
        #expect(server.app.opened.map(\.userID) == ["later"])
        #expect(server.hub.connectionCount == 1)
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
        try await gate.shutdown()
    }

    @Test func aDecisionCompletedAfterDrainBeganIsRefusedWith503() async throws {
        let gate = Gate()
        let server = try await TestServer.start(decide: gate.decide) {
            $0.shutdownTimeout = .seconds(30)
            $0.closeTimeout = .seconds(30)
        }
        gate.open()
        // A client that does not read holds the drain open until the deadline.
        let stuck = try await server.connectRegistered()
        try await stuck.channel.setOption(.autoRead, value: false).get()
        gate.close()
        let late = try await RawConnection.connect(port: server.port)
        late.send(upgradeRequest())
        try await eventually("the decision is asked for") { gate.heldCount == 1 }
        let stopping = Task { await server.stop() }
        try await eventually("drain started") { server.hub.isShuttingDown }
        gate.open()
        let response = try await late.waitForServerClose()
        #expect(response.hasPrefix("HTTP/1.1 503"), "\(response)")
        #expect(response.contains("server shutting down"))
        await stuck.disconnect()
        await stopping.value
        #expect(server.app.opened.count == 1)
        try await gate.shutdown()
    }

    @Test func theHubClosesAConnectionWhenItsCredentialsExpire() async throws {
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await TestServer.start(
            decide: Decider { _, _ in
                other.next().makeSucceededFuture(
                    .accept(userID: "brief", subprotocol: nil, expiresAt: .now() + .milliseconds(300)))
            })
        let client = try await server.connect()
        let close = try await client.waitForClose()
        #expect(close?.code == 4001)
        #expect(close?.reason == "token expired")
        try await eventually { server.closedCount(.tokenExpired) == 1 }
        try await server.expectNoConnections()
        await server.stop()
        try await other.shutdownGracefully()
    }

    @Test func anAcceptanceWhoseCredentialsExpiredMeanwhileIsRefusedWith401() async throws {
        let other = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await TestServer.start(
            decide: Decider { _, _ in
                let expiry = NIODeadline.now() + .milliseconds(20)
                return other.next().scheduleTask(in: .milliseconds(100)) {
                    UpgradeDecision.accept(userID: "stale", subprotocol: nil, expiresAt: expiry)
                }.futureResult
            })
        let response = try await exchange(upgradeRequest(), port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 401"), "\(response)")
        #expect(server.app.opened.isEmpty)
        await server.stop()
        try await other.shutdownGracefully()
    }
}
