import Foundation
import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardServer
import Testing

@Suite("Channels", .timeLimit(.minutes(5)))
struct ChannelsTests {
    @Test func subscribePublishUnsubscribe() async throws {
        let server = try await ChannelsServer.start()
        let ada = try await server.connect(user: "ada")
        let bob = try await server.connect(user: "bob")
        let subscribed = try await ada.call(["cmd": "subscribe", "channel": "chat:room"]).reply
        #expect(subscribed.ok?["offset"] as? Int == 0)
        #expect(subscribed.ok?["epoch"] is String)

        let published = try await bob.call(["cmd": "publish", "channel": "chat:room", "data": ["text": "hi"]]).reply
        #expect(published.ok?["offset"] as? Int == 1)
        let push = try await ada.nextPush("pub")
        #expect(push["channel"] as? String == "chat:room")
        #expect(push.offset == 1)
        #expect((push["data"] as? [String: Any])?["text"] as? String == "hi")
        #expect(push["user"] as? String == "bob")

        #expect(try await ada.call(["cmd": "unsubscribe", "channel": "chat:room"]).reply.ok != nil)
        _ = try await bob.call(["cmd": "publish", "channel": "chat:room", "data": 2])
        // The ping's reply is the next thing ada sees: no publication arrived in between.
        let (pong, pushes) = try await ada.call(["cmd": "ping"])
        #expect(pong.ok != nil)
        #expect(pushes.isEmpty)
        await server.stop()
    }

    @Test func oneThousandSubscribersSeeEveryPublicationOnceInOrder() async throws {
        let server = try await ChannelsServer.start()
        let group = MultiThreadedEventLoopGroup.singleton
        var receivers: [OffsetReceiver] = []
        for index in 0..<1000 {
            let loop = group.next()
            let receiver = OffsetReceiver(expected: 100, eventLoop: loop)
            var options = ClientOptions(path: "/ws")
            options.localAddress = "127.0.0.\(2 + index % 4)"
            let (channel, _) = try await WebSocketClient.open(
                host: "127.0.0.1", port: server.port, options: options, group: loop, sink: { _ in receiver })
            channel.writeAndFlush(
                ClientFrameEncoder.text(#"{"id":1,"cmd":"subscribe","channel":"chat:big"}"#), promise: nil)
            receivers.append(receiver)
        }
        for receiver in receivers { try await receiver.subscribed.futureResult.get() }
        let publisher = try await server.connect(user: "pub")
        for index in 1...100 {
            publisher.send(["cmd": "publish", "channel": "chat:big", "data": index])
        }
        for receiver in receivers {
            try await receiver.done.futureResult.get()
            #expect(receiver.violations == 0)
        }
        await server.stop()
    }

    @Test func presenceWithJoinAndLeave() async throws {
        let server = try await ChannelsServer.start()
        let ada = try await server.connect(user: "ada")
        _ = try await ada.call(["cmd": "subscribe", "channel": "chat:p"])
        let bob = try await server.connect(user: "bob")
        _ = try await bob.call(["cmd": "subscribe", "channel": "chat:p"])
        let join = try await ada.nextMembership("join", user: "bob")
        let joined = join["info"] as? [String: Any]
        #expect(joined?["client"] is String)
        #expect((joined?["data"] as? [String: Any])?["name"] as? String == "BOB")

        let presence = try await ada.call(["cmd": "presence", "channel": "chat:p"]).reply
        #expect(presence.ok?["connections"] as? Int == 2)
        #expect(presence.ok?["users"] as? Int == 2)
        let users = (presence.ok?["members"] as? [[String: Any]])?.compactMap { $0["user"] as? String }
        #expect(Set(users ?? []) == ["ada", "bob"])
        let names = (presence.ok?["members"] as? [[String: Any]])?.compactMap {
            ($0["data"] as? [String: Any])?["name"] as? String
        }
        #expect(Set(names ?? []) == ["ADA", "BOB"])

        await bob.client.disconnect()
        let leave = try await ada.nextMembership("leave", user: "bob")
        #expect(leave["channel"] as? String == "chat:p")
        await server.stop()
    }

    @Test func connectionInfoThatIsNotJSONIsLeftOutOfPresence() async throws {
        let server = try await ChannelsServer.start()
        let raw = try await server.connect(user: "raw")
        _ = try await raw.call(["cmd": "subscribe", "channel": "chat:r"])
        let presence = try await raw.call(["cmd": "presence", "channel": "chat:r"]).reply
        let members = try #require(presence.ok?["members"] as? [[String: Any]])
        #expect(members.count == 1)
        #expect(members.first?["user"] as? String == "raw")
        #expect(members.first?["data"] == nil)
        await server.stop()
    }

    @Test func countsOnlyPresence() async throws {
        let server = try await ChannelsServer.start()
        var clients: [ProtocolClient] = []
        for user in ["a", "b", "b"] {
            let client = try await server.connect(user: user)
            _ = try await client.call(["cmd": "subscribe", "channel": "big:hall"])
            clients.append(client)
        }
        let presence = try await clients[0].call(["cmd": "presence", "channel": "big:hall"]).reply
        #expect(presence.ok?["connections"] as? Int == 3)
        #expect(presence.ok?["users"] as? Int == 2)
        #expect(presence.ok?["members"] == nil)
        await server.stop()
    }

    @Test func historyPages() async throws {
        let server = try await ChannelsServer.start()
        let client = try await server.connect(user: "ada")
        for index in 1...5 { _ = try await client.call(["cmd": "publish", "channel": "chat:h", "data": index]) }
        let latest = try await client.call(["cmd": "history", "channel": "chat:h", "limit": 3]).reply
        let offsets = (latest.ok?["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int }
        #expect(offsets == [3, 4, 5])
        #expect(latest.ok?["offset"] as? Int == 5)
        let after = try await client.call(["cmd": "history", "channel": "chat:h", "since": 1, "limit": 2]).reply
        let page = (after.ok?["publications"] as? [[String: Any]])?.compactMap { $0["data"] as? Int }
        #expect(page == [2, 3])
        await server.stop()
    }

    @Test func reconnectingClientRecoversWhatItMissedWithoutGapOrDuplicate() async throws {
        let server = try await ChannelsServer.start()
        let ada = try await server.connect(user: "ada")
        let first = try await ada.call(["cmd": "subscribe", "channel": "archive:r"]).reply
        let epoch = try #require(first.ok?["epoch"] as? String)
        let publisher = try await server.connect(user: "pub")
        _ = try await publisher.call(["cmd": "publish", "channel": "archive:r", "data": 1])
        #expect(try await ada.nextPush("pub").offset == 1)
        await ada.client.disconnect()

        for index in 2...1001 { publisher.send(["cmd": "publish", "channel": "archive:r", "data": index]) }
        _ = try await publisher.call(["cmd": "ping"])
        let back = try await server.connect(user: "ada")
        let recovered = try await back.call([
            "cmd": "subscribe", "channel": "archive:r", "recover": ["offset": 1, "epoch": epoch],
        ]).reply
        #expect(recovered.ok?["recovered"] as? Bool == true)
        let missed = (recovered.ok?["publications"] as? [[String: Any]])?.compactMap { $0["offset"] as? Int }
        #expect(missed == Array(2...1001))
        _ = try await publisher.call(["cmd": "publish", "channel": "archive:r", "data": 1002])
        #expect(try await back.nextPush("pub").offset == 1002)
        await server.stop()
    }

    @Test func recoveryWorksFromAnEmptyChannelTheSubscriberLeft() async throws {
        let server = try await ChannelsServer.start()
        let ada = try await server.connect(user: "ada")
        let first = try await ada.call(["cmd": "subscribe", "channel": "chat:quiet"]).reply
        let epoch = try #require(first.ok?["epoch"] as? String)
        await ada.client.disconnect()  // the channel now has no subscriber and no history
        let publisher = try await server.connect(user: "pub")
        _ = try await publisher.call(["cmd": "publish", "channel": "chat:quiet", "data": "while you were away"])
        let back = try await server.connect(user: "ada")
        let reply = try await back.call([
            "cmd": "subscribe", "channel": "chat:quiet", "recover": ["offset": 0, "epoch": epoch],
        ]).reply
        #expect(reply.ok?["recovered"] as? Bool == true)
        #expect((reply.ok?["publications"] as? [[String: Any]])?.count == 1)
        await server.stop()
    }

    @Test func recoveryIsRefusedWhenTheEpochChanged() async throws {
        let first = try await ChannelsServer.start()
        let ada = try await first.connect(user: "ada")
        let reply = try await ada.call(["cmd": "subscribe", "channel": "archive:e"]).reply
        let epoch = try #require(reply.ok?["epoch"] as? String)
        _ = try await ada.call(["cmd": "publish", "channel": "archive:e", "data": 1])
        await first.stop()

        // A restarted in-memory broker has lost the history: a new epoch.
        let second = try await ChannelsServer.start()
        let back = try await second.connect(user: "ada")
        let refused = try await back.call([
            "cmd": "subscribe", "channel": "archive:e", "recover": ["offset": 1, "epoch": epoch],
        ]).reply
        #expect(refused.ok?["recovered"] as? Bool == false)
        #expect(refused.ok?["epoch"] as? String != epoch)
        await second.stop()
    }

    @Test func shutdownSendsADisconnectNoticeBeforeTheCloseFrame() async throws {
        let server = try await ChannelsServer.start()
        let client = try await server.connect(user: "ada")
        _ = try await client.call(["cmd": "ping"])
        async let stopped: Void = server.stop()
        let notice = try await client.nextPush("disconnect")
        #expect(notice["code"] as? Int == 1001)
        #expect(notice["reconnect"] as? Bool == true)
        #expect(notice["after_ms"] is Int)
        #expect(try await client.client.waitForClose()?.code == 1001)
        await stopped
    }
}

/// Counts publications on one connection, checking offsets arrive once each, in order.
// @unchecked Sendable: state is touched only on the connection's loop; the test reads it after `done`.
final class OffsetReceiver: ClientFrameSink, @unchecked Sendable {
    let expected: Int
    private var next = 1
    private(set) var violations = 0
    let subscribed: EventLoopPromise<Void>
    let done: EventLoopPromise<Void>

    init(expected: Int, eventLoop: any EventLoop) {
        self.expected = expected
        subscribed = eventLoop.makePromise()
        done = eventLoop.makePromise()
    }

    func received(_ frame: ServerFrame, on channel: any Channel) {
        guard frame.opcode == 1,
            let object = try? JSONSerialization.jsonObject(with: Data(frame.payload.readableBytesView))
                as? [String: Any]
        else { return }
        if object["id"] as? Int == 1 {
            subscribed.succeed()
            return
        }
        guard object["push"] as? String == "pub", let offset = object["offset"] as? Int else { return }
        if offset != next { violations += 1 }
        next = offset + 1
        if offset == expected { done.succeed() }
    }

    func disconnected() {
        subscribed.fail(ChannelError.ioOnClosedChannel)
        done.fail(ChannelError.ioOnClosedChannel)
    }
}
