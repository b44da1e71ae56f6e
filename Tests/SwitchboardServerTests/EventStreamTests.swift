import CompressNIO
import Foundation
import MetricsTestKit
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// One event of a `text/event-stream` body.
struct StreamEvent {
    var id: String?
    var event: String?
    var data: [String: Any] = [:]
}

/// A stream read over a raw socket, as `curl -N` reads it: the head, then events.
struct EventStreamReader {
    let raw: RawConnection

    static func open(
        _ port: Int, _ target: String, method: String = "GET", headers: [String] = [], body: String? = nil
    ) async throws -> EventStreamReader {
        let raw = try await RawConnection.connect(port: port)
        var request = "\(method) \(target) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for header in headers { request += header + "\r\n" }
        if let body { request += "Content-Length: \(body.utf8.count)\r\n\r\n" + body } else { request += "\r\n" }
        raw.send(request)
        return EventStreamReader(raw: raw)
    }

    var head: String? {
        let text = raw.receivedText
        guard let end = text.range(of: "\r\n\r\n") else { return nil }
        return String(text[..<end.lowerBound])
    }

    var status: Int? { head.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } }

    var body: String {
        let text = raw.receivedText
        guard let end = text.range(of: "\r\n\r\n") else { return "" }
        return String(text[end.upperBound...])
    }

    /// The complete events so far (comments left out).
    var events: [StreamEvent] { Self.parse(body) }

    static func parse(_ body: String) -> [StreamEvent] {
        var events: [StreamEvent] = []
        let blocks = body.components(separatedBy: "\n\n")
        for block in blocks.dropLast() {  // the last one is not complete yet
            var event = StreamEvent()
            var data: [String] = []
            for line in block.split(separator: "\n") {
                if line.hasPrefix("id: ") { event.id = String(line.dropFirst(4)) }
                if line.hasPrefix("event: ") { event.event = String(line.dropFirst(7)) }
                if line.hasPrefix("data: ") { data.append(String(line.dropFirst(6))) }
            }
            guard !data.isEmpty else { continue }
            let json = data.joined(separator: "\n")
            event.data = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any] ?? [:]
            events.append(event)
        }
        return events
    }

    func waitFor(_ what: String, _ condition: @escaping ([StreamEvent]) -> Bool) async throws {
        try await eventually(what) { condition(events) }
    }

    /// The offsets of the publications received, in order.
    var publicationOffsets: [Int] {
        events.filter { $0.event == "publication" }.compactMap { $0.data["offset"] as? Int }
    }

    func close() async { await raw.close() }
}

@Suite("Event streams and the HTTP transport", .serialized, .timeLimit(.minutes(5)))
struct EventStreamTests {
    /// Users name themselves with `?user=` (the demo's way); the rest of the query is the stream's.
    static let byQuery: ChannelsApplication.Authenticator = { request in
        .accept(userID: QueryParameters(request.uri).first("user"), subprotocol: nil)
    }

    func start(
        transport: (inout SwitchboardConfiguration) -> Void = { _ in },
        channels: (inout ChannelsConfiguration) -> Void = { _ in }
    ) async throws -> ChannelsServer {
        try await ChannelsServer.start(transport: transport, channels: channels, authenticate: Self.byQuery)
    }

    func publish(_ server: ChannelsServer, _ channel: String, _ data: String) async throws -> Int {
        try await server.application.publish(
            channel: channel, data: data, on: MultiThreadedEventLoopGroup.singleton.next()
        ).get().offset
    }

    @Test func publicationsArriveInOrderWithIdsAndAStreamResumesFromItsLastEventID() async throws {
        let server = try await start()
        try await finally({ await server.stop() }) {
            let first = try await EventStreamReader.open(server.port, "/sse?channel=chat:room")
            try await first.waitFor("subscribed") { $0.first?.event == "subscribed" }
            #expect(first.head?.contains("Content-Type: text/event-stream") == true)
            let epoch = try #require(first.events[0].data["epoch"] as? String)
            #expect(first.events[0].id == "\(epoch):0")
            for n in 1...3 { _ = try await publish(server, "chat:room", #"{"n":\#(n)}"#) }
            try await first.waitFor("three publications") { $0.filter { $0.event == "publication" }.count == 3 }
            let publications = first.events.filter { $0.event == "publication" }
            #expect(publications.map(\.id) == ["\(epoch):1", "\(epoch):2", "\(epoch):3"])
            #expect(publications.map { ($0.data["data"] as? [String: Any])?["n"] as? Int } == [1, 2, 3])
            #expect(publications.allSatisfy { $0.data["push"] as? String == "pub" })
            await first.close()

            // Dropped after the second; two more are published while it is away.
            for n in 4...5 { _ = try await publish(server, "chat:room", #"{"n":\#(n)}"#) }
            let resumed = try await EventStreamReader.open(
                server.port, "/sse?channel=chat:room", headers: ["Last-Event-ID: \(epoch):2"])
            try await resumed.waitFor("three missed") { $0.filter { $0.event == "publication" }.count == 3 }
            let subscribed = try #require(resumed.events.first)
            #expect(subscribed.event == "subscribed")
            #expect(subscribed.data["recovered"] as? Bool == true)
            #expect(subscribed.id == "\(epoch):2")
            _ = try await publish(server, "chat:room", #"{"n":6}"#)
            try await resumed.waitFor("the live one") { $0.filter { $0.event == "publication" }.count == 4 }
            #expect(resumed.publicationOffsets == [3, 4, 5, 6])  // every missed one exactly once, then live
            await resumed.close()

            // `since` does the same for a URL built by hand.
            let since = try await EventStreamReader.open(server.port, "/sse?channel=chat:room&since=\(epoch):5")
            try await since.waitFor("one missed") { $0.filter { $0.event == "publication" }.count == 1 }
            #expect(since.publicationOffsets == [6])
            await since.close()

            // Another epoch's position, or one older than history, cannot be recovered: never a silent gap.
            let otherEpoch = try await EventStreamReader.open(server.port, "/sse?channel=chat:room&since=zzz:1")
            try await otherEpoch.waitFor("subscribed") { $0.first?.event == "subscribed" }
            #expect(otherEpoch.events[0].data["recovered"] as? Bool == false)
            #expect(otherEpoch.events[0].id == "\(epoch):6")
            await otherEpoch.close()
            for n in 0..<105 { _ = try await publish(server, "chat:room", #"{"m":\#(n)}"#) }
            let gone = try await EventStreamReader.open(
                server.port, "/sse?channel=chat:room", headers: ["Last-Event-ID: \(epoch):2"])
            try await gone.waitFor("subscribed") { $0.first?.event == "subscribed" }
            #expect(gone.events[0].data["recovered"] as? Bool == false)
            #expect(gone.publicationOffsets.isEmpty)
            await gone.close()
        }
    }

    @Test func oneStreamCarriesManyChannelsAndItsIdResumesEveryOne() async throws {
        let server = try await start()
        try await finally({ await server.stop() }) {
            let stream = try await EventStreamReader.open(server.port, "/sse?channel=chat:a&channel=chat:b")
            try await stream.waitFor("two subscribed") { $0.filter { $0.event == "subscribed" }.count == 2 }
            _ = try await publish(server, "chat:a", #"{"a":1}"#)
            _ = try await publish(server, "chat:b", #"{"b":1}"#)
            _ = try await publish(server, "chat:a", #"{"a":2}"#)
            try await stream.waitFor("three publications") { $0.filter { $0.event == "publication" }.count == 3 }
            let epoch = try #require(stream.events[0].data["epoch"] as? String)
            let last = try #require(stream.events.last?.id)
            #expect(last == "\(epoch):2,\(epoch):1")  // every channel's position, in the URL's order
            await stream.close()
            _ = try await publish(server, "chat:b", #"{"b":2}"#)
            _ = try await publish(server, "chat:a", #"{"a":3}"#)
            let resumed = try await EventStreamReader.open(
                server.port, "/sse?channel=chat:a&channel=chat:b&user=sid", headers: ["Last-Event-ID: \(last)"])
            try await resumed.waitFor("both recovered") { $0.filter { $0.event == "publication" }.count == 2 }
            #expect(
                resumed.events.filter { $0.event == "subscribed" }.allSatisfy { $0.data["recovered"] as? Bool == true })
            let missed = resumed.events.filter { $0.event == "publication" }.map {
                "\($0.data["channel"] ?? ""):\($0.data["offset"] ?? "")"
            }
            #expect(Set(missed) == ["chat:a:3", "chat:b:2"])
            // Every id lists both channels' positions, from the first event on (the request's seed them).
            let ids = resumed.events.compactMap(\.id)
            #expect(!ids.isEmpty && ids.allSatisfy { $0.split(separator: ",").count == 2 }, "\(ids)")
            // A server-side subscribe does not reach a one-way stream: its ids cover only the URL's channels.
            try await server.application.subscribe(
                user: "sid", to: "chat:c", on: MultiThreadedEventLoopGroup.singleton.next()
            ).get()
            _ = try await publish(server, "chat:c", #"{"c":1}"#)
            _ = try await publish(server, "chat:a", #"{"a":4}"#)
            try await resumed.waitFor("chat:a's next") { $0.contains { $0.data["offset"] as? Int == 4 } }
            #expect(!resumed.events.contains { $0.data["channel"] as? String == "chat:c" })
            await resumed.close()
        }
    }

    @Test func dataWithLineBreaksGoesAsSeveralDataLinesOfTheSameJSON() async throws {
        let server = try await start()
        try await finally({ await server.stop() }) {
            let sse = try await EventStreamReader.open(server.port, "/sse?channel=chat:lines")
            let http = try await EventStreamReader.open(server.port, "/http-stream")
            try await sse.waitFor("subscribed") { $0.first?.event == "subscribed" }
            try await http.waitFor("the session") { $0.first?.data["session"] != nil }
            let session = try #require(http.events[0].data["session"] as? String)
            let post = try await EventStreamReader.open(
                server.port, "/http-stream?session=\(session)", method: "POST",
                body: #"{"id":1,"cmd":"subscribe","channel":"chat:lines"}"#)
            _ = try await post.raw.waitForServerClose()
            try await http.waitFor("subscribed") { $0.contains { $0.data["id"] as? Int == 1 } }
            // The application's bytes are kept: a line break in the JSON's whitespace, and one that is \r.
            _ = try await publish(server, "chat:lines", "{\"a\":\n1,\r\"b\":\"x\"}")
            for stream in [sse, http] {
                try await stream.waitFor("the publication") { events in
                    events.contains { ($0.data["data"] as? [String: Any])?["a"] as? Int == 1 }
                }
                #expect(stream.body.contains("\"data\":{\"a\":\ndata: 1,\ndata: \"b\":\"x\"}"))
            }
            await sse.close()
            await http.close()
        }
    }

    @Test func badRequestsGetAStatusAndAJSONErrorAndLeakNothing() async throws {
        // One connection per address: a refusal that kept its place would refuse the stream at the end.
        let server = try await start(
            transport: { $0.abuseLimits.maxConnectionsPerAddress = 1 },
            channels: { $0.maxSubscriptionsPerConnection = 3 })
        try await finally({ await server.stop() }) {
            let cases: [(String, String, [String], Int)] = [
                ("GET", "/sse", [], 400),
                ("GET", "/sse?channel=chat:a%20b", [], 400),
                ("GET", "/sse?channel=nope:x", [], 404),
                ("GET", "/sse?channel=chat:1&channel=chat:2&channel=chat:3&channel=chat:4", [], 400),
                ("GET", "/sse?channel=chat:a&channel=chat:a", [], 400),
                ("GET", "/sse?channel=chat:a", ["Last-Event-ID: garbage"], 400),
                ("GET", "/sse?channel=chat:a", ["Last-Event-ID: e:1,e:2"], 400),
                ("GET", "/sse?channel=chat:a&since=e:-1", [], 400),
                ("GET", "/sse?channel=chat:secret%23alice&user=bob", [], 403),
                ("DELETE", "/sse?channel=chat:a", [], 405),
                ("POST", "/http-stream?session=local.1.x", [], 404),
                ("POST", "/http-stream?session=nonsense", [], 400),
                ("POST", "/http-stream", [], 400),
            ]
            for (method, target, headers, status) in cases {
                let reader = try await EventStreamReader.open(
                    server.port, target, method: method, headers: headers, body: method == "POST" ? "{}" : nil)
                let answer = try await reader.raw.waitForServerClose()
                #expect(reader.status == status, "\(method) \(target): \(answer)")
                #expect(answer.contains("Content-Type: application/json"), "\(target)")
                let body = EventStreamReader(raw: reader.raw).body
                let error = (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any]
                #expect((error?["error"] as? [String: Any])?["code"] as? Int == status, "\(target): \(body)")
            }
            // The allowed user is let in; nothing was left open by the refusals.
            let alice = try await EventStreamReader.open(server.port, "/sse?channel=chat:secret%23alice&user=alice")
            try await alice.waitFor("subscribed") { $0.first?.event == "subscribed" }
            #expect(server.server.hub.connectionsByTransport["sse"] == 1)
            await alice.close()
            try await eventually("the stream gone") { server.server.hub.connectionsByTransport["sse"] == 0 }
        }
    }

    @Test func theHTTPTransportCarriesTheProtocolBothWaysWithAWebSocketClient() async throws {
        let server = try await start(transport: { $0.maxMessageSize = 4096 })
        try await finally({ await server.stop() }) {
            let stream = try await EventStreamReader.open(server.port, "/http-stream?user=ann")
            try await stream.waitFor("the session") { $0.first?.data["push"] as? String == "session" }
            #expect(stream.events[0].event == nil)  // unnamed: the client reads the protocol
            let session = try #require(stream.events[0].data["session"] as? String)
            let ws = try await server.connect(user: "bob")
            _ = try await ws.call(["cmd": "subscribe", "channel": "chat:both"])

            func post(_ session: String, _ body: String) async throws -> (Int?, String) {
                let reader = try await EventStreamReader.open(
                    server.port, "/http-stream?session=\(session)", method: "POST",
                    headers: ["Content-Type: text/plain"], body: body)
                _ = try await reader.raw.waitForServerClose()
                return (reader.status, reader.body)
            }
            let (status, _) = try await post(
                session,
                #"{"id":1,"cmd":"subscribe","channel":"chat:both"}"# + "\n"
                    + #"{"id":2,"cmd":"publish","channel":"chat:both","data":{"from":"ann"}}"#)
            #expect(status == 202)
            try await stream.waitFor("both replies") { events in
                events.contains { $0.data["id"] as? Int == 1 && $0.data["ok"] != nil }
                    && events.contains { $0.data["id"] as? Int == 2 && $0.data["ok"] != nil }
            }
            let fromAnn = try await ws.nextPush("pub")
            #expect((fromAnn["data"] as? [String: Any])?["from"] as? String == "ann")
            _ = try await ws.call(["cmd": "publish", "channel": "chat:both", "data": ["from": "bob"]])
            try await stream.waitFor("bob's publication") { events in
                events.contains { ($0.data["data"] as? [String: Any])?["from"] as? String == "bob" }
            }

            // Another client's session (the secret is wrong), an unknown one, and a body past the limit.
            let parts = session.split(separator: ".")
            #expect(try await post(parts.dropLast().joined(separator: ".") + ".forged", "{}").0 == 403)
            #expect(try await post("local.\(UInt64.max).x", "{}").0 == 404)
            #expect(try await post(session, String(repeating: " ", count: 5000)).0 == 413)
            #expect(try await post(session, "\n \n").0 == 400)
            // A bad command is answered down the stream, as over WebSocket.
            #expect(try await post(session, "{not json").0 == 202)
            try await stream.waitFor("the error") { $0.contains { $0.data["error"] != nil } }
            #expect(server.server.hub.connectionsByTransport["http_stream"] == 1)
            await stream.close()
            try await eventually("the session gone") { server.server.hub.connectionsByTransport["http_stream"] == 0 }
            #expect(try await post(session, #"{"id":3,"cmd":"ping"}"#).0 == 404)
        }
    }

    @Test func metricsCountConnectionsPerTransport() async throws {
        let metrics = TestMetrics()
        let server = try await ChannelsServer.start(metrics: metrics, authenticate: Self.byQuery)
        try await finally({ await server.stop() }) {
            let ws = try await server.connect()
            let sse = try await EventStreamReader.open(server.port, "/sse?channel=chat:m")
            let http = try await EventStreamReader.open(server.port, "/http-stream")
            try await sse.waitFor("subscribed") { $0.first?.event == "subscribed" }
            try await http.waitFor("the session") { $0.first?.data["session"] != nil }
            func open(_ transport: String) -> Double? {
                try? metrics.expectGauge("switchboard_transport_connections_open", [("transport", transport)])
                    .lastValue
            }
            #expect(open("websocket") == 1 && open("sse") == 1 && open("http_stream") == 1)
            for transport in ["websocket", "sse", "http_stream"] {
                let total = try metrics.expectCounter(
                    "switchboard_transport_connections_total", [("transport", transport)])
                #expect(total.totalValue == 1, "\(transport)")
            }
            await sse.close()
            await http.close()
            _ = ws
            try await eventually("the streams counted out") { open("sse") == 0 && open("http_stream") == 0 }
            #expect(open("websocket") == 1)
        }
    }

    @Test func aStalledReaderIsASlowConsumerAndOthersAreUntouched() async throws {
        let server = try await start(transport: { $0.queueMaxBytes = 256 * 1024 })
        try await finally({ await server.stop() }) {
            let stalled = try await EventStreamReader.open(server.port, "/sse?channel=strict:big")
            try await stalled.waitFor("subscribed") { $0.first?.event == "subscribed" }
            let reading = try await EventStreamReader.open(server.port, "/sse?channel=strict:big")
            try await reading.waitFor("subscribed") { $0.first?.event == "subscribed" }
            let ws = try await server.connect()
            _ = try await ws.call(["cmd": "subscribe", "channel": "strict:big"])
            try await stalled.raw.setReading(false)
            // Published in rounds the readers keep up with, until the stalled stream's queue overflows (the
            // kernel's buffers take megabytes first).
            let payload = "\"" + String(repeating: "x", count: 8000) + "\""
            var published = 0
            var wsReceived = 0
            while server.server.hub.connectionsByTransport["sse"] == 2, published < 4000 {
                for _ in 0..<20 { _ = try await publish(server, "strict:big", payload) }
                published += 20
                try await eventually("the reader caught up") { reading.raw.receivedBytes.count > published * 8000 }
                while wsReceived < published {
                    if try await ws.next().push == "pub" { wsReceived += 1 }
                }
            }
            try await eventually(timeout: .seconds(30), "the stalled stream dropped") {
                server.server.hub.connectionsByTransport["sse"] == 1
            }
            #expect(published < 4000)
            try await reading.waitFor("every publication") {
                $0.filter { $0.event == "publication" }.count == published
            }
            #expect(reading.publicationOffsets == Array(1...published))
            await reading.close()
            await stalled.close()
        }
    }

    @Test func aReaderThatStoppedIsReapedByItsPingsThoughItsQueueNeverFills() async throws {
        // A queue far larger than what is published: only the pings can tell that this reader is gone.
        let metrics = TestMetrics()
        let server = try await ChannelsServer.start(
            metrics: metrics,
            transport: {
                $0.queueMaxBytes = 256 << 20
                $0.queueMaxMessages = 1 << 20
                $0.pingInterval = .milliseconds(300)
                $0.pongTimeout = .milliseconds(300)
            }, authenticate: Self.byQuery)
        try await finally({ await server.stop() }) {
            let stalled = try await EventStreamReader.open(server.port, "/sse?channel=strict:gone")
            try await stalled.waitFor("subscribed") { $0.first?.event == "subscribed" }
            let reading = try await EventStreamReader.open(server.port, "/sse?channel=chat:alive")
            try await reading.waitFor("subscribed") { $0.first?.event == "subscribed" }
            try await stalled.raw.setReading(false)
            // Enough to fill the kernel's buffers both ways (a few MB on loopback), then nothing more: the
            // stalled stream's socket takes no ping after this, and its queue is nowhere near its bound.
            let payload = "\"" + String(repeating: "x", count: 8000) + "\""
            for _ in 0..<2000 { _ = try await publish(server, "strict:gone", payload) }
            try await eventually(timeout: .seconds(30), "the stalled stream reaped") {
                server.server.hub.connectionsByTransport["sse"] == 1
            }
            // Two things notice, whichever first: the kernel (TCP_USER_TIMEOUT, ping + pong timeouts: the
            // zero window's probes go unanswered) closes it, or the ping, never taken by the socket, times out.
            func closed(_ reason: DisconnectReason) -> Int64 {
                (try? metrics.expectCounter("switchboard_connections_closed_total", [("reason", reason.rawValue)]))?
                    .totalValue ?? 0
            }
            #expect(closed(.pongTimeout) + closed(.connectionLost) == 1)
            #expect(closed(.slowConsumer) == 0)
            // The stream that reads answers every ping the same way and stays.
            #expect(reading.raw.isActive)
            await reading.close()
            await stalled.close()
        }
    }

    @Test func pingsAreCommentsAndKeepASilentStreamOpen() async throws {
        let server = try await start(transport: {
            $0.pingInterval = .milliseconds(100)
            $0.pongTimeout = .milliseconds(100)
            $0.idleTimeout = .milliseconds(300)
        })
        try await finally({ await server.stop() }) {
            let stream = try await EventStreamReader.open(server.port, "/sse?channel=chat:quiet")
            try await stream.waitFor("subscribed") { $0.first?.event == "subscribed" }
            // Many ping intervals, pong timeouts and idle timeouts go by: the client never writes a byte.
            try await eventually("ten pings") { stream.body.components(separatedBy: ": ping\n\n").count > 10 }
            #expect(stream.raw.isActive)
            #expect(server.server.hub.connectionsByTransport["sse"] == 1)
            await stream.close()
        }
    }

    @Test func eventsAreGzippedWhenTheClientAcceptsItAndDeflateIsOn() async throws {
        let server = try await start(transport: { $0.deflate = DeflateOptions() })
        var stopped = false
        try await finally({ if !stopped { await server.stop() } }) {
            // Random data compresses badly: a burst of recovered publications is many kilobytes of gzip.
            func random() -> String { (0..<600).map { _ in String(UInt8.random(in: 0...255), radix: 16) }.joined() }
            for n in 1...40 { _ = try await publish(server, "chat:zip", #"{"n":\#(n),"r":"\#(random())"}"#) }
            let stream = try await EventStreamReader.open(
                server.port, "/sse?channel=chat:zip&since=\(try await epoch(server, "chat:zip")):0",
                headers: ["Accept-Encoding: gzip, deflate"])
            try await eventually("the head") { stream.head != nil }
            #expect(stream.head?.contains("Content-Encoding: gzip") == true)
            /// What the gzip stream says so far; `complete`: it must have ended (its trailer received).
            func inflated(complete: Bool = false) throws -> String {
                let bytes = stream.raw.receivedBytes
                guard let end = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return "" }
                var compressed = ByteBuffer(bytes: bytes[end.upperBound...])
                let decompressor = try ZlibDecompressor(algorithm: .gzip)
                var output = ByteBuffer()
                output.reserveCapacity(4 << 20)
                do {
                    try decompressor.inflate(from: &compressed, to: &output)
                } catch let error as CompressNIOError where error == .inputBufferOverflow && !complete {
                    // The stream goes on: what was flushed so far is in `output`.
                }
                return String(buffer: output)
            }
            func offsets() throws -> [Int] {
                EventStreamReader.parse(try inflated()).filter { $0.event == "publication" }.compactMap {
                    $0.data["offset"] as? Int
                }
            }
            try await eventually("forty recovered, decompressed") { try offsets().count == 40 }
            _ = try await publish(server, "chat:zip", #"{"n":41,"r":"\#(random())"}"#)
            try await eventually("the live one") { try offsets().count == 41 }
            #expect(try offsets() == Array(1...41))
            // The close ends the gzip stream properly, with the disconnect event before its trailer.
            stopped = true
            await server.stop()
            _ = try await stream.raw.waitForServerClose()
            let events = EventStreamReader.parse(try inflated(complete: true))
            #expect(events.last?.event == "disconnect")
            // The shutdown's reconnect hint, as `EventSource` takes it.
            #expect(try inflated(complete: true).contains("\nretry: "))
            #expect(stream.raw.receivedBytes.count < (try inflated()).utf8.count)
        }
    }

    @Test func aStreamRefusedForNowIsToldWhenToRetryAsEventSourceUnderstands() async throws {
        let server = try await start(transport: { $0.maxConnections = 1 })
        try await finally({ await server.stop() }) {
            let ws = try await server.connect()
            let refused = try await EventStreamReader.open(server.port, "/sse?channel=chat:full")
            let answer = try await refused.raw.waitForServerClose()
            #expect(refused.status == 200, "\(answer)")
            #expect(answer.contains("Content-Type: text/event-stream"))
            #expect(refused.body.hasPrefix("retry: "))
            let error = try #require(refused.events.first)
            #expect(error.event == "error")
            #expect((error.data["error"] as? [String: Any])?["code"] as? Int == 503)
            _ = ws
        }
    }

    /// The stream's epoch, as a subscriber learns it.
    func epoch(_ server: ChannelsServer, _ channel: String) async throws -> String {
        let probe = try await EventStreamReader.open(server.port, "/sse?channel=\(channel)")
        try await probe.waitFor("subscribed") { $0.first?.event == "subscribed" }
        await probe.close()
        return try #require(probe.events[0].data["epoch"] as? String)
    }
}
