import Foundation
import Hummingbird
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardChannelClient
import SwitchboardServer
import SwitchboardTestSupport
import Testing

@Suite("ChannelClient rpc and idempotent publish", .timeLimit(.minutes(2)))
struct RPCTests {
    struct Profile: Codable, Equatable {
        let id: Int
    }

    /// What `RPCBackend` answers: the call's data and method.
    struct Echo: Codable, Equatable {
        let echo: Profile?
        let method: String
    }

    /// The body the server sends the backend for an `rpc`.
    struct Call: Decodable, Equatable {
        let client: String
        let transport: String
        let user: String?
        let method: String
        let data: Profile?
    }

    @Test func callsTheApplicationsBackendAndPassesItsErrorsThrough() async throws {
        let backend = try await RPCBackend.start()
        let server: TestServer
        do {
            server = try await TestServer.start(
                verifier: try await TestTokens.verifier(),
                proxy: ProxyConfiguration(rpcURL: backend.url, timeout: .seconds(5)))
        } catch {
            await backend.stop()
            throw error
        }
        let client = makeClient(port: server.port) { $0.token = TestTokens.make(user: "ada", expiresIn: 600) }
        try await finally({
            await client.close()
            await server.stop()
            await backend.stop()
        }) {
            client.connect()
            let echo = try await client.rpc(method: "getProfile", value: Profile(id: 7), returning: Echo.self)
            #expect(echo == Echo(echo: Profile(id: 7), method: "getProfile"))
            // Without data: none goes to the backend; the answer comes back as JSON text.
            let raw = try #require(try await client.rpc(method: "getProfile"))
            #expect(try JSONDecoder().decode(Echo.self, from: Data(raw.utf8)) == Echo(echo: nil, method: "getProfile"))

            guard case .connected(let clientID, _) = client.state else {
                Issue.record("not connected: \(client.state)")
                return
            }
            let calls = try backend.received.map { try JSONDecoder().decode(Call.self, from: Data($0.utf8)) }
            let call = { (data: Profile?) in
                Call(client: clientID, transport: "websocket", user: "ada", method: "getProfile", data: data)
            }
            #expect(calls == [call(Profile(id: 7)), call(nil)])
            #expect(backend.received.last?.contains("\"data\"") == false)

            await #expect(throws: ChannelClientError.server(code: 1001, message: "nope")) {
                try await client.rpc(method: "fail", data: #"{"id": 7}"#)
            }
            await #expect(throws: ChannelClientError.invalidJSON) {
                try await client.rpc(method: "getProfile", data: "{nope")
            }
            #expect(backend.received.count == 3)  // the invalid one never left the client
            try await client.ping()  // an error reply leaves the connection up
        }
    }

    @Test func refusesRPCWithoutABackend() async throws {
        let server = try await TestServer.start()
        let client = makeClient(port: server.port)
        try await finally({
            await client.close()
            await server.stop()
        }) {
            client.connect()
            let refused = await #expect(throws: ChannelClientError.self) { try await client.rpc(method: "getProfile") }
            #expect(refused?.serverCode == 104)
        }
    }

    @Test func publishesOnceForARepeatedIdempotencyKey() async throws {
        let server = try await TestServer.start()
        let client = makeClient(port: server.port)
        try await finally({
            await client.close()
            await server.stop()
        }) {
            let subscription = try client.subscribe("chat:orders")
            let events = Recorder(subscription.events)
            client.connect()
            try await events.wait("subscribed") { $0.subscriptions == [nil] }

            let first = try await client.publish(
                channel: "chat:orders", data: #"{"order":1}"#, idempotencyKey: "order-1")
            // A retry, as after a 110 that may have published: nothing new, the first one's offset.
            let again = try await client.publish(channel: "chat:orders", value: ["order": 1], idempotencyKey: "order-1")
            #expect(again == first)
            let second = try await client.publish(
                channel: "chat:orders", data: #"{"order":2}"#, idempotencyKey: "order-2")
            #expect(second == first + 1)
            try await events.wait("both publications") { $0.offsets.count >= 2 }
            try await client.ping()  // a duplicate would have arrived before this reply
            #expect(events.items.offsets == [first, second])
            #expect(events.items.publications.map(\.data) == [#"{"order":1}"#, #"{"order":2}"#])
            let history = try await client.history(channel: "chat:orders")
            #expect(history.publications.map(\.offset) == [first, second])
        }
    }
}

/// The application's backend for `rpc`: a Hummingbird app on a free loopback port whose POST /rpc echoes
/// the call's `data` and `method` (`{"result":{"data":{"echo":…,"method":…}}}`); method "fail" answers the
/// application's error 1001 "nope". It keeps every request body it got, in order.
final class RPCBackend: Sendable {
    /// The URL to give the server (`ProxyConfiguration.rpcURL`).
    let url: String
    // Lock: the request bodies received so far, appended by the route.
    private let bodies: NIOLockedValueBox<[String]>
    private let task: Task<Void, any Error>

    private init(url: String, bodies: NIOLockedValueBox<[String]>, task: Task<Void, any Error>) {
        self.url = url
        self.bodies = bodies
        self.task = task
    }

    /// The request bodies so far, in order.
    var received: [String] { bodies.withLockedValue { $0 } }

    static func start() async throws -> RPCBackend {
        let bodies = NIOLockedValueBox<[String]>([])
        let router = Router()
        router.post("rpc") { request, _ -> Response in
            let body = String(buffer: try await request.body.collect(upTo: 1 << 20))
            bodies.withLockedValue { $0.append(body) }
            return Response(
                status: .ok, headers: [.contentType: "application/json"],
                body: .init(byteBuffer: ByteBuffer(string: answer(to: body))))
        }
        let (ports, announce) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, configuration: .init(address: .hostname("127.0.0.1", port: 0)),
            onServerRunning: { channel in
                announce.yield(channel.localAddress?.port ?? 0)
                announce.finish()
            })
        let task = Task { try await app.runService() }
        var port = 0
        for await value in ports {
            port = value
            break
        }
        guard port != 0 else {
            task.cancel()
            _ = await task.result
            throw BindFailure(port: 0)
        }
        return RPCBackend(url: "http://127.0.0.1:\(port)/rpc", bodies: bodies, task: task)
    }

    /// The backend's answer to one call's body.
    private static func answer(to body: String) -> String {
        guard let call = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any],
            let method = call["method"] as? String
        else { return #"{"error":{"code":1400,"message":"not a call"}}"# }
        if method == "fail" { return #"{"error":{"code":1001,"message":"nope"}}"# }
        let answer: [String: Any] = ["result": ["data": ["echo": call["data"] ?? NSNull(), "method": method]]]
        guard let data = try? JSONSerialization.data(withJSONObject: answer) else {
            return #"{"error":{"code":1500,"message":"could not encode"}}"#
        }
        return String(decoding: data, as: UTF8.self)
    }

    func stop() async {
        task.cancel()
        _ = await task.result
    }
}
