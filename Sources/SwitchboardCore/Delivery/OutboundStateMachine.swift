import NIOCore

/// The outbound side of one connection: where each frame goes (straight to the socket, held for the
/// flush, through NIO, into the queue, or nowhere), when to flush, and what goes before a close frame.
/// A value type that returns what to do, like `ConnectionStateMachine`: the rules that keep bytes in
/// order live here and are tested without sockets; the channel handler performs the actions.
///
/// The rules, in one place:
/// - A direct write (`send`/`writev` on the socket) happens only while NIO holds none of this connection's
///   bytes, so nothing overtakes what NIO still buffers. Once anything went through NIO, the next direct
///   write first asks NIO how much it holds and waits for zero.
/// - A write through NIO takes the held frames with it, first.
/// - Held frames are bounded (a writev's worth, or the high water mark), then flushed at once.
/// - Data waits in the queue while the socket is not writable (NIO's water marks say so); the queue's
///   slow-consumer policy decides what happens when it is full.
/// - From the close on, everything goes through NIO and data is refused.
package struct OutboundStateMachine: Sendable {
    /// How a frame may reach the socket.
    package enum Path: Equatable, Sendable {
        /// Straight to the socket while NIO holds nothing (a plain TCP connection).
        case direct
        /// Through NIO's pipeline only (TLS, direct writes off, or closing).
        case nio
    }

    /// A data frame offered for delivery.
    package enum Delivery: Equatable, Sendable {
        /// Closing or closed: the frame is dropped.
        case discard
        /// Write it now (`write`); first report what the lanes lost (`takeAllGaps`), when `reportGaps`.
        case write(reportGaps: Bool)
        /// It waits in the queue, whose message count changed by `countChange` (dropped messages leave).
        case queued(countChange: Int, dropped: Int)
        /// The queue is full and nothing may be dropped: close the connection as a slow consumer.
        case overflow
    }

    /// What to do with a frame that is ready to leave.
    package enum Write: Equatable, Sendable {
        /// Write it to the socket now; then report `sent(completely:)`.
        case send
        /// It waits for the flush, held here. `flushNow`: the bound is reached, call `flush` now.
        case hold(scheduleFlush: Bool, flushNow: Bool)
        /// Write `first`, then the frame, through NIO.
        case throughNIO(first: [ByteBuffer], scheduleFlush: Bool)
        /// The close frame is written: nothing follows it.
        case drop
    }

    /// What a flush does.
    package enum Flush: Equatable, Sendable {
        case none
        /// Flush NIO's buffer.
        case flushNIO
        /// Write these held frames to the socket with one `writev`, then report `wrote(_:)`.
        case writev([ByteBuffer])
    }

    /// What a `writev` left: `rest` goes through NIO, then NIO is flushed when `flushNIO`.
    package struct Handover: Equatable, Sendable {
        package var rest: [ByteBuffer]
        package var flushNIO: Bool
    }

    /// What happens to the backlog when the connection starts closing.
    package enum Backlog: Equatable, Sendable {
        /// Frames already written and the queue go out before the close frame (a drain on shutdown).
        case send
        /// Frames already written go out; the queue is dropped (a protocol failure, the peer's close).
        case sendWritten
        /// Nothing more goes out: the backlog is the problem (a slow consumer).
        case drop
    }

    /// The frames to write through NIO, in order, before the close frame; `dropped` queued messages left.
    package struct Closing: Equatable, Sendable {
        package var written: [ByteBuffer]
        package var queued: [ByteBuffer]
        package var dropped: Int
    }

    // The fields a fan-out write reads come first.
    package private(set) var path: Path
    package private(set) var writable = true
    /// Data is refused from the close on.
    package private(set) var isAcceptingData = true
    /// Written since the last flush.
    package private(set) var flushPending = false
    /// Set after a write through NIO (and at first, for the 101 response): NIO may hold bytes, so a
    /// direct write asks first.
    private var nioMayHoldBytes = true
    private var scope = Scope.none
    /// Frames waiting for the flush, to leave with one writev (direct path only).
    private var held: [ByteBuffer] = []
    private var heldBytes = 0
    package private(set) var queue: OutboundQueue
    private let heldBytesLimit: Int

    /// Who flushes what is written now.
    private enum Scope: Equatable, Sendable {
        /// The shard's flush list, at the end of the turn.
        case none
        /// The caller, right after its writes (`endFlushScope`).
        case caller
        /// The caller, and a lone frame may go to the socket at once.
        case callerSingle
    }

    /// Frames per `writev`: held frames are flushed at this count.
    package static let framesPerWrite = 64

    /// - Parameters:
    ///   - direct: whether the socket may be written directly.
    ///   - heldBytesLimit: held frames are flushed past this many bytes (the write buffer's high water mark).
    package init(direct: Bool, queue: OutboundQueue, heldBytesLimit: Int) {
        path = direct ? .direct : .nio
        self.queue = queue
        self.heldBytesLimit = heldBytesLimit
    }

    /// Frames held for the flush.
    package var heldCount: Int { held.count }

    // MARK: data

    /// A data frame is offered: written now when nothing waits and the socket is writable, else queued.
    package mutating func deliver(_ frame: ByteBuffer, as kind: OutboundClass) -> Delivery {
        guard isAcceptingData else { return .discard }
        if queue.isEmpty, writable { return .write(reportGaps: queue.hasGaps) }
        let before = queue.count
        switch queue.enqueue(frame, as: kind) {
        case .queued: return .queued(countChange: queue.count - before, dropped: 0)
        case .queuedAfterDropping(let dropped): return .queued(countChange: queue.count - before, dropped: dropped)
        case .overflow: return .overflow
        }
    }

    /// A frame (data or control, encoded and compressed) is ready to leave. `nioBufferedBytes` is asked
    /// only after a write went through NIO.
    package mutating func write(_ frame: ByteBuffer, nioBufferedBytes: () -> Int) -> Write {
        guard isAcceptingData else { return .drop }
        guard path == .direct, nioHoldsNothing(nioBufferedBytes) else { return throughNIO() }
        if scope == .callerSingle, held.isEmpty { return .send }
        held.append(frame)
        heldBytes += frame.readableBytes
        let schedule = requestFlush()
        return .hold(
            scheduleFlush: schedule, flushNow: held.count >= Self.framesPerWrite || heldBytes >= heldBytesLimit)
    }

    /// A control frame: always through NIO (after what is held), never queued; none after the close frame.
    package mutating func writeControl() -> Write { isAcceptingData ? throughNIO() : .drop }

    /// The socket did not take all of a `send`: the rest goes through NIO. True: schedule a flush.
    package mutating func sentPartly() -> Bool {
        nioMayHoldBytes = true
        return requestFlush()
    }

    private mutating func throughNIO() -> Write {
        let first = path == .direct ? takeHeld() : []
        nioMayHoldBytes = true
        return .throughNIO(first: first, scheduleFlush: requestFlush())
    }

    private mutating func nioHoldsNothing(_ nioBufferedBytes: () -> Int) -> Bool {
        guard nioMayHoldBytes else { return true }
        guard nioBufferedBytes() == 0 else { return false }
        nioMayHoldBytes = false
        return true
    }

    /// True when the caller must ask the shard for a flush (no scope flushes for it).
    private mutating func requestFlush() -> Bool {
        guard !flushPending else { return false }
        flushPending = true
        return scope == .none
    }

    private mutating func takeHeld() -> [ByteBuffer] {
        defer {
            held = []
            heldBytes = 0
        }
        return held
    }

    // MARK: flushing

    /// The caller writes and then flushes (`endFlushScope`); `single`: one frame, which may go at once.
    package mutating func beginFlushScope(single: Bool) {
        scope = single ? .callerSingle : .caller
    }

    /// True: call `flush` now.
    package mutating func endFlushScope() -> Bool {
        scope = .none
        return flushPending
    }

    package mutating func flush() -> Flush {
        flushPending = false
        if path == .direct, !held.isEmpty { return .writev(held) }
        return path == .nio || nioMayHoldBytes ? .flushNIO : .none
    }

    /// A `writev` of the held frames took `count` bytes; what it did not take goes through NIO.
    package mutating func wrote(_ count: Int) -> Handover {
        var count = count
        var rest: [ByteBuffer] = []
        for var frame in takeHeld() {
            if count >= frame.readableBytes {
                count -= frame.readableBytes
                continue
            }
            frame.moveReaderIndex(forwardBy: count)
            count = 0
            rest.append(frame)
        }
        if !rest.isEmpty { nioMayHoldBytes = true }
        return Handover(rest: rest, flushNIO: nioMayHoldBytes)
    }

    // MARK: the queue

    /// NIO's writability changed. True: drain the queue (`nextQueued`).
    package mutating func writabilityChanged(_ writable: Bool) -> Bool {
        self.writable = writable
        return writable && isAcceptingData
    }

    /// The next queued message to write, while the socket is writable.
    package mutating func nextQueued() -> OutboundQueue.Entry? {
        guard writable, isAcceptingData else { return nil }
        return queue.popFirst()
    }

    /// What `lane` lost since its last message, to report before its next one.
    package mutating func takeGap(for lane: DeliveryLane) -> Int? { queue.takeGap(for: lane) }

    /// Every lane's losses, once the queue is empty.
    package mutating func takeAllGaps() -> [DeliveryLane: Int] {
        queue.isEmpty ? queue.takeAllGaps() : [:]
    }

    // MARK: closing

    /// The close begins: from here on everything goes through NIO and data is refused.
    package mutating func close(_ backlog: Backlog) -> Closing {
        var closing = Closing(written: [], queued: [], dropped: 0)
        if backlog != .drop, path == .direct { closing.written = takeHeld() }
        held = []
        heldBytes = 0
        if backlog == .send {
            while let entry = queue.popFirst() { closing.queued.append(entry.frame) }
        }
        closing.dropped = queue.removeAll()
        path = .nio
        isAcceptingData = false
        return closing
    }

    /// The transport is gone: nothing is written any more. Returns the queued messages dropped.
    package mutating func transportClosed() -> Int {
        held = []
        heldBytes = 0
        path = .nio
        isAcceptingData = false
        flushPending = false
        return queue.removeAll()
    }
}
