import NIOCore
import SwitchboardCore

/// Outbound: performs what the connection's `OutboundStateMachine` decides (write to the socket, hold
/// for the flush, write through NIO, queue, flush). Flushes are requested from the shard, which issues
/// one per connection per batch.
extension WebSocketConnection {
    /// Delivers an encoded data frame in order. Frames for a closing connection are discarded.
    func enqueue(_ frame: ByteBuffer, as kind: OutboundClass = .standard) {
        guard context != nil else { return }
        switch outbound.deliver(frame, as: kind) {
        case .discard:
            break
        case .write(let reportGaps):
            if reportGaps { reportAllGaps() }  // what a lane lost goes before its next message
            write(deflated(frame))
        case .queued(let countChange, let dropped):
            shard.queuedMessages += countChange
            if dropped > 0 {
                shard.counters.queueDropped += dropped
                log(.debug, "slow consumer: dropped oldest queued messages", metadata: ["dropped": "\(dropped)"])
            }
        case .overflow:
            log(
                .info,
                "slow consumer: queue full, disconnecting",
                metadata: [
                    "queued_messages": "\(outbound.queue.count)", "queued_bytes": "\(outbound.queue.byteCount)",
                ])
            close(.slowConsumer)
        }
    }

    /// Delivers a batch of broadcasts and flushes at once: the first receivers of a broadcast to
    /// thousands should not wait for the last one to be written before anything leaves.
    func enqueue(batch frames: [ByteBuffer]) {
        // A single frame may go at once; several leave together, in one writev, at the flush.
        outbound.beginFlushScope(single: frames.count == 1)
        for frame in frames { enqueue(frame) }
        if outbound.endFlushScope() { flushNow() }
    }

    /// Delivers one frame and flushes at once, without giving the connection a place in the shard's flush
    /// list: a fan-out to thousands would otherwise revisit every receiver (cold in cache by then) at its end.
    func enqueueAndFlush(_ frame: ByteBuffer, as kind: OutboundClass) {
        outbound.beginFlushScope(single: true)
        enqueue(frame, as: kind)
        if outbound.endFlushScope() { flushNow() }
    }

    /// Control frames bypass the queue: they are never dropped and never wait behind data. `written`
    /// completes once NIO wrote it (it fails when the frame was dropped).
    func writeControl(_ frame: ByteBuffer, written: EventLoopPromise<Void>? = nil) {
        guard let context else {
            written?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        perform(outbound.writeControl(), deflated(frame), context: context, promise: written)
    }

    /// Writes a frame as the connection's transport carries it: as it is, or as a stream's events.
    func output(_ frame: ByteBuffer, promise: EventLoopPromise<Void>? = nil, context: ChannelHandlerContext) {
        if let streamWriter {
            streamWriter.write(frame, promise: promise, context: context)
        } else {
            context.write(wrapOutboundOut(frame), promise: promise)
        }
    }

    /// Flushes what `output` wrote (a stream's gzip first).
    func flushOutput(_ context: ChannelHandlerContext) {
        if let streamWriter { streamWriter.flush(context: context) } else { context.flush() }
    }

    /// Writes queued messages while the socket takes them. A lane that lost messages gets its gap
    /// notice (a control message) right before its next message, or once the queue is empty.
    func drainQueue() {
        while let entry = outbound.nextQueued() {
            // Counted as it leaves: a write may drain the queue again (writability regained during the flush)
            // or close the connection (discarding the rest), and those count what they take themselves.
            shard.queuedMessages -= 1
            if let lane = entry.lane, let dropped = outbound.takeGap(for: lane) { writeGapNotice(lane, dropped) }
            write(deflated(entry.frame))
        }
        reportAllGaps()
    }

    private func reportAllGaps() {
        for (lane, dropped) in outbound.takeAllGaps() { writeGapNotice(lane, dropped) }
    }

    private func writeGapNotice(_ lane: DeliveryLane, _ dropped: Int) {
        if let notice = hub.application.gapNotice(lane: lane, dropped: dropped) { writeControl(notice) }
    }

    func flushNow() {
        guard let context else { return }
        switch outbound.flush() {
        case .none:
            break
        case .flushNIO:
            flushOutput(context)
        case .writev(let frames):
            let written = directSocket?.write(frames) ?? 0
            let handover = outbound.wrote(written)
            for frame in handover.rest { context.write(wrapOutboundOut(frame), promise: nil) }
            if handover.flushNIO { context.flush() }
        }
    }

    /// The frame as this connection receives it: compressed when deflate was negotiated and it pays off.
    /// The compressed frame is shared with the loop's other receivers of the same window.
    private func deflated(_ frame: ByteBuffer) -> ByteBuffer {
        guard let deflate, let deflater = shard.deflater else { return frame }
        return deflater.compressed(frame, windowBits: deflate.serverWindowBits) ?? frame
    }

    private func write(_ frame: ByteBuffer) {
        guard let context else { return }
        shard.counters.messagesOut += 1
        shard.counters.bytesOut += frame.readableBytes
        // NIO's buffered bytes are asked of the channel only after a write went through it: the fan-out
        // path does not touch the channel.
        let action = outbound.write(frame) {
            (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 1
        }
        perform(action, frame, context: context)
    }

    private func perform(
        _ action: OutboundStateMachine.Write, _ frame: ByteBuffer, context: ChannelHandlerContext,
        promise: EventLoopPromise<Void>? = nil
    ) {
        switch action {
        case .send:
            var frame = frame
            if directSocket?.write(&frame) != true {
                if outbound.sentPartly() { shard.scheduleFlush(self) }
                output(frame, promise: promise, context: context)
            } else {
                promise?.succeed()
            }
        case .hold(let scheduleFlush, let flushNow):
            promise?.succeed()  // held for a direct write: a stream (the only caller with a promise) never holds
            if scheduleFlush { shard.scheduleFlush(self) }
            // Past a writev's worth or the high water mark, out now (what the socket refuses goes to NIO,
            // whose water marks then send the rest to the queue and its slow-consumer policy).
            if flushNow { self.flushNow() }
        case .throughNIO(let first, let scheduleFlush):
            for frame in first { output(frame, context: context) }
            output(frame, promise: promise, context: context)
            if scheduleFlush { shard.scheduleFlush(self) }
        case .drop:
            promise?.fail(ChannelError.outputClosed)
        }
    }

    /// The close begins: what `backlog` keeps is written through NIO, in order, before the close frame
    /// the caller writes next; the queue's messages are counted as they leave or as they are dropped.
    func beginClosing(_ backlog: OutboundStateMachine.Backlog, context: ChannelHandlerContext) {
        let closing = outbound.close(backlog)
        for frame in closing.written { output(frame, context: context) }
        for frame in closing.queued {
            shard.counters.messagesOut += 1
            shard.counters.bytesOut += frame.readableBytes
            output(frame, context: context)
        }
        shard.queuedMessages -= closing.queued.count + closing.dropped
    }
}
