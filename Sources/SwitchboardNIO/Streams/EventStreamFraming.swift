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
/// stream, flushed (`Z_SYNC_FLUSH`) whenever the connection flushes and finished at the close.
final class EventStreamFraming: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let namesEvents: Bool
    /// The request's streams: an event of another has no `id:` (its position is not one the client's
    /// `Last-Event-ID` could carry back).
    private let streams: [String]
    /// With several streams, each one's last position: the `id:` lists them all, in `streams` order.
    private var positions: [Substring]
    private var gzip: ZlibCompressor?
    /// Compressed since the last flush: the next flush must push it out.
    private var dirty = false
    /// Written while gzip is on and not yet flushed: the promises complete with the compressed write.
    private var pending: [EventLoopPromise<Void>] = []
    private var closed = false

    init(transport: Transport, streams: [String], positions: [String], gzip: Bool) {
        self.namesEvents = transport == .eventStream
        self.streams = streams
        self.positions =
            streams.count > 1
            ? (positions.count == streams.count
                ? positions.map { Substring($0) } : Array(repeating: "", count: streams.count))
            : []
        // A small window and memory level: a stream's compressor is per connection, like its socket buffers.
        self.gzip =
            gzip
            ? try? ZlibCompressor(
                algorithm: .gzip, configuration: .init(windowSize: 12, compressionLevel: 6, memoryLevel: 4)) : nil
    }

    /// Whether the events are gzip-compressed (asked for, and the compressor could be made): what the
    /// head's `Content-Encoding` must say.
    var compresses: Bool { gzip != nil }

    /// The response's head goes first, as it is (never compressed).
    func start(head: ByteBuffer, context: ChannelHandlerContext) {
        context.writeAndFlush(wrapOutboundOut(head), promise: nil)
    }

    /// Bytes the client sent after its request: none are expected; past a few, it is not a stream client.
    private var ignoredBytes = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        ignoredBytes += unwrapInboundIn(data).readableBytes
        if ignoredBytes > 64 * 1024 { context.close(promise: nil) }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        var frame = unwrapOutboundIn(data)
        var promise = promise
        // Each write is one frame; several in one buffer are taken in turn all the same.
        while !closed, let (opcode, payload) = Self.nextFrame(&frame) {
            let last = frame.readableBytes == 0
            write(opcode: opcode, payload: payload, promise: last ? promise : nil, context: context)
            if last { promise = nil }
        }
        // Nothing took it: an empty write, or frames after the end of the response.
        if let promise {
            if closed { promise.fail(ChannelError.outputClosed) } else { promise.succeed() }
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
                let name = EventStreamEncoding.pushName(view)
                // A shutdown's disconnect says when to come back: `EventSource` waits `retry:` before it does.
                if name == "disconnect", let after = EventStreamEncoding.number("after_ms", in: view) {
                    head.writeString("retry: \(after)\n")
                }
                head.writeStaticString("event: ")
                if let name {
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
                // From a fresh stack: this completes inside the connection's own flush.
                context.eventLoop.assumeIsolated().execute {
                    guard !self.closed else { return }
                    context.fireChannelRead(self.wrapInboundOut(Self.pong))
                }
            }
        case 0x8:
            closed = true
            let written = context.eventLoop.makePromise(of: Void.self)
            if gzip != nil {
                compress(context.channel.allocator.buffer(capacity: 0), flush: .finish, context: context)
                gzip = nil
                let promises = pending
                pending = []
                complete(promises, with: written, context: context)
            }
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
        guard let nameEnd = view.firstIndex(of: UInt8(ascii: "\n")) else {
            promise?.succeed()
            return
        }
        var event = payload
        event.moveReaderIndex(forwardBy: nameEnd - view.startIndex + 1)
        let rest = event.readableBytesView
        guard rest.starts(with: "id: ".utf8), let idEnd = rest.firstIndex(of: UInt8(ascii: "\n")) else {
            return emit(event, promise: promise, context: context)
        }
        let name = Substring(decoding: view[view.startIndex..<nameEnd], as: UTF8.self)
        guard let index = streams.firstIndex(where: { $0 == name }) else {
            // Not one of the request's streams: its own position would break the list; no `id:` at all.
            event.moveReaderIndex(forwardBy: idEnd - rest.startIndex + 1)
            return emit(event, promise: promise, context: context)
        }
        guard streams.count > 1 else { return emit(event, promise: promise, context: context) }
        positions[index] = Substring(decoding: rest[rest.index(rest.startIndex, offsetBy: 4)..<idEnd], as: UTF8.self)
        var id = context.channel.allocator.buffer(capacity: 64)
        id.writeStaticString("id: ")
        id.writeString(positions.joined(separator: ","))
        event.moveReaderIndex(forwardBy: idEnd - rest.startIndex)
        emit(id, promise: nil, context: context)
        emit(event, promise: promise, context: context)
    }

    private func emit(_ bytes: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard gzip != nil else { return context.write(wrapOutboundOut(bytes), promise: promise) }
        compress(bytes, flush: .no, context: context)
        dirty = true
        if let promise { pending.append(promise) }
    }

    func flush(context: ChannelHandlerContext) {
        if gzip != nil, dirty {
            // Everything compressed since the last flush leaves now, decodable by the client at once.
            dirty = false
            compress(context.channel.allocator.buffer(capacity: 0), flush: .sync, context: context)
            let promises = pending
            pending = []
            if !promises.isEmpty {
                let written = context.eventLoop.makePromise(of: Void.self)
                context.write(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: written)
                complete(promises, with: written, context: context)
            }
        }
        context.flush()
    }

    /// Runs the compressor until it has taken all of `input` and given all it has for `flush`, writing
    /// what it gives as it goes (zlib keeps what does not fit an output buffer for the next call).
    private func compress(_ input: ByteBuffer, flush: CompressNIOFlush, context: ChannelHandlerContext) {
        guard let gzip else { return }
        var input = input
        while true {
            var output = context.channel.allocator.buffer(capacity: 16 * 1024)
            var exhausted = false
            do {
                try gzip.deflate(from: &input, to: &output, flush: flush)
            } catch let error as CompressNIOError where error == .bufferOverflow {
                // Out of output space (go on with a fresh buffer), or nothing left to do for this flush.
                exhausted = output.readableBytes == 0 && input.readableBytes == 0
            } catch {
                context.close(promise: nil)
                return
            }
            if output.readableBytes > 0 { context.write(wrapOutboundOut(output), promise: nil) }
            if exhausted || (input.readableBytes == 0 && output.writableBytes > 0) { return }
        }
    }

    private func complete(
        _ promises: [EventLoopPromise<Void>], with written: EventLoopPromise<Void>, context: ChannelHandlerContext
    ) {
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
        guard buffer.readableBytes >= headerLength + length else { return nil }
        buffer.moveReaderIndex(forwardBy: headerLength)
        guard let payload = buffer.readSlice(length: length) else { return nil }
        return (first & 0x0F, payload)
    }

    private static let endOfEvent = ByteBuffer(string: "\n\n")
    private static let comment = ByteBuffer(string: ": ping\n\n")
    /// A masked (with a zero key: the payload as it is) empty pong, as a client would send it.
    private static let pong = ByteBuffer(bytes: [0x8A, 0x80, 0, 0, 0, 0])
}
