import Foundation
import NIOCore
import SwitchboardClient
import SwitchboardCore
import SwitchboardServer
import SwitchboardTestSupport
import Testing

/// A subscriber stops reading while 3,000 publications of 4 KiB (12 MiB, more than the kernel's
/// socket buffers hold) go out; then it reads again and we look at what it got.
/// Serialized: each flood is heavy for a 2-core machine running the rest of the suite.
@Suite("Per-channel slow-consumer policies", .serialized, .timeLimit(.minutes(5)))
struct SlowConsumerPolicyTests {
    static let count = 3000

    /// Floods `channel` while the subscriber, not reading, sends a ping command every 100 publications;
    /// returns the ids of those pings.
    private func flood(_ channel: String) async throws -> (ChannelsServer, ProtocolClient, [Int]) {
        let server = try await ChannelsServer.start(transport: {
            $0.queueMaxBytes = 64 * 1024
            $0.queueMaxMessages = 1000
            // The subscriber resumes reading only after the whole flood; until then the server must
            // not give up on the close handshake and drop the connection, notice unread.
            $0.closeTimeout = .seconds(120)
            $0.pingInterval = .zero  // a client that is not reading cannot answer pings either
        })
        let slow = try await server.connect(user: "slow")
        _ = try await slow.call(["cmd": "subscribe", "channel": channel])
        try await slow.client.channel.setOption(.autoRead, value: false).get()
        let publisher = try await server.connect(user: "pub")
        let payload = String(repeating: "p", count: 4096)
        var pings: [Int] = []
        for index in 1...Self.count {
            publisher.send(["cmd": "publish", "channel": channel, "data": ["n": index, "pad": payload]])
            if index.isMultiple(of: 100) { pings.append(slow.send(["cmd": "ping"])) }
        }
        _ = try await publisher.call(["cmd": "ping"])  // every publish has been handled
        // Under the disconnect policy the subscriber is closed mid-flood and the rest of its pings go unread.
        let dropping = !channel.hasPrefix("strict:")
        try await eventually("the pings were handled") {
            guard dropping else { return true }
            // Every message in: the publishes, the pings, the subscribe and the publisher's ping.
            return try await server.server.hub.statistics().get().messagesIn >= Self.count + pings.count + 2
        }
        // The subscriber lagged all along: its replies waited in the queue behind publications.
        if dropping { #expect(try await server.server.hub.statistics().get().queuedMessages > 0) }
        try await slow.client.channel.setOption(.autoRead, value: true).get()
        return (server, slow, pings)
    }

    @Test(arguments: ["prices:eurusd", "feed:news"])
    func droppingPoliciesReportExactlyWhatWasDropped(channel: String) async throws {
        let (server, slow, pings) = try await flood(channel)
        var received: [Int] = []
        var replies: [Int] = []
        var dropped = 0
        while received.last != Self.count || replies.count < pings.count {
            // Publications are scanned, not JSON-decoded: 12 MiB of JSON would hog the test threads.
            guard case .text(let text) = try await slow.client.nextMessage() else {
                Issue.record("connection ended early")
                return
            }
            if text.hasPrefix(#"{"push":"pub""#) {
                received.append(offset(in: text) ?? -1)
            } else if text.hasPrefix(#"{"push":"gap""#) {
                let gap = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                #expect(gap?["channel"] as? String == channel)
                dropped += gap?["dropped"] as? Int ?? 0
            } else if text.hasPrefix(#"{"id":"#) {
                let reply = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]
                #expect(reply?["ok"] != nil)
                replies.append(reply?["id"] as? Int ?? -1)
            } else {
                Issue.record("unexpected message \(text.prefix(80))")
            }
        }
        #expect(received == received.sorted() && Set(received).count == received.count, "in order, once each")
        #expect(dropped > 0, "the subscriber fell behind, so something was dropped")
        #expect(received.count + dropped == Self.count, "every publication is either delivered or reported")
        #expect(replies == pings, "every reply to the lagging subscriber's commands, in order")
        // Still connected and in sync.
        #expect(try await slow.call(["cmd": "ping"]).reply.ok != nil)
        await server.stop()
    }

    @Test func disconnectPolicyClosesTheLaggingSubscriber() async throws {
        let (server, slow, _) = try await flood("strict:orders")
        var notice: JSONMessage?
        while notice == nil {
            let event = try await slow.client.next()
            guard case .text(let text) = event else {
                Issue.record("got \(event) before a disconnect notice")
                return
            }
            let message = JSONMessage(
                object: try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] ?? [:])
            if message.push == "disconnect" { notice = message }
            #expect(message.push != "gap")
        }
        #expect(notice?["code"] as? Int == 1008)
        #expect(notice?["reason"] as? String == "slow consumer")
        #expect(try await slow.client.waitForClose()?.code == 1008)
        await server.stop()
    }
}

/// The `offset` of a publication push, read without decoding the JSON.
func offset(in text: String) -> Int? {
    guard let range = text.range(of: #""offset":"#) else { return nil }
    return Int(text[range.upperBound...].prefix { $0.isNumber })
}
