import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A plain TCP connection for speaking broken HTTP: sends bytes, collects everything until the
/// server closes.
final class RawConnection: Sendable {
    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        // Lock: guards the bytes received, appended on the event loop and read by the test.
        let received = NIOLockedValueBox<[UInt8]>([])
        let closed: EventLoopPromise<Void>
        init(closed: EventLoopPromise<Void>) { self.closed = closed }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data).readableBytesView
            received.withLockedValue { $0.append(contentsOf: bytes) }
        }
        func channelInactive(context: ChannelHandlerContext) { closed.succeed() }
    }

    let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    static func connect(port: Int) async throws -> RawConnection {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let collector = Collector(closed: loop.makePromise())
        let channel = try await ClientBootstrap(group: loop)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, collector: collector)
    }

    func send(_ text: String) {
        channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
    }

    /// Waits until the server closes the connection; returns what it sent.
    func waitForServerClose(timeout: TimeAmount = .seconds(20)) async throws -> String {
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            self.collector.closed.fail(ChannelError.connectTimeout(timeout))
        }
        try await collector.closed.futureResult.get()
        timer.cancel()
        return String(decoding: collector.received.withLockedValue { $0 }, as: UTF8.self)
    }

    var receivedText: String { String(decoding: collector.received.withLockedValue { $0 }, as: UTF8.self) }

    var isActive: Bool { channel.isActive }

    func close() async { try? await channel.close() }
}

/// Sends one HTTP request and returns the whole response the server sent before closing.
func exchange(_ request: String, port: Int) async throws -> String {
    let connection = try await RawConnection.connect(port: port)
    connection.send(request)
    return try await connection.waitForServerClose()
}

func upgradeRequest(
    path: String = "/ws", method: String = "GET", version: String = "13",
    key: String = "dGhlIHNhbXBsZSBub25jZQ==", upgrade: String = "websocket", connection: String = "Upgrade",
    extra: String = ""
) -> String {
    "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: \(upgrade)\r\nConnection: \(connection)\r\n"
        + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n\(extra)\r\n"
}
