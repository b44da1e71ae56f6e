import CompressNIO
import NIOCore
import SwitchboardCore

/// What makes a connection a stream: it turns the connection's WebSocket frames into the
/// `text/event-stream` response as they are written, so a stream is an ordinary `WebSocketConnection`
/// (registry, heartbeats, queue and slow-consumer policy, limits, hooks) with another way out:
///
/// - a text frame (one of the protocol's messages) is an event: named after its push (`event: join`) on
///   the one-way stream, unnamed (`data:` only) on the HTTP transport, where the client reads the protocol;
/// - a binary frame is a positioned event (`EventStreamEncoding`), written from its `id:` line;
/// - a ping is a comment line (it keeps proxies from closing an idle response); the connection counts it
///   as answered once the kernel took it, since the client has no way to answer one. A link that went
///   silent is found by TCP: the socket's user timeout ends it when what we sent stays unacknowledged;
/// - the close frame ends the response: what was written before it goes first, then TCP closes.
///
/// Called by the connection with its context, in its pipeline's place: no handler of its own, and a plain
/// stream's writer (one channel, no gzip) is shared by all of them, so an idle stream costs no more than
/// an idle WebSocket. With gzip, everything after the head is one
/// gzip stream, flushed (`Z_SYNC_FLUSH`) whenever the connection flushes and finished at the close.
// @unchecked Sendable: the shared writers (`plain…`) hold no state at all; a writer with `state` belongs to
// one connection and is used only on its loop.
final class EventStreamWriter: @unchecked Sendable {
    /// `event:` names on the one-way stream; none on the HTTP transport, whose client reads the protocol.
    private let namesEvents: Bool
    /// What only some streams keep (the positions of several channels, a gzip stream): a plain stream's
    /// writer is shared, so it costs a connection nothing.
    private let state: State?

    /// What a stream of several channels, or a gzip one, keeps of its own.
    final class State {
        /// Several streams: the `id:` lists each one's last position.
        let composite: CompositePosition?
        var gzip: ZlibCompressor?
        /// Compressed since the last flush: the next flush must push it out.
        var dirty = false
        /// Written while gzip is on and not yet flushed: the promises complete with the compressed write.
        var pending: [EventLoopPromise<Void>] = []

        init(composite: CompositePosition?, gzip: ZlibCompressor?) {
            self.composite = composite
            self.gzip = gzip
        }
    }

    private init(namesEvents: Bool, state: State?) {
        self.namesEvents = namesEvents
        self.state = state
    }

    private static let plainEventStream = EventStreamWriter(namesEvents: true, state: nil)
    private static let plainHTTPStream = EventStreamWriter(namesEvents: false, state: nil)

    /// The writer for a stream of `transport` carrying `streams` (resumed from `positions`), gzipped when
    /// asked for and a compressor can be made.
    static func make(transport: Transport, streams: [String], positions: [String], gzip: Bool) -> EventStreamWriter {
        let namesEvents = transport == .eventStream
        // A small window and memory level: a stream's compressor is per connection, like its socket buffers.
        let compressor =
            gzip
            ? try? ZlibCompressor(
                algorithm: .gzip, configuration: .init(windowSize: 12, compressionLevel: 6, memoryLevel: 4)) : nil
        let composite = streams.count > 1 ? CompositePosition(streams: streams, positions: positions) : nil
        guard compressor != nil || composite != nil else { return namesEvents ? plainEventStream : plainHTTPStream }
        return EventStreamWriter(namesEvents: namesEvents, state: State(composite: composite, gzip: compressor))
    }

    /// Whether the events are gzip-compressed (asked for, and the compressor could be made): what the
    /// head's `Content-Encoding` must say.
    var compresses: Bool { state?.gzip != nil }

    /// The response's head goes first, as it is (never compressed).
    func start(head: ByteBuffer, context: ChannelHandlerContext) {
        context.writeAndFlush(NIOAny(head), promise: nil)
    }

    /// Writes a frame of the connection's as what the response carries.
    func write(_ frame: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        var frame = frame
        var promise = promise
        var ended = false
        // Each write is one frame; several in one buffer are taken in turn all the same.
        while !ended, let (opcode, payload) = Self.nextFrame(&frame) {
            let last = frame.readableBytes == 0
            write(opcode: opcode, payload: payload, promise: last ? promise : nil, context: context)
            if last { promise = nil }
            ended = opcode == 0x8
        }
        // Nothing took it: an empty write, or frames after the end of the response.
        if let promise {
            if ended { promise.fail(ChannelError.outputClosed) } else { promise.succeed() }
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
            emit(Self.comment, promise: promise, context: context)
        case 0x8:
            let written = context.eventLoop.makePromise(of: Void.self)
            if let state, state.gzip != nil {
                compress(context.channel.allocator.buffer(capacity: 0), flush: .finish, context: context)
                state.gzip = nil
                let promises = state.pending
                state.pending = []
                complete(promises, with: written, context: context)
            }
            context.writeAndFlush(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: written)
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
        guard let composite = state?.composite else { return emit(event, promise: promise, context: context) }
        let name = Substring(decoding: view[view.startIndex..<nameEnd], as: UTF8.self)
        guard let index = composite.streams.firstIndex(where: { $0 == name }) else {
            // Not one of the request's streams: its own position would break the list; no `id:` at all.
            event.moveReaderIndex(forwardBy: idEnd - rest.startIndex + 1)
            return emit(event, promise: promise, context: context)
        }
        composite.positions[index] = Substring(
            decoding: rest[rest.index(rest.startIndex, offsetBy: 4)..<idEnd], as: UTF8.self)
        var id = context.channel.allocator.buffer(capacity: 64)
        id.writeStaticString("id: ")
        id.writeString(composite.positions.joined(separator: ","))
        event.moveReaderIndex(forwardBy: idEnd - rest.startIndex)
        emit(id, promise: nil, context: context)
        emit(event, promise: promise, context: context)
    }

    private func emit(_ bytes: ByteBuffer, promise: EventLoopPromise<Void>?, context: ChannelHandlerContext) {
        guard let state, state.gzip != nil else { return context.write(NIOAny(bytes), promise: promise) }
        compress(bytes, flush: .no, context: context)
        state.dirty = true
        if let promise { state.pending.append(promise) }
    }

    func flush(context: ChannelHandlerContext) {
        if let state, state.gzip != nil, state.dirty {
            // Everything compressed since the last flush leaves now, decodable by the client at once.
            state.dirty = false
            compress(context.channel.allocator.buffer(capacity: 0), flush: .sync, context: context)
            let promises = state.pending
            state.pending = []
            if !promises.isEmpty {
                let written = context.eventLoop.makePromise(of: Void.self)
                context.write(NIOAny(context.channel.allocator.buffer(capacity: 0)), promise: written)
                complete(promises, with: written, context: context)
            }
        }
        context.flush()
    }

    /// Runs the compressor until it has taken all of `input` and given all it has for `flush`, writing
    /// what it gives as it goes (zlib keeps what does not fit an output buffer for the next call).
    private func compress(_ input: ByteBuffer, flush: CompressNIOFlush, context: ChannelHandlerContext) {
        guard let gzip = state?.gzip else { return }
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
            if output.readableBytes > 0 { context.write(NIOAny(output), promise: nil) }
            if exhausted || (input.readableBytes == 0 && output.writableBytes > 0) { return }
        }
    }

    private func complete(
        _ promises: [EventLoopPromise<Void>], with written: EventLoopPromise<Void>, context: ChannelHandlerContext
    ) {
        for promise in promises { promise.completeWith(written.futureResult) }
    }

    /// The connection is gone: what waited for a gzip flush never leaves.
    func failPending() {
        guard let state else { return }
        for promise in state.pending { promise.fail(ChannelError.ioOnClosedChannel) }
        state.pending = []
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
}

/// The positions of a response carrying several streams, seeded from its request: an `id:` never drops a
/// position the client gave, whichever stream's event came last.
final class CompositePosition {
    let streams: [String]
    var positions: [Substring]

    init(streams: [String], positions: [String]) {
        self.streams = streams
        self.positions =
            positions.count == streams.count
            ? positions.map { Substring($0) } : Array(repeating: "", count: streams.count)
    }
}
