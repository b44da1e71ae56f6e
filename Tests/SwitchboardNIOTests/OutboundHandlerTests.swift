import Logging
import NIOCore
import NIOEmbedded
import SwitchboardCore
import Testing

@testable import SwitchboardNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The connection's outbound side on an `EmbeddedChannel` whose direct writes go to a real socket pair
/// (so the kernel refuses what does not fit): partial writes, writability flapping, a close in the middle
/// of a batch, a reply racing a broadcast. The peer's view is rebuilt in order: direct bytes up to each
/// NIO flush, then what that flush wrote.
@Suite("Outbound path on an embedded channel", .timeLimit(.minutes(5)))
struct OutboundHandlerTests {
    @Test func partialWritesGoOnThroughNIOAndNothingOvertakes() throws {
        let rig = try Rig(sendBuffer: 4096)
        defer { rig.finish() }
        // Far more than the socket takes: writev and send stop short, NIO takes the rest, direct writes
        // resume only once NIO holds nothing.
        var sent: [UInt16] = []
        for round in 0..<20 {
            let batch = (0..<8).map { UInt16(round * 8 + $0) }
            rig.connection.enqueue(batch: batch.map { Rig.frame($0, size: 700) })
            sent += batch
            if round % 3 == 0 {
                rig.connection.enqueueAndFlush(Rig.frame(UInt16(1000 + round), size: 700), as: .standard)
            }
            if round % 3 == 0 { sent.append(UInt16(1000 + round)) }
            if round % 5 == 4 { try rig.readPeer() }  // the reader catches up now and then
        }
        rig.shard.flushAll()
        try rig.readPeer()
        #expect(try rig.arrivedIDs() == sent)
        #expect(rig.nioFlushes > 0, "the socket never refused anything: the test proved nothing")
        #expect(rig.directBytes > 0, "nothing was written directly")
    }

    @Test func writabilityFlappingQueuesAndDrainsInOrder() throws {
        let rig = try Rig(sendBuffer: 1 << 20)
        defer { rig.finish() }
        var sent: [UInt16] = []
        for round in 0..<30 {
            rig.setWritable(round % 2 == 1)
            for index in 0..<3 {
                let id = UInt16(round * 3 + index)
                rig.connection.enqueue(Rig.frame(id, size: 40))
                sent.append(id)
            }
            if round % 4 == 0 {
                rig.connection.writeControl(FrameEncoder.encode(.ping, payload: ByteBuffer(), allocator: .init()))
            }
        }
        rig.setWritable(true)
        rig.shard.flushAll()
        try rig.readPeer()
        #expect(try rig.arrivedIDs() == sent)
        #expect(rig.connection.outbound.queue.isEmpty && rig.shard.queuedMessages == 0)
    }

    @Test func aCloseInTheMiddleOfABatchEndsTheStreamWithTheCloseFrame() throws {
        let rig = try Rig(sendBuffer: 1 << 20, queueMaxMessages: 4)
        defer { rig.finish() }
        rig.connection.enqueueAndFlush(Rig.frame(1, size: 10), as: .standard)
        rig.connection.enqueue(Rig.frame(2, size: 10))  // held for the flush: a slow consumer's, so dropped
        rig.setWritable(false)
        // The fifth queued message overflows: the connection closes as a slow consumer in the middle of
        // the batch, and the rest of the batch is discarded.
        rig.connection.enqueue(batch: (3..<13).map { Rig.frame($0, size: 10) })
        rig.setWritable(true)
        rig.connection.enqueue(Rig.frame(99, size: 10))
        rig.shard.flushAll()
        try rig.readPeer()
        let frames = try rig.arrivedFrames()
        #expect(frames.last?.opcode == 0x8, "the close frame comes last")
        #expect(frames.filter { $0.opcode == 0x8 }.count == 1)
        #expect(try rig.arrivedIDs() == [1], "what left before the close; the slow consumer's backlog dropped")
        #expect(rig.connection.machine.state == .closing)
        #expect(rig.shard.queuedMessages == 0)
    }

    @Test func aReplyWrittenWhileReadingGoesBeforeABroadcastThatRacesIt() throws {
        let rig = try Rig(sendBuffer: 1 << 20)
        defer { rig.finish() }
        // A reply written while reading waits for the end of the turn; a broadcast batch arrives first.
        rig.connection.send(Rig.frame(1, size: 20), as: .reliable, flush: false)
        rig.connection.enqueue(batch: [Rig.frame(2, size: 20)])
        rig.connection.enqueue(batch: [Rig.frame(3, size: 20), Rig.frame(4, size: 20)])
        rig.connection.send(Rig.frame(5, size: 20), as: .reliable, flush: false)
        rig.shard.flushAll()
        try rig.readPeer()
        #expect(try rig.arrivedIDs() == [1, 2, 3, 4, 5])
        #expect(!rig.connection.outbound.flushPending)
    }
}

/// An embedded channel with a connection whose direct writes go to one end of a socket pair.
final class Rig {
    let channel = EmbeddedChannel()
    let hub: Hub
    let shard: LoopShard
    let connection: WebSocketConnection
    let recorder: WireRecorder
    let peer: CInt
    let local: CInt
    var nioFlushes: Int { recorder.flushes }
    var directBytes = 0

    init(sendBuffer: CInt, queueMaxMessages: Int = 1000) throws {
        var configuration = SwitchboardConfiguration()
        configuration.queueMaxMessages = queueMaxMessages
        configuration.slowConsumerPolicy = .disconnect
        var logger = Logger(label: "outbound-test")
        logger.logLevel = .critical
        hub = Hub(
            configuration: configuration, application: EchoApplication(broadcast: false), metrics: SwitchboardMetrics(),
            logger: logger, eventLoops: [channel.embeddedEventLoop])
        shard = hub.shards[0]
        var pair: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, Self.streamType, 0, &pair) == 0 else {
            throw IOError(errnoCode: errno, reason: "socketpair")
        }
        (local, peer) = (pair[0], pair[1])
        var size = sendBuffer
        _ = setsockopt(local, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<CInt>.size))
        _ = fcntl(local, F_SETFL, fcntl(local, F_GETFL) | O_NONBLOCK)
        _ = fcntl(peer, F_SETFL, fcntl(peer, F_GETFL) | O_NONBLOCK)
        #if canImport(Darwin)
            var one: CInt = 1
            _ = setsockopt(local, SOL_SOCKET, SO_NOSIGPIPE, &one, socklen_t(MemoryLayout<CInt>.size))
        #endif
        recorder = WireRecorder(peer: peer)
        connection = WebSocketConnection(
            id: shard.nextConnectionID(), userID: nil, subprotocol: nil, info: nil,
            directSocket: DirectSocket(descriptor: local, channel: channel), hub: hub, shard: shard)
        try channel.pipeline.syncOperations.addHandler(recorder)
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        connection.start()
    }

    #if canImport(Darwin)
        private static let streamType = SOCK_STREAM
    #else
        private static let streamType = CInt(SOCK_STREAM.rawValue)
    #endif

    /// An unmasked binary frame of `size` bytes whose payload starts with `id`.
    static func frame(_ id: UInt16, size: Int) -> ByteBuffer {
        var payload = ByteBuffer(integer: id)
        payload.writeRepeatingByte(0x2A, count: max(size - 2, 0))
        return FrameEncoder.encode(.binary, payload: payload, allocator: .init())
    }

    func setWritable(_ writable: Bool) {
        channel.isWritable = writable
        channel.pipeline.fireChannelWritabilityChanged()
    }

    /// Moves what the peer can read to the wire.
    func readPeer() throws {
        directBytes += recorder.readPeer()
    }

    func arrivedFrames() throws -> [(opcode: UInt8, payload: ByteBuffer)] {
        var wire = recorder.wire
        var frames: [(UInt8, ByteBuffer)] = []
        while wire.readableBytes > 0 {
            guard let first = wire.readInteger(as: UInt8.self), let second = wire.readInteger(as: UInt8.self) else {
                throw Torn()
            }
            var length = Int(second & 0x7F)
            if length == 126 { length = Int(wire.readInteger(as: UInt16.self) ?? 0) }
            if length == 127 { length = Int(wire.readInteger(as: UInt64.self) ?? 0) }
            guard let payload = wire.readSlice(length: length) else { throw Torn() }
            frames.append((first & 0x0F, payload))
        }
        return frames
    }

    /// The ids of the data frames, in the order the peer got them.
    func arrivedIDs() throws -> [UInt16] {
        try arrivedFrames().filter { $0.opcode == 0x2 }.map { $0.payload.getInteger(at: $0.payload.readerIndex) ?? 0 }
    }

    struct Torn: Error {}

    func finish() {
        _ = try? channel.finish()
        close(local)
        close(peer)
    }
}

/// Rebuilds the byte stream the peer sees: at every NIO flush, the direct bytes written before it, then
/// what NIO writes.
final class WireRecorder: ChannelOutboundHandler {
    typealias OutboundIn = ByteBuffer
    var wire = ByteBuffer()
    var flushes = 0
    let peer: CInt

    init(peer: CInt) { self.peer = peer }

    func flush(context: ChannelHandlerContext) {
        _ = readPeer()
        context.flush()
        flushes += 1
        guard let channel = context.channel as? EmbeddedChannel else { return }
        while var buffer = try? channel.readOutbound(as: ByteBuffer.self) { wire.writeBuffer(&buffer) }
    }

    /// Reads what the socket pair holds; returns how many bytes.
    @discardableResult
    func readPeer() -> Int {
        var total = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(peer, &chunk, chunk.count, CInt(MSG_DONTWAIT))
            guard count > 0 else { return total }
            wire.writeBytes(chunk[0..<count])
            total += count
        }
    }
}
