import Logging
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// An application that echoes, takes the user id from `?user=`, refuses `?reject=1` with 403 and
/// records every open and close, so tests can wait for the events they expect.
final class RecordingApplication: SwitchboardApplication {
    // Lock: guards the recorded events, written from event loops and read from tests.
    private let state = NIOLockedValueBox<(opened: [ConnectionHandle], closed: [(ConnectionHandle, DisconnectReason)])>(
        ([], []))
    let echo: Bool
    /// Replaces the decision below, for tests of the seam (decisions from other event loops, late or never).
    let decide: (@Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<UpgradeDecision>)?

    init(
        echo: Bool = true,
        decide: (@Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<UpgradeDecision>)? = nil
    ) {
        self.echo = echo
        self.decide = decide
    }

    var supportedSubprotocols: [String] { ["chat.v2", "chat.v1"] }

    func shouldUpgrade(
        _ request: HTTPRequestHead, from remoteAddress: SocketAddress?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        if let decide { return decide(request, eventLoop) }
        let query = request.uri.split(separator: "?", maxSplits: 1).dropFirst().first ?? ""
        var user: String?
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2, parts[0] == "user" { user = parts[1] }
            if parts.count == 2, parts[0] == "reject" {
                return eventLoop.makeSucceededFuture(.reject(.forbidden, reason: "not allowed in"))
            }
        }
        let offered = request.headers[canonicalForm: "Sec-WebSocket-Protocol"].map(String.init)
        let chosen = supportedSubprotocols.first { offered.contains($0) }
        return eventLoop.makeSucceededFuture(.accept(userID: user, subprotocol: chosen))
    }

    func connectionOpened(_ connection: any LocalConnection) {
        let handle = connection.handle
        state.withLockedValue { $0.opened.append(handle) }
    }

    func connection(_ connection: any LocalConnection, received message: DataMessage) {
        guard echo else { return }
        switch message {
        case .text(let payload): connection.handle.send(frame: FrameEncoder.encode(.text, payload: payload))
        case .binary(let payload): connection.handle.send(frame: FrameEncoder.encode(.binary, payload: payload))
        }
    }

    func connectionClosed(_ connection: any LocalConnection, reason: DisconnectReason) {
        let handle = connection.handle
        state.withLockedValue { $0.closed.append((handle, reason)) }
    }

    var opened: [ConnectionHandle] { state.withLockedValue { $0.opened } }
    var closedReasons: [DisconnectReason] { state.withLockedValue { $0.closed.map(\.1) } }
}

struct Decider {
    let body: @Sendable (HTTPRequestHead, any EventLoop) -> EventLoopFuture<UpgradeDecision>
}

/// A server on a free loopback port with short timers, test metrics and a recording application.
struct TestServer {
    let server: WebSocketServer
    let metrics: TestMetrics
    let app: RecordingApplication
    let port: Int

    /// - Parameter decide: replaces the application's upgrade decision (an optional wrapped in a struct so
    ///   that a trailing closure still means `configure`).
    static func start(
        echo: Bool = true,
        decide: Decider? = nil,
        _ configure: (inout SwitchboardConfiguration) -> Void = { _ in }
    ) async throws -> TestServer {
        var configuration = SwitchboardConfiguration()
        configuration.port = 0
        configuration.threads = 2
        configuration.pingInterval = .seconds(30)
        configuration.handshakeTimeout = .seconds(5)
        configuration.closeTimeout = .seconds(2)
        configuration.shutdownTimeout = .seconds(5)
        configure(&configuration)
        let metrics = TestMetrics()
        let app = RecordingApplication(echo: echo, decide: decide?.body)
        var logger = Logger(label: "switchboard-test")
        logger.logLevel = .critical
        let server = WebSocketServer(
            configuration: configuration, application: app, metrics: SwitchboardMetrics(factory: metrics),
            logger: logger)
        let address = try await server.start()
        return TestServer(server: server, metrics: metrics, app: app, port: address.port ?? 0)
    }

    var hub: Hub { server.hub }

    func connect(
        path: String = "/ws", user: String? = nil, autoPong: Bool = true, subprotocols: [String] = [],
        localAddress: String? = nil
    ) async throws -> WebSocketClient {
        var options = ClientOptions(path: user.map { "\(path)?user=\($0)" } ?? path)
        options.autoPong = autoPong
        options.subprotocols = subprotocols
        options.localAddress = localAddress
        return try await WebSocketClient.connect(
            host: "127.0.0.1", port: port, options: options, group: MultiThreadedEventLoopGroup.singleton)
    }

    /// Connects and waits until the server has registered the connection.
    func connectRegistered(user: String? = nil, autoPong: Bool = true) async throws -> WebSocketClient {
        let before = app.opened.count
        let client = try await connect(user: user, autoPong: autoPong)
        try await eventually { app.opened.count > before }
        return client
    }

    var openGauge: Double? { try? metrics.expectGauge("switchboard_connections_open").lastValue }

    func closedCount(_ reason: DisconnectReason) -> Int64 {
        (try? metrics.expectCounter("switchboard_connections_closed_total", [("reason", reason.rawValue)]).totalValue)
            ?? 0
    }

    func rejectedCount(_ reason: String) -> Int64 {
        (try? metrics.expectCounter("switchboard_handshakes_rejected_total", [("reason", reason)]).totalValue) ?? 0
    }

    /// Every table is empty and the open-connections gauge reads 0.
    func expectNoConnections() async throws {
        try await eventually { hub.connectionCount == 0 }
        let snapshot = try await hub.snapshot().get()
        #expect(snapshot.isEmpty)
        let stats = try await hub.statistics().get()
        #expect(stats.registeredConnections == 0)
        #expect(stats.queuedMessages == 0)
        // The gauge is first written when a connection opens; after that it must be back at 0.
        #expect(openGauge == 0 || (openGauge == nil && app.opened.isEmpty), "\(String(describing: openGauge))")
    }

    func stop() async { await server.shutdown() }
}
