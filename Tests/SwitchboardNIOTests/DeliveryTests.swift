import NIOCore
import NIOPosix
import SwitchboardClient
import SwitchboardCore
import SwitchboardNIO
import SwitchboardTestSupport
import Testing

/// A receiver that counts messages on its event loop and checks they arrive in order, once each.
// @unchecked Sendable: `next` and `violations` change only on the channel's loop; read after `done`.
final class OrderedReceiver: ClientFrameSink, @unchecked Sendable {
    let expected: Int
    private(set) var next = 0
    private(set) var violations = 0
    let done: EventLoopPromise<Void>

    init(expected: Int, eventLoop: any EventLoop) {
        self.expected = expected
        self.done = eventLoop.makePromise()
    }

    func received(_ frame: ServerFrame, on channel: any Channel) {
        guard frame.opcode == 1 else { return }
        if Int(String(buffer: frame.payload)) != next { violations += 1 }
        next += 1
        if next == expected { done.succeed() }
    }

    func disconnected() { done.fail(ChannelError.ioOnClosedChannel) }
}

@Suite("Delivery", .timeLimit(.minutes(5)))
struct DeliveryTests {
    @Test func broadcastReachesOneThousandReceiversExactlyOnceInOrder() async throws {
        let server = try await TestServer.start(echo: false)
        let messages = 200
        let group = MultiThreadedEventLoopGroup.singleton
        var receivers: [(any Channel, OrderedReceiver)] = []
        for index in 0..<1000 {
            let loop = group.next()
            let receiver = OrderedReceiver(expected: messages, eventLoop: loop)
            var options = ClientOptions(path: "/ws")
            options.localAddress = "127.0.0.\(2 + index % 4)"
            let (channel, _) = try await WebSocketClient.open(
                host: "127.0.0.1", port: server.port, options: options, group: loop, sink: { _ in receiver })
            receivers.append((channel, receiver))
        }
        try await eventually { server.hub.connectionCount == 1000 }
        for index in 0..<messages {
            server.hub.broadcast(text: "\(index)")
        }
        for (_, receiver) in receivers {
            try await receiver.done.futureResult.get()
            #expect(receiver.violations == 0)
            #expect(receiver.next == messages)
        }
        let stats = try await server.hub.statistics().get()
        #expect(stats.messagesOut == 1000 * messages)
        #expect(stats.queueDropped == 0)
        for (channel, _) in receivers { try? await channel.close() }
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func sendToOneConnectionKeepsOrder() async throws {
        let server = try await TestServer.start(echo: false)
        let client = try await server.connectRegistered()
        let id = try #require(server.app.opened.first?.id)
        for index in 0..<500 { server.hub.send(frame: FrameEncoder.encodeText("\(index)"), to: id) }
        for index in 0..<500 {
            #expect(try await client.nextMessage() == .text("\(index)"))
        }
        await client.disconnect()
        await server.stop()
    }

    /// A client that stops reading fills its socket: frames the socket no longer takes go to NIO and
    /// then to the connection's queue. Once it reads again, while more is sent, it gets every message in
    /// order: nothing written straight to the socket overtakes what NIO still holds.
    @Test(arguments: [true, false])
    func aStalledReaderGetsEverythingInOrderOnceItReadsAgain(directWrites: Bool) async throws {
        let server = try await TestServer.start(echo: false) {
            $0.directWrites = directWrites
            $0.queueMaxBytes = 256 << 20
            $0.queueMaxMessages = 1 << 20
        }
        let client = try await server.connectRegistered()
        try await client.channel.setOption(.autoRead, value: false).get()
        let padding = String(repeating: "x", count: 1000)
        var sent = 0
        func broadcast(_ count: Int) {
            for _ in 0..<count {
                server.hub.broadcast(text: "\(sent) \(padding)")
                sent += 1
            }
        }
        var received = 0
        func receive(upTo last: Int) async throws {
            while received < last {
                let message = try await client.nextMessage(timeout: .seconds(30))
                guard case .text(let text) = message, text == "\(received) \(padding)" else {
                    throw OutOfOrder(expected: received, got: "\(message)".prefix(40))
                }
                received += 1
            }
        }
        // Until the socket and NIO's buffer are full and messages wait in the connection's queue.
        while try await server.hub.snapshot().get().allSatisfy({ $0.queuedMessages == 0 }) {
            broadcast(1000)
            #expect(sent < 1_000_000, "the socket never filled")
            if sent >= 1_000_000 { break }
        }
        try await client.channel.setOption(.autoRead, value: true).get()
        for _ in 0..<50 {
            broadcast(100)
            try await receive(upTo: received + 100)
        }
        try await receive(upTo: sent)
        #expect(server.hub.connectionCount == 1)
        // Every message left the queue once: the gauge is back at zero, not below.
        #expect(try await server.hub.statistics().get().queuedMessages == 0)
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    /// A reply written while reading a message goes out before the close reply to a Close frame that
    /// arrived in the same read, whether it waited for the flush in the connection or in NIO.
    @Test(arguments: [true, false])
    func aReplyGoesBeforeTheCloseReplyReadWithIt(directWrites: Bool) async throws {
        let server = try await TestServer.start(echo: true) { $0.directWrites = directWrites }
        let client = try await server.connectRegistered()
        var bytes = ClientFrameEncoder.text("last words")
        var close = ClientFrameEncoder.close(code: 1000, reason: "")
        bytes.writeBuffer(&close)
        client.sendRaw(bytes)
        #expect(try await client.nextMessage() == .text("last words"))
        #expect(try await client.waitForClose()?.code == 1000)
        try await server.expectNoConnections()
        await server.stop()
    }

    struct OutOfOrder: Error {
        let expected: Int
        let got: Substring
    }

    @Test func sendToAUserReachesEachOfItsConnectionsOnly() async throws {
        let server = try await TestServer.start(echo: false)
        let phone = try await server.connectRegistered(user: "ada")
        let laptop = try await server.connectRegistered(user: "ada")
        let other = try await server.connectRegistered(user: "bob")
        #expect(try await server.hub.connections(ofUser: "ada").get().count == 2)
        server.hub.send(frame: FrameEncoder.encodeText("for ada"), toUser: "ada")
        server.hub.send(frame: FrameEncoder.encodeText("for bob"), toUser: "bob")
        #expect(try await phone.nextMessage() == .text("for ada"))
        #expect(try await laptop.nextMessage() == .text("for ada"))
        #expect(try await other.nextMessage() == .text("for bob"))
        for client in [phone, laptop, other] { await client.disconnect() }
        try await server.expectNoConnections()
        await server.stop()
    }

    /// Broadcasts 1 KiB messages until the non-reading client is dealt with, checking that the
    /// reading client gets every message meanwhile.
    private func floodUntilSlowConsumerHandled(
        _ server: TestServer, fast: WebSocketClient, done: () async throws -> Bool
    ) async throws -> Int {
        let payload = String(repeating: "x", count: 1024)
        var sent = 0
        // Bursts of 40 KiB fit the fast client's queue; the slow one, never reading, overflows.
        let burst = 40
        while try await !done() {
            for _ in 0..<burst {
                server.hub.broadcast(text: "\(sent) \(payload)")
                sent += 1
            }
            // Keep the fast client current so only the slow one falls behind.
            for index in (sent - burst)..<sent {
                guard case .text(let text) = try await fast.nextMessage() else {
                    Issue.record("fast client lost its connection")
                    return sent
                }
                #expect(text.hasPrefix("\(index) "))
            }
            #expect(sent < 200_000, "the slow consumer was never handled")
            if sent >= 200_000 { break }
        }
        return sent
    }

    @Test func slowConsumerIsDisconnectedAndOthersAreUnaffected() async throws {
        let server = try await TestServer.start(echo: false) {
            $0.queueMaxBytes = 64 * 1024
            $0.queueMaxMessages = 10_000
            $0.slowConsumerPolicy = .disconnect
        }
        let fast = try await server.connectRegistered()
        let slow = try await server.connectRegistered()
        try await slow.channel.setOption(.autoRead, value: false).get()
        _ = try await floodUntilSlowConsumerHandled(server, fast: fast) {
            server.closedCount(.slowConsumer) == 1
        }
        #expect(server.hub.connectionCount == 1)
        let counted = try server.metrics.expectCounter("switchboard_slow_consumer_disconnects_total").totalValue
        #expect(counted == 1)
        await slow.disconnect()
        await fast.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }

    @Test func dropOldestKeepsTheConnectionAndCountsDrops() async throws {
        let server = try await TestServer.start(echo: false) {
            $0.queueMaxBytes = 64 * 1024
            $0.queueMaxMessages = 10_000
            $0.slowConsumerPolicy = .dropOldest
        }
        let fast = try await server.connectRegistered()
        let slow = try await server.connectRegistered()
        try await slow.channel.setOption(.autoRead, value: false).get()
        _ = try await floodUntilSlowConsumerHandled(server, fast: fast) {
            try await server.hub.statistics().get().queueDropped > 0
        }
        #expect(server.hub.connectionCount == 2)
        #expect(server.closedCount(.slowConsumer) == 0)
        // The queue stays within its bound.
        let info = try await server.hub.snapshot().get()
        #expect(info.allSatisfy { $0.queuedMessages <= 64 })
        await slow.disconnect()
        await fast.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}

@Suite("Large messages", .timeLimit(.minutes(5)))
struct LargeMessageTests {
    @Test(arguments: [70_000, 1 << 20, 16 << 20])
    func largeBinaryMessageRoundTrips(size: Int) async throws {
        let server = try await TestServer.start { $0.maxMessageSize = 16 << 20 }
        let client = try await server.connect()
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        client.send(binary: payload)
        guard case .binary(let echoed) = try await client.nextMessage(timeout: .seconds(60)) else {
            Issue.record("no echo")
            return
        }
        #expect(echoed.readableBytes == size)
        #expect(Array(echoed.readableBytesView) == payload)
        await client.disconnect()
        await server.stop()
    }
}
