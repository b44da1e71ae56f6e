import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardHummingbird
import SwitchboardServer
import SwitchboardTestSupport
import Testing

@testable import SwitchboardNIO

/// The hub mounted on a Hummingbird app: its routes and the channel protocol on one port, the hub's
/// refusals as HTTP statuses from the app's server, and the app's graceful shutdown draining the hub.
struct Unexpected: Error, CustomStringConvertible {
    let description: String
}

@Suite("Hub mounted in Hummingbird", .timeLimit(.minutes(5)))
struct MountTests {
    private static func connect(_ app: MountedApp, path: String) async throws -> WebSocketClient {
        try await WebSocketClient.connect(
            host: "127.0.0.1", port: app.port, options: ClientOptions(path: path),
            group: MultiThreadedEventLoopGroup.singleton)
    }

    /// The reply or push whose text contains `marker`, skipping others.
    private static func next(_ client: WebSocketClient, containing marker: String) async throws -> String {
        while true {
            switch try await client.nextMessage(timeout: .seconds(20)) {
            case .text(let text) where text.contains(marker): return text
            case .text: continue
            case let other: throw Unexpected(description: "expected \(marker), got \(other)")
            }
        }
    }

    private static func http(_ port: Int, _ request: String) async throws -> String {
        let connection = try await RawConnection.connect(port: port)
        connection.send(request)
        return try await connection.waitForServerClose()
    }

    @Test func routesWebSocketAndServerAPIShareOnePort() async throws {
        let app = try await MountedApp.start()
        try await finally({ try? await app.stop() }) {
            let hello = try await Self.http(
                app.port, "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(hello.hasPrefix("HTTP/1.1 200"), "\(hello)")
            #expect(hello.hasSuffix("\r\n\r\nhello"), "\(hello)")

            let client = try await Self.connect(app, path: "/ws?user=alice")
            client.send(text: #"{"id":1,"cmd":"subscribe","channel":"chat:lobby"}"#)
            let subscribed = try await Self.next(client, containing: #""id":1"#)
            #expect(subscribed.contains(#""ok""#), "\(subscribed)")

            let body = #"{"channel":"chat:lobby","data":{"n":1}}"#
            let published = try await Self.http(
                app.port,
                "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)")
            #expect(published.hasPrefix("HTTP/1.1 200"), "\(published)")
            let push = try await Self.next(client, containing: #""push":"pub""#)
            #expect(push.contains(#""data":{"n":1}"#), "\(push)")

            // A client publishes; the server API sees the connection.
            client.send(text: #"{"id":2,"cmd":"publish","channel":"chat:lobby","data":{"n":2}}"#)
            #expect(try await Self.next(client, containing: #""id":2"#).contains(#""ok""#))
            let info = try await Self.http(
                app.port,
                "POST /api/info HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            #expect(info.contains(#""connections":1"#), "\(info)")
            await client.disconnect()
            try await eventually { app.hub.connectionCount == 0 }
        }
    }

    @Test func aPlainRequestToTheMountPathIsTheAppsAndUpgradesElsewhereAre404() async throws {
        let app = try await MountedApp.start()
        try await finally({ try? await app.stop() }) {
            let plain = try await Self.http(
                app.port, "GET /ws HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(plain.hasPrefix("HTTP/1.1 404"), "\(plain)")
            do {
                _ = try await Self.connect(app, path: "/elsewhere")
                Issue.record("upgraded off the mount path")
            } catch let failure as HandshakeFailure {
                #expect(failure.status == 404)
            }
            #expect(app.hub.connectionCount == 0)
        }
    }

    @Test func refusalsAreTheEmbeddingServersHTTPStatuses() async throws {
        // 403 from the application's decision, 401 for a bad token, 429 over the per-user limit.
        let app = try await MountedApp.start(
            transport: { $0.abuseLimits.maxConnectionsPerUser = 1 },
            authenticate: { request in
                if request.uri.contains("forbidden") { return .reject(.forbidden, reason: "not you") }
                if request.uri.contains("token=bad") { return .reject(.unauthorized, reason: "invalid token") }
                return try await ChannelsApplication.userFromQuery(request)
            })
        try await finally({ try? await app.stop() }) {
            for (path, status, reason) in [
                ("/ws?forbidden", 403, "not you"), ("/ws?token=bad", 401, "invalid token"),
            ] {
                do {
                    _ = try await Self.connect(app, path: path)
                    Issue.record("\(path) upgraded")
                } catch let failure as HandshakeFailure {
                    #expect(failure.status == status)
                    #expect(failure.body.contains(reason), "\(failure.body)")
                }
            }
            let first = try await Self.connect(app, path: "/ws?user=bob")
            do {
                _ = try await Self.connect(app, path: "/ws?user=bob")
                Issue.record("a second connection of bob upgraded")
            } catch let failure as HandshakeFailure {
                #expect(failure.status == 429)
            }
            // The refusals held nothing: bob leaves and comes back.
            await first.disconnect()
            try await eventually { app.hub.connectionCount == 0 }
            let again = try await Self.connect(app, path: "/ws?user=bob")
            await again.disconnect()
            // Malformed upgrades get the hub's 400 with its reason, from the app's server too.
            let malformed = try await Self.http(
                app.port,
                "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    + "Sec-WebSocket-Version: 13\r\n\r\n")
            #expect(malformed.hasPrefix("HTTP/1.1 400"), "\(malformed)")
            #expect(malformed.contains("Sec-WebSocket-Key"), "\(malformed)")
        }
    }

    /// With the hub among the app's services, and without: then the server's quiescing alone (NIO's
    /// `ChannelShouldQuiesceEvent` to every connection) must drain it, or the app's shutdown never ends.
    @Test(arguments: [true, false])
    func theAppsGracefulShutdownDrainsTheHub(hubIsAService: Bool) async throws {
        let app = try await MountedApp.start(hubIsAService: hubIsAService)
        var clients: [WebSocketClient] = []
        for user in ["a", "b", "c"] {
            let client = try await Self.connect(app, path: "/ws?user=\(user)")
            client.send(text: #"{"id":1,"cmd":"subscribe","channel":"chat:lobby"}"#)
            _ = try await Self.next(client, containing: #""id":1"#)
            clients.append(client)
        }
        let stopping = Task { try await app.stop() }
        for client in clients {
            let notice = try await Self.next(client, containing: #""push":"disconnect""#)
            #expect(notice.contains(#""reconnect":true"#), "\(notice)")
            let close = try await client.waitForClose(timeout: .seconds(20))
            #expect(close?.code == 1001)
        }
        try await stopping.value
        #expect(app.hub.connectionCount == 0)
        #expect(app.hub.isShuttingDown)
    }

    /// The other way round: the hub's own listener (direct writes) serving the app's router too.
    @Test func theHubsOwnListenerServesARouterToo() async throws {
        let router = Router()
        router.get("hello") { _, _ in "hello" }
        var configuration = SwitchboardConfiguration()
        (configuration.port, configuration.path, configuration.shutdownTimeout) = (0, "/ws", .seconds(5))
        let server = WebSocketServer(
            configuration: configuration, application: EchoApplication(broadcast: false), router: router)
        let port = try await server.start().port ?? 0
        try await finally({ await server.shutdown() }) {
            let hello = try await Self.http(port, "GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(hello.hasPrefix("HTTP/1.1 200") && hello.hasSuffix("hello"), "\(hello)")
            let missing = try await Self.http(
                port, "GET /nope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            #expect(missing.hasPrefix("HTTP/1.1 404"), "\(missing)")
            let client = try await WebSocketClient.connect(
                host: "127.0.0.1", port: port, options: ClientOptions(path: "/ws"),
                group: MultiThreadedEventLoopGroup.singleton)
            for index in 1...50 { client.send(text: "message \(index)") }
            for index in 1...50 { #expect(try await client.nextMessage() == .text("message \(index)")) }
            #expect(server.hub.connectionCount == 1)
            // The connection writes its socket directly: the listener knew the descriptor at accept.
            let id = try #require(try await server.hub.snapshot().get().first?.id)
            let shard = server.hub.loopShards[id.shard]
            let direct = try await shard.eventLoop.submit {
                (shard.connection(id) as? WebSocketConnection)?.directSocket != nil
            }.get()
            #expect(direct)
            await client.disconnect()
            try await eventually { server.hub.connectionCount == 0 }
        }
    }
}
