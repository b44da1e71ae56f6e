import Foundation
import NIOCore
import SwitchboardTestSupport
import Testing

@testable import SwitchboardServer

/// The dashboard's feed: the server's statistics on `sys:stats`, readable from this host or by an
/// authenticated user, never writable by clients.
@Suite("Statistics feed", .serialized, .timeLimit(.minutes(5)))
struct StatisticsFeedTests {
    @Test func publishesStatisticsThatReflectTheServer() async throws {
        let server = try await ChannelsServer.start()
        try await finally({ await server.stop() }) {
            let feed = StatisticsFeed(application: server.application, interval: .milliseconds(200))
            feed.start()
            let watcher = try await server.connect()
            #expect(try await watcher.call(["cmd": "subscribe", "channel": "sys:stats"]).reply.ok != nil)
            var others: [ProtocolClient] = []
            for _ in 0..<3 { others.append(try await server.connect()) }
            for client in others { _ = try await client.call(["cmd": "subscribe", "channel": "chat:room"]) }
            let stream = try await EventStreamReader.open(server.port, "/sse?channel=chat:room")
            try await stream.waitFor("subscribed") { $0.first?.event == "subscribed" }
            _ = try await others[0].call(["cmd": "publish", "channel": "chat:room", "data": ["n": 1]])
            // Rates need two samples; wait for one that sees all five connections and the deliveries.
            var stats: [String: Any] = [:]
            for _ in 0..<50 {
                let push = try await watcher.nextPush("pub")
                stats = push["data"] as? [String: Any] ?? [:]
                if stats["connections"] as? Int == 5, stats["subscriptions"] as? Int == 5 { break }
            }
            #expect(stats["connections"] as? Int == 5)
            #expect(stats["subscriptions"] as? Int == 5)
            let transports = stats["transports"] as? [String: Int]
            #expect(transports == ["websocket": 4, "sse": 1, "http_stream": 0])
            #expect((stats["channels"] as? Int ?? 0) >= 2)
            for key in [
                "connectsPerSecond", "disconnectsPerSecond", "messagesInPerSecond", "messagesOutPerSecond",
                "deliveriesPerSecond", "queued", "droppedPerSecond",
            ] {
                #expect(stats[key] is Double || stats[key] is Int, "\(key) missing")
            }
            #expect(
                try await others[0].call(["cmd": "publish", "channel": "sys:stats", "data": 1]).reply.errorCode == 104)
            await stream.close()
        }
    }

    @Test func readableFromThisHostOrWithAUserOnly() {
        let permissions = NamespaceOptions.system.permissions
        #expect(permissions.subscribe == .localOrAuthenticated)
        #expect(!NamespaceOptions.system.clientsMayPublish)
        let remoteAnonymous = permissions.refusal(
            .subscribe, channel: "sys:stats", user: nil, isSubscribed: false, isLocal: false)
        #expect(remoteAnonymous == .notAllowed("subscribe needs an authenticated user or a connection from this host"))
        #expect(
            permissions.refusal(.subscribe, channel: "sys:stats", user: "ada", isSubscribed: false, isLocal: false)
                == nil)
        #expect(
            permissions.refusal(.subscribe, channel: "sys:stats", user: nil, isSubscribed: false, isLocal: true) == nil)
    }
}
