import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// A plain TCP connection for speaking broken HTTP: sends bytes, collects everything until the
/// server closes.
public final class RawConnection: Sendable {
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

    /// The TCP channel, on `MultiThreadedEventLoopGroup.singleton`.
    public let channel: any Channel
    private let collector: Collector

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects to `port` on 127.0.0.1; throws when nothing accepts there.
    public static func connect(port: Int) async throws -> RawConnection {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let collector = Collector(closed: loop.makePromise())
        do {
            let channel = try await ClientBootstrap(group: loop)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
                }
                .connect(host: "127.0.0.1", port: port).get()
            return RawConnection(channel: channel, collector: collector)
        } catch {
            collector.closed.fail(error)  // a refused connect never reaches channelInactive
            throw error
        }
    }

    /// Writes `text` as UTF-8, exactly as given (no line ending added), without waiting for the write.
    public func send(_ text: String) {
        channel.writeAndFlush(ByteBuffer(string: text), promise: nil)
    }

    /// Waits until the server closes the connection; returns what it sent.
    public func waitForServerClose(timeout: TimeAmount = .seconds(20)) async throws -> String {
        let timer = channel.eventLoop.scheduleTask(in: timeout) {
            self.collector.closed.fail(ChannelError.connectTimeout(timeout))
        }
        try await collector.closed.futureResult.get()
        timer.cancel()
        return String(decoding: collector.received.withLockedValue { $0 }, as: UTF8.self)
    }

    /// Everything received so far, as UTF-8; the server may still send more.
    public var receivedText: String { String(decoding: collector.received.withLockedValue { $0 }, as: UTF8.self) }

    /// Everything received so far, as bytes (a compressed body, say).
    public var receivedBytes: [UInt8] { collector.received.withLockedValue { $0 } }

    /// Stops (false) or resumes reading from the socket: a client that stops reading, as a stalled reader does.
    public func setReading(_ reading: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: reading).get()
        if reading { channel.read() }
    }

    /// Whether the TCP connection is still open.
    public var isActive: Bool { channel.isActive }

    /// Closes the connection from this side; an error (already closed, say) is ignored.
    public func close() async { try? await channel.close() }
}
