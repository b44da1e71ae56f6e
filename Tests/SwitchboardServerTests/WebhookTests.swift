import Crypto
import Foundation
import MetricsTestKit
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardServer

/// The event webhook against a real HTTP endpoint on loopback: signed batches, retried with the same id
/// after a failure, events in order, occupied and vacated debounced, a bounded queue.
@Suite("Event webhook", .serialized, .timeLimit(.minutes(5)))
struct WebhookTests {
    static let secret = "webhook-secret-for-tests"

    static func webhooks(_ url: String, queue: Int = 10_000) -> WebhookConfiguration {
        WebhookConfiguration(
            url: url, secret: secret, batchSize: 50, maxDelay: .milliseconds(50), maxQueuedEvents: queue,
            timeout: .seconds(5), vacatedDelay: .milliseconds(500))
    }

    static func publicationEvents(_ channels: inout ChannelsConfiguration) {
        channels.namespaces["chat"]?.publicationEvents = true
    }

    /// Each batch's events, with its id, once its signature is checked as docs/API.md tells a backend to.
    static func batches(_ backend: ProxyBackend) throws -> [(id: String, events: [[String: Any]])] {
        try backend.requests("events").map { request in
            let expected = HMAC<SHA256>.authenticationCode(
                for: Data(request.body.utf8), using: SymmetricKey(data: Data(secret.utf8)))
            let hex = expected.map { String(format: "%02x", $0) }.joined()
            #expect(request.headers["x-switchboard-signature"] == "sha256=\(hex)")
            let json = request.json
            let id = try #require(json["id"] as? String)
            #expect(request.headers["x-switchboard-batch"] == id)
            return (id, json["events"] as? [[String: Any]] ?? [])
        }
    }

    @Test func lifecycleEventsArriveSignedInOrderAndAFailedBatchIsSentAgain() async throws {
        let attempts = NIOLockedValueBox(0)
        let backend = try await ProxyBackend.start { _ in
            let attempt = attempts.withLockedValue {
                $0 += 1
                return $0
            }
            return attempt == 1 ? .init(status: .internalServerError, body: "down") : .init(body: "{}")
        }
        let server = try await ChannelsServer.start(
            channels: Self.publicationEvents, webhooks: Self.webhooks(backend.url("events")))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let ada = try await server.connect(user: "ada")
            _ = try await ada.call(["cmd": "subscribe", "channel": "chat:room"])
            ada.client.send(text: #"{"id":90,"cmd":"publish","channel":"chat:room","data":{"n" : 1.50}}"#)
            _ = try await ada.call(["cmd": "publish", "channel": "ro:x", "data": 1])
            _ = try await ada.call(["cmd": "unsubscribe", "channel": "chat:room"])
            ada.client.close(code: 4321, reason: "bye")

            try await eventually("vacated reported") {
                try Self.batches(backend).contains { $0.events.contains { $0["type"] as? String == "vacated" } }
            }
            try await eventually("the disconnect reported") {
                try Self.batches(backend).contains { $0.events.contains { $0["type"] as? String == "disconnect" } }
            }
            let batches = try Self.batches(backend)
            // The first batch failed and came again, the same; every other batch once.
            #expect(batches.count >= 2)
            #expect(batches[0].id == batches[1].id)
            #expect(Set(batches.dropFirst().map(\.id)).count == batches.count - 1)
            let events = batches.dropFirst().flatMap(\.events)
            let types = events.map { $0["type"] as? String ?? "" }
            #expect(
                types.filter { $0 != "occupied" && $0 != "vacated" }
                    == ["connect", "subscribe", "publication", "unsubscribe", "disconnect"])
            #expect(types.firstIndex(of: "occupied") ?? 99 < types.firstIndex(of: "publication") ?? 0)
            #expect(types.firstIndex(of: "vacated") ?? 0 > types.firstIndex(of: "unsubscribe") ?? 99)
            for event in events {
                #expect(event["node"] is String)
                #expect(event["time"] is Int)
            }
            let connect = try #require(events.first { $0["type"] as? String == "connect" })
            #expect(connect["user"] as? String == "ada")
            let publication = try #require(events.first { $0["type"] as? String == "publication" })
            #expect(publication["channel"] as? String == "chat:room")
            #expect(publication["offset"] as? Int == 1)
            let body = backend.requests("events").map(\.body).joined()
            #expect(body.contains(#""data":{"n" : 1.50}"#), "the publication's bytes as published")
            let disconnect = try #require(events.first { $0["type"] as? String == "disconnect" })
            #expect(disconnect["code"] as? Int == 4321)
            #expect(disconnect["reason"] as? String == "bye", "the client's own close reason")
            #expect(disconnect["client"] as? String == connect["client"] as? String)
            #expect(
                events.filter { $0["type"] as? String == "occupied" }.map { $0["channel"] as? String } == ["chat:room"])
        }
    }

    /// A subscriber that comes back within the vacated delay makes no vacated/occupied pair; once gone for
    /// longer, the channel is vacated once.
    @Test func aQuickReconnectMakesNoVacatedOccupiedPair() async throws {
        let backend = try await ProxyBackend.start { _ in .init(body: "{}") }
        var configuration = Self.webhooks(backend.url("events"))
        configuration.vacatedDelay = .seconds(2)
        let server = try await ChannelsServer.start(webhooks: configuration)
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            func count(_ type: String) throws -> Int {
                try Self.batches(backend).flatMap(\.events).filter {
                    $0["type"] as? String == type && $0["channel"] as? String == "chat:lobby"
                }.count
            }
            let first = try await server.connect(user: "bea")
            _ = try await first.call(["cmd": "subscribe", "channel": "chat:lobby"])
            try await eventually("occupied") { try count("occupied") == 1 }
            first.client.close(code: 1000, reason: "")
            let again = try await server.connect(user: "bea")
            _ = try await again.call(["cmd": "subscribe", "channel": "chat:lobby"])
            // Past the vacated delay of the first leave: nothing reported (a fixed wait: it proves an absence).
            try await Task.sleep(for: .seconds(3))
            #expect(try count("vacated") == 0)
            #expect(try count("occupied") == 1)
            _ = try await again.call(["cmd": "unsubscribe", "channel": "chat:lobby"])
            try await eventually("vacated") { try count("vacated") == 1 }
            #expect(try count("occupied") == 1)
        }
    }

    /// A connection closed while subscribed: its unsubscribes come before its disconnect. A batch the
    /// endpoint refuses as such (400) is dropped after five tries, and the events behind it go on.
    @Test func unsubscribesPrecedeTheDisconnectAndARefusedBatchIsDroppedInTheEnd() async throws {
        let refusing = NIOLockedValueBox(true)
        let backend = try await ProxyBackend.start { _ in
            refusing.withLockedValue { $0 } ? .init(status: .badRequest, body: "") : .init(body: "{}")
        }
        let metrics = TestMetrics()
        let server = try await ChannelsServer.start(metrics: metrics, webhooks: Self.webhooks(backend.url("events")))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            let first = try await server.connect(user: "refused")
            _ = try await first.call(["cmd": "ping"])
            try await eventually(timeout: .seconds(30), "the batch dropped after five refusals") {
                (try? metrics.expectCounter("switchboard_webhook_batches_total", [("outcome", "rejected")]))?
                    .totalValue == 1
            }
            #expect(backend.requests("events").count == WebhookSender.maxRefusals)
            refusing.withLockedValue { $0 = false }
            let cy = try await server.connect(user: "cy")
            _ = try await cy.call(["cmd": "subscribe", "channel": "chat:a"])
            _ = try await cy.call(["cmd": "subscribe", "channel": "chat:b"])
            cy.client.close(code: 1000, reason: "")
            try await eventually("cy's disconnect") {
                try Self.batches(backend).flatMap(\.events).contains {
                    $0["type"] as? String == "disconnect" && $0["user"] as? String == "cy"
                }
            }
            let types = try Self.batches(backend).flatMap(\.events).filter { $0["user"] as? String == "cy" }
                .map { $0["type"] as? String ?? "" }
            #expect(types == ["connect", "subscribe", "subscribe", "unsubscribe", "unsubscribe", "disconnect"])
        }
    }

    /// An endpoint that keeps failing: events wait in a bounded queue; the rest are dropped and counted.
    @Test func theQueueIsBoundedWhileTheEndpointFails() async throws {
        let backend = try await ProxyBackend.start { _ in .init(status: .serviceUnavailable, body: "") }
        let metrics = TestMetrics()
        let server = try await ChannelsServer.start(
            metrics: metrics, webhooks: Self.webhooks(backend.url("events"), queue: 5))
        try await finally(
            {
                await server.stop()
                await backend.stop()
            }
        ) {
            for index in 0..<12 {
                let client = try await server.connect(user: "u\(index)")
                _ = try await client.call(["cmd": "ping"])
            }
            try await eventually("drops counted") {
                let dropped = try? metrics.expectCounter("switchboard_webhook_events_dropped_total")
                return (dropped?.totalValue ?? 0) >= 1
            }
            try await eventually("a failed batch counted") {
                (try? metrics.expectCounter("switchboard_webhook_batches_total", [("outcome", "failed")]))?.totalValue
                    ?? 0 >= 1
            }
            // Whatever was kept is one batch of at most five, tried again and again.
            #expect(try Self.batches(backend).allSatisfy { $0.events.count <= 5 })
            #expect(Set(try Self.batches(backend).map(\.id)).count == 1)
        }
    }
}
