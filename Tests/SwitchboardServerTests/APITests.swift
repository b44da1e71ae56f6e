import AsyncHTTPClient
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import Prometheus
import SwitchboardClient
import SwitchboardHTTPAPI
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// A channels server with its HTTP API on loopback, both on free ports, metrics in their own registry.
struct APIHarness {
    static let key = "test-api-key-0123456789"
    let channels: ChannelsServer
    let api: APIServer
    let task: Task<Void, any Error>
    let base: String
    let registry: PrometheusCollectorRegistry

    static func start(
        verifier: TokenVerifier? = nil, broker: any Broker = LocalBroker(), maxBodySize: Int = 1 << 20,
        unreachable: @escaping @Sendable () async -> String? = { nil },
        api configureAPI: (inout APIConfiguration) -> Void = { _ in },
        channels configure: (inout ChannelsConfiguration) -> Void = { _ in }
    ) async throws -> APIHarness {
        let registry = PrometheusCollectorRegistry()
        let factory = PrometheusMetricsFactory(registry: registry)
        let channels = try await ChannelsServer.start(
            broker: broker, verifier: verifier, metrics: factory, channels: configure)
        var configuration = APIConfiguration()
        configuration.port = 0
        configuration.apiKey = key
        configuration.maxBodySize = maxBodySize
        configureAPI(&configuration)
        let hub = channels.server.hub
        let api = try APIServer(
            configuration: configuration, application: channels.application, ready: { !hub.isShuttingDown },
            unreachable: unreachable,
            registry: registry, metricsFactory: factory,
            logger: Logger(label: "api-test", factory: { _ in SwiftLogNoOpLogHandler() }))
        let task = Task { try await api.run() }
        let address = await api.boundAddress()
        return APIHarness(
            channels: channels, api: api, task: task, base: "http://127.0.0.1:\(address?.port ?? 0)",
            registry: registry)
    }

    func stop() async {
        await channels.stop()
        task.cancel()
        _ = await task.result
    }

    /// POSTs `body` (JSON text) to `/api/<endpoint>`; returns the status and the parsed JSON object.
    func call(
        _ endpoint: String, _ body: String, headers: [(String, String)] = [("X-API-Key", key)]
    ) async throws -> (status: Int, json: [String: Any]) {
        var request = HTTPClientRequest(url: "\(base)/api/\(endpoint)")
        request.method = .POST
        request.headers.add(contentsOf: headers)
        request.body = .bytes(ByteBuffer(string: body))
        return try await send(request)
    }

    func call(_ endpoint: String, _ object: [String: Any]) async throws -> (status: Int, json: [String: Any]) {
        let data = try JSONSerialization.data(withJSONObject: object)
        return try await call(endpoint, String(decoding: data, as: UTF8.self))
    }

    func get(_ path: String) async throws -> (status: Int, text: String) {
        let response = try await HTTPClient.shared.execute(HTTPClientRequest(url: base + path), timeout: .seconds(10))
        return (Int(response.status.code), String(buffer: try await response.body.collect(upTo: 4 << 20)))
    }

    private func send(_ request: HTTPClientRequest) async throws -> (status: Int, json: [String: Any]) {
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 4 << 20)
        let json = (try? JSONSerialization.jsonObject(with: Data(buffer: body))) as? [String: Any] ?? [:]
        return (Int(response.status.code), json)
    }
}

extension Dictionary where Key == String, Value == Any {
    var errorCode: Int? { (self["error"] as? [String: Any])?["code"] as? Int }
}

/// Every endpoint of the server API over real HTTP, with real WebSocket clients on the other side.
@Suite("Server API", .serialized, .timeLimit(.minutes(5)))
struct APITests {
    @Test func theKeyIsRequiredAndComparedExactly() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            #expect(try await api.call("info", "{}", headers: []).status == 401)
            let wrong = try await api.call("info", "{}", headers: [("X-API-Key", "test-api-key-0123456788")])
            #expect(wrong.status == 401)
            #expect(wrong.json.errorCode == 115)
            #expect(
                try await api.call("info", "{}", headers: [("Authorization", "apikey \(APIHarness.key)")]).status == 200
            )
            #expect(try await api.call("info", "{}").status == 200)
            #expect(try await api.get("/health").status == 200)
            #expect(try await api.get("/ready").status == 200)
        }
    }

    @Test func anAPIOnAnotherHostNeedsAKey() throws {
        var configuration = APIConfiguration()
        configuration.host = "0.0.0.0"
        let application = ChannelsApplication()
        #expect(throws: APIConfigurationError.self) {
            try APIServer(configuration: configuration, application: application, ready: { true })
        }
        // Not a loopback address, however it starts.
        configuration.host = "127.attacker.example"
        #expect(throws: APIConfigurationError.self) {
            try APIServer(configuration: configuration, application: application, ready: { true })
        }
        configuration.apiKey = ""
        #expect(throws: APIConfigurationError.self) {
            try APIServer(configuration: configuration, application: application, ready: { true })
        }
    }

    @Test func badRequestsGetTheirCodes() async throws {
        let api = try await APIHarness.start(maxBodySize: 1024)
        try await finally({ await api.stop() }) {
            let cases: [(String, String, Int, Int)] = [
                ("publish", "not json", 400, 100),
                ("publish", "[1,2]", 400, 100),
                ("publish", #"{"data": 1}"#, 400, 100),
                ("publish", #"{"channel": 5, "data": 1}"#, 400, 100),
                ("publish", #"{"channel": "bad name!", "data": 1}"#, 400, 103),
                ("publish", #"{"channel": "nowhere:x", "data": 1}"#, 400, 102),
                ("history", #"{"channel": "chat:a", "limit": -1}"#, 400, 100),
                ("history", #"{"channel": "a"}"#, 403, 104),
                ("disconnect", #"{"code": 4000}"#, 400, 100),
                ("disconnect", #"{"user": "a", "code": 1000}"#, 400, 100),
                ("disconnect", #"{"client": "x-1"}"#, 400, 100),
                ("broadcast", #"{"channels": ["chat:a", "bad name"], "data": 1}"#, 400, 103),
                ("teleport", "{}", 404, 116),
                (
                    "publish", "{\"channel\": \"chat:a\", \"data\": \"\(String(repeating: "x", count: 2000))\"}", 413,
                    117
                ),
            ]
            for (endpoint, body, status, code) in cases {
                let (got, json) = try await api.call(endpoint, body)
                #expect(got == status, "\(endpoint) \(body.prefix(60))")
                #expect(json.errorCode == code, "\(endpoint) \(body.prefix(60))")
            }
        }
    }

    @Test func publishBroadcastAndHistory() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let client = try await api.channels.connect(user: "ada")
            _ = try await client.call(["cmd": "subscribe", "channel": "chat:a"])
            _ = try await client.call(["cmd": "subscribe", "channel": "chat:b"])
            let published = try await api.call("publish", ["channel": "chat:a", "data": ["n": 1]])
            #expect(published.json["offset"] as? Int == 1)
            let push = try await client.nextPush("pub")
            #expect((push["data"] as? [String: Any])?["n"] as? Int == 1)
            #expect(push["user"] == nil)

            let broadcast = try await api.call(
                "broadcast", ["channels": ["chat:a", "chat:b", "nowhere:x"], "data": "hi"])
            let results = broadcast.json["results"] as? [[String: Any]] ?? []
            #expect(results.map { $0["offset"] as? Int } == [2, 1, nil])
            #expect((results.last?["error"] as? [String: Any])?["code"] as? Int == 102)
            var channels: Set<String> = []
            for _ in 0..<2 { channels.insert(try await client.nextPush("pub")["channel"] as? String ?? "") }
            #expect(channels == ["chat:a", "chat:b"])

            _ = try await api.call("publish", ["channel": "chat:a", "data": 3])
            let newest = try await api.call("history", ["channel": "chat:a", "limit": 2, "reverse": true])
            let offsets = (newest.json["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int }
            #expect(offsets == [3, 2])
            let since = try await api.call("history", ["channel": "chat:a", "since": 1])
            #expect((since.json["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int } == [2, 3])
            #expect(try await api.call("history_remove", ["channel": "chat:a"]).status == 200)
            let emptied = try await api.call("history", ["channel": "chat:a"])
            #expect((emptied.json["publications"] as? [Any])?.isEmpty == true)
            #expect(emptied.json["offset"] as? Int == 3)
        }
    }

    /// The API keeps `data` byte for byte (one JSON path with the client protocol: numbers, spacing, key
    /// order and escapes as sent), and an idempotency key makes a repeated publish answer the first offset.
    @Test func publishKeepsTheBackendsBytesAndAnIdempotencyKeyPublishesOnce() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let client = try await api.channels.connect(user: "ada")
            _ = try await client.call(["cmd": "subscribe", "channel": "archive:exact"])
            let data = #"{"z": 1.50, "a" :[1e3, "\u00e9"], "big": 12345678901234567890}"#
            let body = #"{"channel":"archive:exact","data":"# + data + #","idempotency_key":"pay-1"}"#
            let first = try await api.call("publish", body)
            #expect(first.json["offset"] as? Int == 1)
            guard case .text(let pushed) = try await client.client.nextMessage() else {
                throw ConditionFailure("expected the publication")
            }
            #expect(pushed.hasSuffix(#""data":"# + data + "}"))
            let repeated = try await api.call("publish", body)
            #expect(repeated.status == 200)
            #expect(repeated.json["offset"] as? Int == 1)
            let other = try await api.call(
                "publish", #"{"channel":"archive:exact","data":2,"idempotency_key":"pay-2"}"#)
            #expect(other.json["offset"] as? Int == 2)
            // Only the two publications reached the subscriber.
            #expect((try await client.nextPush("pub"))["offset"] as? Int == 2)
            // A client's keys are its own: the API's "pay-1" does not swallow the client's, nor another
            // user's; the client's own repeat is the same publication; a bad key is error 100.
            let publish: [String: Any] = [
                "cmd": "publish", "channel": "archive:exact", "data": 1, "idempotency_key": "pay-1",
            ]
            let fromClient = try await client.call(publish)
            #expect(fromClient.reply.ok?["offset"] as? Int == 3)
            let again = try await client.call(publish)
            #expect(again.reply.ok?["offset"] as? Int == 3)
            let bob = try await api.channels.connect(user: "bob")
            #expect(try await bob.call(publish).reply.ok?["offset"] as? Int == 4)
            var delivered = (fromClient.pushes + again.pushes).filter { $0.push == "pub" }.compactMap(\.offset)
            while delivered.count < 2 { delivered += [try await client.nextPush("pub").offset].compactMap { $0 } }
            #expect(delivered == [3, 4], "the repeat published nothing")
            let badKey = try await client.call([
                "cmd": "publish", "channel": "archive:exact", "data": 1, "idempotency_key": "",
            ])
            #expect(badKey.reply.errorCode == 100)
            let tooLong = String(repeating: "k", count: 257)
            let refused = try await api.call(
                "publish", #"{"channel":"archive:exact","data":3,"idempotency_key":"\#(tooLong)"}"#)
            #expect(refused.status == 400)
            #expect(
                try await api.call("publish", #"{"channel":"archive:exact","data":3,"idempotency_key":7}"#).status
                    == 400)
            #expect(try await api.call("publish", #"{"channel":"archive:exact","data":}"#).status == 400)
            // A key twice, and bytes that are not UTF-8: refused, not guessed at.
            let twice = try await api.call("publish", #"{"channel":"archive:exact","data":1,"data":2}"#)
            #expect(twice.status == 400)
            var request = HTTPClientRequest(url: "\(api.base)/api/publish")
            request.method = .POST
            request.headers.add(name: "X-API-Key", value: APIHarness.key)
            request.body = .bytes(
                ByteBuffer(bytes: Array(#"{"channel":"archive:exact","data":""#.utf8) + [0xC3, 0x28, 0x22, 0x7D]))
            let invalid = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            #expect(invalid.status == .badRequest)
        }
    }

    @Test func sendReachesEveryConnectionOfTheUserAndNoOneElse() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let first = try await api.channels.connect(user: "ada")
            let second = try await api.channels.connect(user: "ada")
            let bob = try await api.channels.connect(user: "bob")
            for client in [first, second, bob] { _ = try await client.call(["cmd": "ping"]) }
            #expect(try await api.call("send", ["user": "ada", "data": ["text": "for ada"]]).status == 200)
            #expect(try await api.call("send", ["user": "bob", "data": ["text": "for bob"]]).status == 200)
            for client in [first, second] {
                let message = try await client.nextPush("message")
                #expect((message["data"] as? [String: Any])?["text"] as? String == "for ada")
            }
            // Bob's first message is his own: ada's never reached him.
            #expect((try await bob.nextPush("message")["data"] as? [String: Any])?["text"] as? String == "for bob")
        }
    }

    @Test func serverSideSubscribeUnsubscribeAndDisconnect() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let first = try await api.channels.connect(user: "ada")
            let second = try await api.channels.connect(user: "ada")
            for client in [first, second] { _ = try await client.call(["cmd": "ping"]) }
            #expect(try await api.call("subscribe", ["user": "ada", "channel": "chat:x"]).status == 200)
            for client in [first, second] {
                #expect(try await client.nextPush("subscribed")["channel"] as? String == "chat:x")
            }
            _ = try await api.call("publish", ["channel": "chat:x", "data": 1])
            for client in [first, second] { #expect(try await client.nextPush("pub")["offset"] as? Int == 1) }
            #expect(try await api.call("unsubscribe", ["user": "ada", "channel": "chat:x"]).status == 200)
            for client in [first, second] {
                #expect(try await client.nextPush("unsubscribed")["channel"] as? String == "chat:x")
            }

            let client = try await first.call(["cmd": "connect"]).reply.ok?["client"] as? String ?? ""
            let one = try await api.call(
                "disconnect", ["client": client, "code": 4100, "reason": "bye", "reconnect": false])
            #expect(one.json["disconnected"] as? Int == 1)
            let notice = try await first.nextPush("disconnect")
            #expect(notice["reconnect"] as? Bool == false)
            #expect(try await first.client.waitForClose()?.code == 4100)
            let all = try await api.call("disconnect", ["user": "ada"])
            #expect(all.json["disconnected"] as? Int == 1)
            let close = try await second.client.waitForClose()
            #expect(close?.code == 4000)
            #expect(close?.reason == "disconnected by server")
        }
    }

    /// A backend revoking access while the client's own subscribe is still at the broker must win.
    @Test func unsubscribeWaitsForASubscribeInFlight() async throws {
        let broker = RemoteBroker(delay: .milliseconds(200))
        let api = try await APIHarness.start(broker: broker)
        let client = try await api.channels.connect(user: "ada")
        _ = try await client.call(["cmd": "ping"])
        let subscribe = client.send(["cmd": "subscribe", "channel": "chat:revoked"])
        try await eventually("the subscribe to reach the broker") { broker.subscribes.load(ordering: .relaxed) == 1 }
        #expect(try await api.call("unsubscribe", ["user": "ada", "channel": "chat:revoked"]).status == 200)
        let reply = try await client.next()
        #expect(reply.id == subscribe)
        #expect(reply.ok != nil)
        #expect(try await client.nextPush("unsubscribed")["channel"] as? String == "chat:revoked")
        #expect(try await client.call(["cmd": "unsubscribe", "channel": "chat:revoked"]).reply.errorCode == 108)
        try await broker.shutdown()
        await api.stop()
    }

    @Test func refreshSetsTheUsersExpiry() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let client = try await api.channels.connect(user: "ada")
            _ = try await client.call(["cmd": "ping"])
            #expect(try await api.call("refresh", ["user": "ada"]).status == 400)
            let refreshed = try await api.call(
                "refresh", ["user": "ada", "expires_at": Date().timeIntervalSince1970 + 1])
            #expect(refreshed.json["connections"] as? Int == 1)
            _ = try await client.nextPush("refresh")
            #expect(try await client.client.waitForClose()?.code == 4001)
        }
    }

    @Test func presenceChannelsAndInfo() async throws {
        let api = try await APIHarness.start()
        try await finally({ await api.stop() }) {
            let ada = try await api.channels.connect(user: "ada")
            let bob = try await api.channels.connect(user: "bob")
            _ = try await ada.call(["cmd": "subscribe", "channel": "chat:lobby"])
            _ = try await bob.call(["cmd": "subscribe", "channel": "chat:lobby"])
            _ = try await bob.call(["cmd": "subscribe", "channel": "news"])
            let presence = try await api.call("presence", ["channel": "chat:lobby"])
            #expect(presence.json["connections"] as? Int == 2)
            #expect(
                Set((presence.json["members"] as? [[String: Any]])?.compactMap { $0["user"] as? String } ?? []) == [
                    "ada", "bob",
                ])
            let stats = try await api.call("presence_stats", ["channel": "chat:lobby"])
            #expect(stats.json["users"] as? Int == 2)
            #expect(stats.json["members"] == nil)
            let all = try await api.call("channels", [:])
            let listed = (all.json["channels"] as? [[String: Any]])?.map {
                "\($0["channel"] ?? "")=\($0["subscribers"] ?? "")"
            }
            #expect(listed == ["chat:lobby=2", "news=1"])
            let filtered = try await api.call("channels", ["pattern": "chat:*"])
            #expect((filtered.json["channels"] as? [Any])?.count == 1)
            let info = try await api.call("info", [:])
            #expect(info.json["connections"] as? Int == 2)
            #expect(info.json["users"] as? Int == 2)
            #expect(info.json["channels"] as? Int == 2)
            #expect(info.json["subscriptions"] as? Int == 3)
            #expect(info.json["version"] as? String == APIServer.version)
        }
    }

    /// Known traffic, then the exact values in `/metrics`.
    @Test func metricsCountKnownTraffic() async throws {
        let verifier = try await TokenVerifier.make(.testDefaults { $0.allowAnonymous = true })
        let api = try await APIHarness.start(verifier: verifier)
        try await finally({ await api.stop() }) {
            let subscribers = [try await api.channels.connect(), try await api.channels.connect()]
            // The default namespace: no presence, so no join events among the deliveries.
            for client in subscribers { _ = try await client.call(["cmd": "subscribe", "channel": "room"]) }
            let intruder = try await api.channels.connect()
            _ = try await intruder.call(["cmd": "connect", "token": "not-a-token"])
            _ = try await intruder.client.waitForClose()
            _ = try await api.call("publish", ["channel": "room", "data": 1])
            for client in subscribers { _ = try await client.nextPush("pub") }
            _ = try await api.call("publish", ["channel": "bad name", "data": 1])

            let metrics = try await api.get("/metrics").text
            func value(_ series: String) -> Double? {
                metrics.split(separator: "\n").first { $0.hasPrefix(series + " ") }
                    .flatMap { Double($0.split(separator: " ").last ?? "") }
            }
            #expect(value("switchboard_connections_accepted_total") == 3)
            #expect(value(#"switchboard_auth_failures_total{reason="malformed"}"#) == 1)
            #expect(value(#"switchboard_connections_closed_total{reason="invalid_token"}"#) == 1)
            #expect(value("switchboard_deliveries_total") == 2)
            #expect(value("switchboard_subscriptions") == 2)
            #expect(value("switchboard_channels") == 1)
            #expect(value(#"switchboard_api_requests_total{endpoint="/api/publish",status="200"}"#) == 1)
            #expect(value(#"switchboard_api_requests_total{endpoint="/api/publish",status="400"}"#) == 1)
            #expect(value("switchboard_handshake_duration_seconds_count") == 3)
            #expect(value("switchboard_publish_to_delivery_seconds_count") ?? 0 >= 1)
            #expect(metrics.contains("# TYPE switchboard_publish_to_delivery_seconds histogram"))
        }
    }

    @Test func readyTurnsFalseWhileDraining() async throws {
        let api = try await APIHarness.start()
        #expect(try await api.get("/ready").status == 200)
        // A client that never answers the close frame keeps the drain going for a while.
        var options = ClientOptions(path: "/ws")
        options.autoPong = false
        let stubborn = try await WebSocketClient.connect(
            host: "127.0.0.1", port: api.channels.port, options: options, group: .singletonMultiThreadedEventLoopGroup)
        let draining = Task { await api.channels.stop() }
        try await eventually("/ready to say no") { try await api.get("/ready").status == 503 }
        #expect(try await api.get("/ready").text.contains("\"ready\":false"))
        #expect(try await api.get("/health").status == 200)
        await stubborn.disconnect()
        await draining.value
        api.task.cancel()
        _ = await api.task.result
    }

    /// A broker that does not answer in time: error 110 with HTTP 503, as docs/API.md says, and the publish's
    /// message says it may have been made (a blind retry could publish twice).
    @Test func aBrokerTimeoutIs503WithError110() async throws {
        let broker = RemoteBroker(delay: .seconds(2))
        let api = try await APIHarness.start(broker: broker, channels: { $0.brokerTimeout = .milliseconds(200) })
        try await finally({
            await api.stop()
            try? await broker.shutdown()
        }) {
            let (status, json) = try await api.call("publish", ["channel": "chat:slow", "data": 1])
            #expect(status == 503)
            let error = json["error"] as? [String: Any]
            #expect(error?["code"] as? Int == 110)
            #expect((error?["message"] as? String)?.contains("may have been made") == true, "\(json)")
            let history = try await api.call("history", ["channel": "chat:slow"])
            #expect(history.status == 503)
        }
    }

    /// A node that cannot reach what it needs (Redis) is not ready, and says why.
    @Test func readyIsFalseWhileADependencyIsUnreachable() async throws {
        let down = NIOLockedValueBox(false)
        let api = try await APIHarness.start(unreachable: {
            down.withLockedValue { $0 } ? "cannot reach Redis redis://127.0.0.1:1/0 (pub/sub link down)" : nil
        })
        try await finally({ await api.stop() }) {
            #expect(try await api.get("/ready").status == 200)
            down.withLockedValue { $0 = true }
            let answer = try await api.get("/ready")
            #expect(answer.status == 503)
            #expect(answer.text.contains("cannot reach Redis"))
            down.withLockedValue { $0 = false }
            #expect(try await api.get("/ready").status == 200)
        }
    }

    private var port: (APIHarness) -> Int { { Int($0.base.split(separator: ":").last ?? "") ?? 0 } }

    /// Connections that send nothing, stop mid-headers, or declare a body and send none are closed after
    /// their timeout instead of holding a descriptor for ever; requests keep working meanwhile.
    @Test func slowOrSilentRequestsAreClosedInTime() async throws {
        let api = try await APIHarness.start(api: {
            $0.headerTimeout = .milliseconds(300)
            $0.bodyTimeout = .milliseconds(300)
        })
        try await finally({ await api.stop() }) {
            let silent = try await RawConnection.connect(port: port(api))
            let halfHeaders = try await RawConnection.connect(port: port(api))
            halfHeaders.send("POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Ke")
            let noBody = try await RawConnection.connect(port: port(api))
            noBody.send(
                "POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Key: \(APIHarness.key)\r\nContent-Length: 100\r\n\r\n{")
            // Answered before its body was read (a wrong key), then the body: the next request is still held to
            // the header deadline.
            let answeredEarly = try await RawConnection.connect(port: port(api))
            answeredEarly.send(
                "POST /api/info HTTP/1.1\r\nHost: x\r\nX-API-Key: wrong-key-0000000000\r\nContent-Length: 2\r\n\r\n")
            try await eventually("the early 401") { answeredEarly.receivedText.contains("401") }
            answeredEarly.send("{}")
            for connection in [silent, halfHeaders, noBody, answeredEarly] {
                _ = try await connection.waitForServerClose(timeout: .seconds(20))
            }
            #expect(try await api.call("info", "{}").status == 200)
        }
    }

    /// A body declared larger than the limit is refused with 413 before any of it is read, and
    /// `Expect: 100-continue` is answered.
    @Test func oversizeBodiesAreRefusedUpFrontAndExpectContinueIsAnswered() async throws {
        let api = try await APIHarness.start(maxBodySize: 1000)
        try await finally({ await api.stop() }) {
            let big = try await RawConnection.connect(port: port(api))
            big.send(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: \(APIHarness.key)\r\nContent-Length: 2000000\r\n"
                    + "Expect: 100-continue\r\n\r\n")
            let refused = try await big.waitForServerClose(timeout: .seconds(20))
            #expect(refused.hasPrefix("HTTP/1.1 413"), "\(refused)")
            #expect(refused.contains("\"code\":117"))
            let small = try await RawConnection.connect(port: port(api))
            let body = #"{"channel":"chat:x","data":1}"#
            small.send(
                "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: \(APIHarness.key)\r\nContent-Length: \(body.utf8.count)\r\n"
                    + "Expect: 100-continue\r\nConnection: close\r\n\r\n")
            try await eventually("100 Continue") { small.receivedText.hasPrefix("HTTP/1.1 100") }
            small.send(body)
            let answered = try await small.waitForServerClose(timeout: .seconds(20))
            #expect(answered.contains("HTTP/1.1 200"), "\(answered)")
        }
    }

    /// The API holds at most its own number of connections: more wait (in the backlog) until one goes.
    @Test func theAPIHoldsAtMostItsConnectionCap() async throws {
        let api = try await APIHarness.start(api: { $0.maxConnections = 2 })
        try await finally({ await api.stop() }) {
            let held = [
                try await RawConnection.connect(port: port(api)), try await RawConnection.connect(port: port(api)),
            ]
            // Each held connection is answered once (keep-alive): the server has taken both before the third.
            for connection in held {
                connection.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                try await eventually("a held connection served") { connection.receivedText.hasPrefix("HTTP/1.1 200") }
            }
            let waiting = try await RawConnection.connect(port: port(api))
            waiting.send("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try await Task.sleep(for: .milliseconds(500))
            #expect(waiting.receivedText.isEmpty, "served beyond the cap")
            await held[0].close()
            let answer = try await waiting.waitForServerClose(timeout: .seconds(20))
            #expect(answer.hasPrefix("HTTP/1.1 200"))
            await held[1].close()
        }
    }

    /// Guessing keys: after a burst of wrong ones the address gets 429 (even with the right key) until it
    /// slows to one a second.
    @Test func wrongAPIKeysAreThrottledPerAddress() async throws {
        let api = try await APIHarness.start(api: { $0.failedKeyBurst = 5 })
        try await finally({ await api.stop() }) {
            let wrong = [("X-API-Key", "not-the-key-0000000000")]
            for _ in 0..<5 { #expect(try await api.call("info", "{}", headers: wrong).status == 401) }
            #expect(try await api.call("info", "{}", headers: wrong).status == 429)
            #expect(try await api.call("info", "{}").status == 429, "throttled whatever the key")
            try await eventually("the bucket refilled") { try await api.call("info", "{}").status == 200 }
        }
    }

    /// The server API is the backend's, with the API key: its subscribe is the backend's decision and
    /// passes over what the namespace asks of clients (a `#` user list, a subscription token), as
    /// docs/API.md and docs/CONFIGURATION.md say. The same channels stay closed to the client itself.
    @Test func theBackendsSubscribePassesOverClientPermissions() async throws {
        let api = try await APIHarness.start(channels: { channels in
            var secret = NamespaceOptions()
            secret.permissions.subscribe = .token
            channels.namespaces["private"] = secret
        })
        try await finally({ await api.stop() }) {
            let ada = try await api.channels.connect(user: "ada")
            #expect(try await ada.call(["cmd": "subscribe", "channel": "chat:#bob"]).reply.errorCode == 104)
            #expect(try await ada.call(["cmd": "subscribe", "channel": "private:plans"]).reply.errorCode == 104)
            for channel in ["chat:#bob", "private:plans"] {
                #expect(try await api.call("subscribe", ["user": "ada", "channel": channel]).status == 200)
                #expect(try await ada.nextPush("subscribed")["channel"] as? String == channel)
            }
        }
    }
}
