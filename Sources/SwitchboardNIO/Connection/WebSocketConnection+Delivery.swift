import NIOCore
import SwitchboardCore

/// Outbound: the bounded, ordered queue in front of NIO's write buffer. Frames go straight to the
/// socket while it is writable; otherwise they wait in `queue`, and the slow-consumer policy applies
/// when it is full. Flushes are requested from the shard, which issues one per connection per batch.
extension WebSocketConnection {
    /// Delivers an encoded data frame in order. Frames for a closing connection are discarded.
    func enqueue(_ frame: ByteBuffer, as kind: OutboundClass = .standard) {
        guard machine.state == .open, let context else { return }
        if queue.isEmpty, writable {
            if queue.hasGaps { drainQueue() }  // report what a lane lost before its next message
            write(frame, context: context)
            return
        }
        let before = queue.count
        let result = queue.enqueue(frame, as: kind)
        shard.queuedMessages += queue.count - before
        switch result {
        case .queued:
            break
        case .queuedAfterDropping(let dropped):
            shard.counters.queueDropped += dropped
            log(.debug, "slow consumer: dropped oldest queued messages", metadata: ["dropped": "\(dropped)"])
        case .overflow:
            log(
                .info,
                "slow consumer: queue full, disconnecting",
                metadata: ["queued_messages": "\(queue.count)", "queued_bytes": "\(queue.byteCount)"])
            close(.slowConsumer)
        }
    }

    /// Delivers a batch of broadcasts and flushes at once: the first receivers of a broadcast to
    /// thousands should not wait for the last one to be written before anything leaves.
    func enqueue(batch frames: [ByteBuffer]) {
        // A single frame may go at once; several leave together, in one writev, at the flush.
        flushingAfter(direct: frames.count == 1) { for frame in frames { enqueue(frame) } }
    }

    /// Delivers one frame and flushes at once.
    func enqueueAndFlush(_ frame: ByteBuffer, as kind: OutboundClass) {
        flushingAfter(direct: true) { enqueue(frame, as: kind) }
    }

    /// Runs `writes`, then flushes, without giving the connection a place in the shard's flush list: a
    /// fan-out to thousands would otherwise revisit every receiver (cold in cache by then) at its end.
    private func flushingAfter(direct: Bool, _ writes: () -> Void) {
        flushingAtOnce = true
        sendingDirectly = direct
        writes()
        flushingAtOnce = false
        sendingDirectly = false
        if flushPending { flushNow() }
    }

    /// Control frames bypass the queue: they are never dropped and never wait behind data.
    func writeControl(_ frame: ByteBuffer) {
        guard let context else { return }
        writeThroughPipeline(deflated(frame), context: context)
    }

    /// Writes queued messages while the socket takes them. A lane that lost messages gets its gap
    /// notice (a control message) right before its next message, or once the queue is empty.
    func drainQueue() {
        guard let context, !queue.isEmpty || queue.hasGaps else { return }
        while writable, let entry = queue.popFirst() {
            // Counted as it leaves: a write may drain the queue again (writability regained during the flush)
            // or close the connection (discarding the rest), and those count what they take themselves.
            shard.queuedMessages -= 1
            if let lane = entry.lane, let dropped = queue.takeGap(for: lane) { writeGapNotice(lane, dropped) }
            write(entry.frame, context: context)
        }
        if queue.isEmpty {
            for (lane, dropped) in queue.takeAllGaps() { writeGapNotice(lane, dropped) }
        }
    }

    private func writeGapNotice(_ lane: DeliveryLane, _ dropped: Int) {
        if let notice = hub.application.gapNotice(lane: lane, dropped: dropped) { writeControl(notice) }
    }

    func discardQueue() {
        shard.queuedMessages -= queue.removeAll()
        _ = takeUnflushed()
    }

    /// The frames waiting for the flush, handed over (and no longer counted).
    func takeUnflushed() -> [ByteBuffer] {
        defer {
            unflushed = []
            unflushedBytes = 0
        }
        return unflushed
    }

    func flushNow() {
        flushPending = false
        guard let context else { return }
        if !unflushed.isEmpty, let directSocket {
            handUnflushedToPipeline(context, skipping: directSocket.write(unflushed))
        }
        if directSocket == nil || pipelineMayHoldBytes { context.flush() }
    }

    /// From here on everything goes through NIO (the close handshake): what waits for the flush goes first.
    func stopDirectWrites() {
        guard directSocket != nil else { return }
        if let context { handUnflushedToPipeline(context, skipping: 0) }
        directSocket = nil
    }

    /// Writes the frames waiting for the flush through NIO, less the first `taken` bytes (already sent).
    private func handUnflushedToPipeline(_ context: ChannelHandlerContext, skipping taken: Int) {
        var taken = taken
        for var frame in takeUnflushed() {
            if taken >= frame.readableBytes {
                taken -= frame.readableBytes
                continue
            }
            frame.moveReaderIndex(forwardBy: taken)
            taken = 0
            pipelineMayHoldBytes = true
            context.write(wrapOutboundOut(frame), promise: nil)
        }
    }

    /// The frame as this connection receives it: compressed when deflate was negotiated and it pays off.
    /// The compressed frame is shared with the loop's other receivers of the same window.
    private func deflated(_ frame: ByteBuffer) -> ByteBuffer {
        guard let deflate, let deflater = shard.deflater else { return frame }
        return deflater.compressed(frame, windowBits: deflate.serverWindowBits) ?? frame
    }

    private func write(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        var frame = deflated(frame)
        shard.counters.messagesOut += 1
        shard.counters.bytesOut += frame.readableBytes
        guard let directSocket, pipelineIsEmpty(context) else { return writeThroughPipeline(frame, context: context) }
        // A single frame its caller flushes at once leaves now; others (a reply while reading, a batch)
        // wait for the flush, to leave in one writev with what follows them in the same turn.
        if sendingDirectly, unflushed.isEmpty {
            if !directSocket.write(&frame) { writeThroughPipeline(frame, context: context) }
            return
        }
        unflushed.append(frame)
        unflushedBytes += frame.readableBytes
        requestFlush()
        // Bounded like NIO's buffer: past a writev's worth or the high water mark, out now (what the socket
        // refuses goes to NIO, whose water marks then send the rest to the queue and its slow-consumer policy).
        if unflushed.count >= DirectSocket.framesPerCall || unflushedBytes >= hub.configuration.writeBufferHighWaterMark
        {
            flushNow()
        }
    }

    private func writeThroughPipeline(_ frame: ByteBuffer, context: ChannelHandlerContext) {
        if directSocket != nil {
            pipelineMayHoldBytes = true
            handUnflushedToPipeline(context, skipping: 0)  // written before this frame
        }
        context.write(wrapOutboundOut(frame), promise: nil)
        requestFlush()
    }

    /// Whether NIO holds no unwritten bytes of this connection (a direct write would overtake them).
    /// Asked of the channel only after a write went through it: the fan-out path does not touch it.
    private func pipelineIsEmpty(_ context: ChannelHandlerContext) -> Bool {
        guard pipelineMayHoldBytes else { return true }
        guard (try? context.channel.syncOptions?.getOption(.bufferedWritableBytes)) == 0 else { return false }
        pipelineMayHoldBytes = false
        return true
    }

    private func requestFlush() {
        guard !flushPending else { return }
        flushPending = true
        if !flushingAtOnce { shard.scheduleFlush(self) }
    }
}
