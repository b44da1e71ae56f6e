import NIOCore
import NIOPosix
import Testing

@testable import SwitchboardNIO

/// `DirectSocket` reads NIO's private descriptor by reflection: these fail the day a NIO release moves it
/// (connections would then quietly write through the pipeline, correct but slower).
@Suite("Direct socket writes", .timeLimit(.minutes(5)))
struct DirectSocketTests {
    @Test func anAcceptedChannelsSocketIsFoundAndWritten() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let accepted = group.any().makePromise(of: (any Channel).self)
        let server = try await ServerBootstrap(group: group)
            .childChannelInitializer { channel in
                accepted.succeed(channel)
                return channel.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let received = group.any().makePromise(of: ByteBuffer.self)
        let client = try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(FirstRead(promise: received))
                }
            }
            .connect(host: "127.0.0.1", port: server.localAddress?.port ?? 0).get()
        let channel = try await accepted.futureResult.get()
        let written = try await channel.eventLoop.submit {
            guard let socket = DirectSocket(channel: channel) else { return false }
            var frame = channel.allocator.buffer(string: "hello")
            return socket.write(&frame) && frame.readableBytes == 0
        }.get()
        try #require(written)
        #expect(String(buffer: try await received.futureResult.get()) == "hello")
        try await client.close()
        try await channel.closeFuture.get()
        // A closed channel's descriptor may already be another connection's: never found again.
        #expect(try await channel.eventLoop.submit { DirectSocket(channel: channel) == nil }.get())
        try await server.close()
        try await group.shutdownGracefully()
    }

    /// Plain connections write directly (until they close), and only when the configuration allows it.
    @Test(arguments: [true, false])
    func connectionsWriteDirectlyAsConfigured(directWrites: Bool) async throws {
        let server = try await TestServer.start(echo: false) { $0.directWrites = directWrites }
        let client = try await server.connectRegistered()
        func direct() async throws -> [Bool] {
            var found: [Bool] = []
            for shard in server.hub.shards {
                found += try await shard.eventLoop.submit {
                    shard.registry.byID.values.map { $0.directSocket != nil }
                }.get()
            }
            return found
        }
        #expect(try await direct() == [directWrites])
        // And what it writes arrives.
        server.hub.broadcast(text: "hello")
        #expect(try await client.nextMessage() == .text("hello"))
        await client.disconnect()
        try await server.expectNoConnections()
        await server.stop()
    }
}

// @unchecked Sendable: touched only on the client channel's loop.
private final class FirstRead: ChannelInboundHandler, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    let promise: EventLoopPromise<ByteBuffer>
    init(promise: EventLoopPromise<ByteBuffer>) { self.promise = promise }
    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        promise.succeed(unwrapInboundIn(data))
    }
}
