import NIOCore
import NIOHTTP1
import SwitchboardClient
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardNIO

@Suite("Handshake", .timeLimit(.minutes(5)))
struct HandshakeTests {
    @Test func acceptsAValidUpgradeAndEchoes() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect()
        client.send(text: "hello")
        #expect(try await client.nextMessage() == .text("hello"))
        client.close()
        _ = try await client.waitForClose()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func clientEventsArriveInOrderAsAnAsyncSequence() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect()
        for text in ["one", "two", "three"] { client.send(text: text) }
        client.close(code: 1000, reason: "done")  // the server echoes the code, without a reason
        var seen: [ClientEvent] = []
        for try await event in client.events(idleTimeout: .seconds(20)) {
            if case .ping = event { continue }
            seen.append(event)
        }
        #expect(
            seen == [.text("one"), .text("two"), .text("three"), .close(code: 1000, reason: ""), .disconnected])
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func selectsTheApplicationsPreferredSubprotocol() async throws {
        let server = try await TestServer.start()
        let client = try await server.connect(subprotocols: ["chat.v1", "chat.v2"])
        #expect(client.subprotocol == "chat.v2")
        await client.disconnect()
        await server.stop()
    }

    @Test func rejectsAnUnsupportedVersionWith426() async throws {
        let server = try await TestServer.start()
        let response = try await exchange(upgradeRequest(version: "8"), port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 426"))
        #expect(response.contains("Sec-WebSocket-Version: 13"))
        #expect(server.rejectedCount("unsupported_version") == 1)
        await server.stop()
    }

    @Test(arguments: [
        (upgradeRequest(key: "short"), "Sec-WebSocket-Key"),
        (upgradeRequest(method: "POST"), "requires GET"),
        (upgradeRequest(connection: "keep-alive"), "Connection header"),
        ("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n", "Host"),
        ("this is not HTTP\r\n\r\n", "malformed"),
    ])
    func rejectsABadHandshakeWith400AndAReason(request: String, reason: String) async throws {
        let server = try await TestServer.start()
        let response = try await exchange(request, port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 400"), "\(response)")
        #expect(response.contains(reason), "\(response)")
        #expect(server.rejectedCount("bad_request") == 1)
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func answersAPlainHTTPRequestWith426() async throws {
        let server = try await TestServer.start()
        let response = try await exchange("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 426"))
        await server.stop()
    }

    @Test func pagesFromOtherOriginsGet403() async throws {
        let server = try await TestServer.start()
        let foreign = try await exchange(upgradeRequest(extra: "Origin: https://evil.example\r\n"), port: server.port)
        #expect(foreign.hasPrefix("HTTP/1.1 403"), "\(foreign)")
        #expect(foreign.contains("origin not allowed"))
        #expect(server.rejectedCount("origin_not_allowed") == 1)
        // The page's own origin (the Host it connects to) may connect.
        let own = try await RawConnection.connect(port: server.port)
        own.send(upgradeRequest(extra: "Origin: http://127.0.0.1\r\n"))
        try await eventually("101 for the page's own origin") { own.receivedText.hasPrefix("HTTP/1.1 101") }
        await own.close()
        try await server.expectNoConnections()
        await server.stop()
    }

    /// DNS rebinding: a page on a hostile domain that now resolves to 127.0.0.1 connects under its own name,
    /// so its Origin equals its Host. On loopback only loopback names are the server's own.
    @Test func aRebindingPageOnLoopbackGets403() async throws {
        let server = try await TestServer.start()
        let rebinding = upgradeRequest(extra: "Origin: http://rebind.example:\(server.port)\r\n")
            .replacingOccurrences(of: "Host: 127.0.0.1", with: "Host: rebind.example:\(server.port)")
        let answer = try await exchange(rebinding, port: server.port)
        #expect(answer.hasPrefix("HTTP/1.1 403"), "\(answer)")
        let local = try await RawConnection.connect(port: server.port)
        local.send(
            upgradeRequest(extra: "Origin: http://localhost:\(server.port)\r\n")
                .replacingOccurrences(of: "Host: 127.0.0.1", with: "Host: localhost:\(server.port)"))
        try await eventually("101 for localhost") { local.receivedText.hasPrefix("HTTP/1.1 101") }
        await local.close()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func unknownPathGets404() async throws {
        let server = try await TestServer.start()
        let response = try await exchange(upgradeRequest(path: "/elsewhere"), port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 404"))
        await server.stop()
    }

    @Test func applicationCanRejectWithAStatus() async throws {
        let server = try await TestServer.start()
        await #expect(throws: HandshakeFailure.self) {
            _ = try await server.connect(path: "/ws?reject=1")
        }
        let response = try await exchange(upgradeRequest(path: "/ws?reject=1"), port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 403"))
        #expect(response.contains("not allowed in"))
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func maxConnectionsAnswers503AndCounts() async throws {
        let server = try await TestServer.start { $0.maxConnections = 2 }
        let first = try await server.connectRegistered()
        let second = try await server.connectRegistered()
        do {
            _ = try await server.connect()
            Issue.record("third connection should have been refused")
        } catch let failure as HandshakeFailure {
            #expect(failure.status == 503)
            #expect(failure.body.contains("too many connections"))
        }
        #expect(server.rejectedCount("too_many_connections") == 1)
        #expect(server.hub.connectionCount == 2)
        // The slot frees when a connection leaves.
        first.close()
        _ = try await first.waitForClose()
        try await eventually { server.hub.connectionCount == 1 }
        let third = try await server.connectRegistered()
        await second.disconnect()
        await third.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func silentTCPClientIsDroppedAfterTheHandshakeTimeout() async throws {
        let server = try await TestServer.start { $0.handshakeTimeout = .milliseconds(300) }
        // Read before connecting: the server's timer starts at its accept.
        let started = ContinuousClock.now
        let silent = try await RawConnection.connect(port: server.port)
        let partial = try await RawConnection.connect(port: server.port)
        partial.send("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpg")
        _ = try await silent.waitForServerClose()
        _ = try await partial.waitForServerClose()
        // At the 0.3 s configured, not the test server's 5 s.
        let waited = ContinuousClock.now - started
        #expect(waited >= .milliseconds(300) && waited < .milliseconds(2500), "\(waited)")
        #expect(server.rejectedCount("timeout") == 2)
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func framesSentRightAfterTheRequestAreNotLost() async throws {
        let server = try await TestServer.start()
        let raw = try await RawConnection.connect(port: server.port)
        var bytes = ByteBuffer(string: upgradeRequest())
        var frame = ClientFrameEncoder.text("early")
        bytes.writeBuffer(&frame)
        raw.channel.writeAndFlush(bytes, promise: nil)
        try await eventually("the echo of the early frame") { raw.receivedText.contains("early") }
        await raw.close()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func acceptValueMatchesRFC6455Example() {
        #expect(HandshakeValidator.acceptValue(for: "dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    }

    /// The validator's header reading, case by case: tokens in lists and in any case, values trimmed,
    /// duplicates of single-valued headers refused.
    @Test func validatorReadsHeadersAsRFC7230Says() {
        func validate(_ headers: [(String, String)], uri: String = "/ws") -> String? {
            var head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri)
            head.headers = HTTPHeaders([("Host", "x")] + headers)
            switch HandshakeValidator.validate(head, path: "/ws") {
            case .success(let accept): return accept
            case .failure(let rejection): return "\(rejection.status.code) \(rejection.reason)"
            }
        }
        let key = ("Sec-WebSocket-Key", " dGhlIHNhbXBsZSBub25jZQ== ")
        let good = [
            ("upgrade", "WebSocket"), ("connection", "keep-alive, Upgrade"), key, ("sec-websocket-version", "13"),
        ]
        #expect(validate(good) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(validate(good, uri: "/ws?token=1") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(validate(good, uri: "/wsx")?.hasPrefix("404") == true)
        #expect(validate(good, uri: "/w")?.hasPrefix("404") == true)
        #expect(validate(good + [("Connection", "close")]) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        #expect(
            validate(good.filter { $0.0 != "connection" } + [("Connection", "keep-alive, upgraded")])?.hasPrefix("400")
                == true)
        #expect(validate(good + [("Sec-WebSocket-Version", "13")])?.hasPrefix("426") == true)
        #expect(
            validate(good.filter { $0.0 != "sec-websocket-version" } + [("Sec-WebSocket-Version", "13, 8")])?.hasPrefix(
                "426") == true)
        #expect(validate(good + [key])?.hasPrefix("400 Sec-WebSocket-Key") == true)
        for bad in [
            "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ!=", "dGhlIHNhbXBsZSBub25jZQAA",
            "dGhlIHNhbXBsZSBub25jZ===",
        ] {
            let headers = good.filter { $0.0 != "Sec-WebSocket-Key" } + [("Sec-WebSocket-Key", bad)]
            #expect(validate(headers)?.hasPrefix("400 Sec-WebSocket-Key") == true, "\(bad)")
        }
        #expect(validate(good.filter { $0.0 != "upgrade" } + [("Upgrade", "h2c")])?.hasPrefix("426") == true)
    }
}

@Suite("Admission", .timeLimit(.minutes(5)))
struct AdmissionTests {
    private func pendingHandshakes(_ server: TestServer) async throws -> Int {
        try await server.hub.statistics().get().pendingHandshakes
    }

    @Test func connectionsBeyondThePendingHandshakeBoundAreClosedAtAccept() async throws {
        let server = try await TestServer.start {
            $0.threads = 1
            $0.maxPendingHandshakes = 2
            $0.handshakeTimeout = .seconds(60)
        }
        let silent = [
            try await RawConnection.connect(port: server.port), try await RawConnection.connect(port: server.port),
        ]
        try await eventually("two handshakes pending") { try await pendingHandshakes(server) == 2 }

        let refused = try await RawConnection.connect(port: server.port)
        #expect(try await refused.waitForServerClose().isEmpty)
        #expect(server.rejectedCount("too_many_pending") == 1)

        // Room again once a pending one goes: a real client upgrades.
        await silent[0].close()
        try await eventually("one handshake pending") { try await pendingHandshakes(server) == 1 }
        let client = try await server.connect()
        client.send(text: "still serving")
        #expect(try await client.nextMessage() == .text("still serving"))

        await silent[1].close()
        await client.disconnect()
        try await server.expectNoConnections()
        #expect(try await pendingHandshakes(server) == 0)
        await server.stop()
    }

    @Test func upgradesBeyondTheRateGet503WithRetryAfter() async throws {
        // 0.2 upgrades per second: a burst of one, then the next token comes after 5 s.
        let server = try await TestServer.start {
            $0.threads = 1
            $0.maxUpgradesPerSecond = 0.2
        }
        let first = try await server.connect()
        let response = try await exchange(upgradeRequest(), port: server.port)
        #expect(response.hasPrefix("HTTP/1.1 503"), "\(response)")
        #expect(response.contains("Retry-After: 1"))
        #expect(response.contains("retry later"))
        #expect(server.rejectedCount("rate_limited") == 1)
        first.send(text: "unaffected")
        #expect(try await first.nextMessage() == .text("unaffected"))
        await first.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}
