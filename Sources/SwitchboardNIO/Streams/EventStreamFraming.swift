import CompressNIO
import NIOCore
import SwitchboardCore

/// Sits between a stream's connection and its socket and turns the connection's WebSocket frames into the
/// `text/event-stream` response, so a stream is an ordinary `WebSocketConnection` (registry, heartbeats,
/// queue and slow-consumer policy, limits, hooks) with another way out:
///
/// - a text frame (one of the protocol's messages) is an event: named after its push (`event: join`) on
///   the one-way stream, unnamed (`data:` only) on the HTTP transport, where the client reads the protocol;
/// - a binary frame is a positioned event (`EventStreamEncoding`), written from its `id:` line;
/// - a ping is a comment line (it keeps proxies from closing an idle response); once the kernel took it,
///   the connection is told of a pong, since the client has no way to answer one. A link that went
///   silent is found by TCP: the socket's user timeout ends it when what we sent stays unacknowledged;
/// - the close frame ends the response: what was written before it goes first, then TCP closes.
///
/// Bytes from the client after its request are ignored. With gzip, everything after the head is one gzip
/// stream, flushed (`Z_SYNC_FLUSH`) whenever the connection flushes.
final class EventStreamFraming: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let namesEvents: Bool
    /// The stream names of a response carrying several: the `id:` lists every one's last position, in
    /// this order. Empty or one: the event's own `id:` line is written as it is.
    private let streams: [String]
    private var positions: [Substring]
    private var gzip: ZlibCompressor?
    /// Written while gzip is on and not yet flushed: the promises complete with the compressed write.
    private var pending: [EventLoopPromise<Void>] = []
    private var closed = false

    init(transport: Transport, streams: [String], gzip: Bool) {
        self.namesEvents = transport == .eventStream
        self.streams = streams.count > 1 ? streams : []
        self.positions = Array(repeating: "", count: streams.count > 1 ? streams.count : 0)
        // A small window and memory level: a stream's compressor is per connection, like its socket buffers.
        self.gzip =
            gzip
            ? try? ZlibCompressor(
                algorithm: .gzip, configuration: .init(windowSize: 12, compressionLevel: 6, memoryLevel: 4)) : nil
    }

    /// The response's head goes first, as it is (never compressed).
    func start(head: ByteBuffer, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
    }

    var compresses: Bool { gzip != nil }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var frame = unwrapOutboundIn(data)
        guard !closed else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        // Each write is one frame; several in one buffer are taken in turn all the same.
        while let (opcode, payload) = Self.nextFrame(&frame) {
            let last = frame.readableBytes == 0
            write(opcode: opcode, payload: payload, promise: last ? promise : nil, context: context)
            if closed { break }
        }
    }

    private func write(
        opcode: UInt8, payload: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext
    ) {
        switch opcode {
        case 0x1:
            let view = payload.readableBytesView
            var head = context.channel.allocator.buffer(capacity: 48)
            if namesEvents {
                head.writeStaticString("event: ")
                if let name = EventStreamEncoding.pushName(view) {
                    head.writeSubstring(name)
                } else {
                    head.writeStaticString("message")
                }
                head.writeStaticString("\n")
            }
            if EventStreamEncoding.hasLineBreak(view) {
                EventStreamEncoding.appendData(view, to: &head)
                head.writeStaticString("\n")
                emit(head, promise: promise, context: context)
            } else {
                head.writeStaticString("data: ")
                emit(head, promise: nil, context: context)
                emit(payload, promise: nil, context: context)
                emit(Self.endOfEvent, promise: promise, context: context)
            }
        case 0x2:
            positioned(payload, promise: promise, context: context)
        case 0x9:
            let written = promise ?? context.eventLoop.makePromise()
            emit(Self.comment, promise: written, context: context)
            written.futureResult.assumeIsolated().whenSuccess {
                // What the client cannot do itself: the kernel took the ping, the connection hears a pong.
                guard !self.closed else { return }
                context.fireChannelRead(self.wrapInboundOut(Self.pong))
            }
        case 0x8:
            closed = true
            finishGzip(context: context)
            let written = context.eventLoop.makePromise(of: Void.self)
            flushGzip(context: context)
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
            written.futureResult.assumeIsolated().whenComplete { result in
                promise?.completeWith(result)
                context.close(promise: nil)
            }
        default:
            promise?.succeed()
        }
    }

    /// A positioned event: its own `id:` line on a single-stream response; on one with several, an `id:`
    /// with every stream's last position, this one's updated.
    private func positioned(_ payload: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        let view = payload.readableBytesView
        guard let nameEnd = view.firstIndex(of: UInt8(ascii: "\n")) else { return promise?.succeed() ?? () }
        var event = payload
        event.moveReaderIndex(forwardBy: nameEnd - view.startIndex + 1)
        guard !streams.isEmpty else { return emit(event, promise: promise, context: context) }
        let name = Substring(decoding: view[view.startIndex..<nameEnd], as: UTF8.self)
        let rest = event.readableBytesView
        guard rest.starts(with: "id: ".utf8), let idEnd = rest.firstIndex(of: UInt8(ascii: "\n")),
            let index = streams.firstIndex(where: { $0 == name })
        else { return emit(event, promise: promise, context: context) }
        positions[index] = Substring(decoding: rest[rest.index(rest.startIndex, offsetBy: 4)..<idEnd], as: UTF8.self)
        var id = context.channel.allocator.buffer(capacity: 64)
        id.writeStaticString("id: ")
        id.writeString(positions.joined(separator: ","))
        event.moveReaderIndex(forwardBy: idEnd - rest.startIndex)
        emit(id, promise: nil, context: context)
        emit(event, promise: promise, context: context)
    }

    private func emit(_ bytes: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let gzip else { return context.write(wrapOutboundOut(bytes), promise: promise) }
        var input = bytes
        var output = context.channel.allocator.buffer(capacity: gzip.maxSize(from: input) + 16)
        do {
            try gzip.deflate(from: &input, to: &output, flush: .no)
        } catch {
            promise?.fail(error)
            return context.close(promise: nil)
        }
        if output.readableBytes > 0 { context.write(wrapOutboundOut(output), promise: nil) }
        if let promise { pending.append(promise) }
    }

    func flush(context: ChannelHandlerContext) {
        flushGzip(context: context)
        context.flush()
    }

    /// Everything compressed since the last flush leaves now, decodable by the client at once.
    private func flushGzip(context: ChannelHandlerContext) {
        guard let gzip, !pending.isEmpty || !closed else { return }
        var empty = context.channel.allocator.buffer(capacity: 0)
        var output = context.channel.allocator.buffer(capacity: 64)
        do {
            try gzip.deflate(from: &empty, to: &output, flush: .sync)
        } catch {
            return context.close(promise: nil)
        }
        let promises = pending
        pending = []
        guard !promises.isEmpty else { return context.write(wrapOutboundOut(output), promise: nil) }
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(output), promise: written)
        for promise in promises { promise.completeWith(written.futureResult) }
    }

    /// The gzip trailer, so a client reading to the end sees a complete stream.
    private func finishGzip(context: ChannelHandlerContext) {
        guard let gzip else { return }
        self.gzip = nil
        var empty = context.channel.allocator.buffer(capacity: 0)
        var output = context.channel.allocator.buffer(capacity: 256)
        _ = try? gzip.deflate(from: &empty, to: &output, flush: .finish)
        let promises = pending
        pending = []
        let written = context.eventLoop.makePromise(of: Void.self)
        context.write(wrapOutboundOut(output), promise: written)
        for promise in promises { promise.completeWith(written.futureResult) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        for promise in pending { promise.fail(ChannelError.ioOnClosedChannel) }
        pending = []
    }

    /// The next server frame in `buffer` (unmasked, as the hub encodes them): its opcode and payload.
    static func nextFrame(_ buffer: inout ByteBuffer) -> (UInt8, ByteBuffer)? {
        guard let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        else { return nil }
        var headerLength = 2
        var length = Int(second & 0x7F)
        if length == 126 {
            guard let value = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self) else { return nil }
            (length, headerLength) = (Int(value), 4)
        } else if length == 127 {
            guard let value = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self), value < Int.max else {
                return nil
            }
            (length, headerLength) = (Int(value), 10)
        }
        buffer.moveReaderIndex(forwardBy: headerLength)
        guard let payload = buffer.readSlice(length: length) else { return nil }
        return (first & 0x0F, payload)
    }

    private static let endOfEvent = ByteBuffer(string: "\n\n")
    private static let comment = ByteBuffer(string: ": ping\n\n")
    /// A masked (with a zero key: the payload as it is) empty pong, as a client would send it.
    private static let pong = ByteBuffer(bytes: [0x8A, 0x80, 0, 0, 0, 0])
}
