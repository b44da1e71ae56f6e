import NIOCore

/// The data messages waiting for one connection while its socket is not writable, bounded in bytes
/// and in messages. Holds encoded frames, often shared with every other receiver of a broadcast.
/// Control frames never enter it, so they can never be dropped.
public struct OutboundQueue: Sendable {
    public enum EnqueueResult: Equatable, Sendable {
        case queued
        /// Queued after dropping this many older messages.
        case queuedAfterDropping(Int)
        /// The bound was hit under the `disconnect` policy; nothing was queued.
        case overflow
    }

    public let maxBytes: Int
    public let maxMessages: Int
    public let policy: SlowConsumerPolicy
    /// Allocated on first use and released when emptied: most connections are idle most of the time.
    private var frames: CircularBuffer<ByteBuffer>?
    public private(set) var byteCount = 0

    public init(maxBytes: Int, maxMessages: Int, policy: SlowConsumerPolicy) {
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.policy = policy
    }

    public var isEmpty: Bool { frames?.isEmpty ?? true }
    public var count: Int { frames?.count ?? 0 }

    public mutating func enqueue(_ frame: ByteBuffer) -> EnqueueResult {
        let size = frame.readableBytes
        guard byteCount + size > maxBytes || count >= maxMessages else {
            append(frame)
            return .queued
        }
        switch policy {
        case .disconnect:
            return .overflow
        case .dropOldest:
            var dropped = 0
            while let oldest = frames?.first, byteCount + size > maxBytes || count >= maxMessages {
                _ = frames?.removeFirst()
                byteCount -= oldest.readableBytes
                dropped += 1
            }
            // A single frame larger than the whole bound is still delivered, alone: dropping the
            // newest message would silently lose it without making room for anything.
            append(frame)
            return .queuedAfterDropping(dropped)
        }
    }

    public mutating func popFirst() -> ByteBuffer? {
        guard let frame = frames?.popFirst() else { return nil }
        byteCount -= frame.readableBytes
        if frames?.isEmpty == true { frames = nil }
        return frame
    }

    /// Frees everything, returning how many messages were discarded.
    @discardableResult
    public mutating func removeAll() -> Int {
        let discarded = count
        frames = nil
        byteCount = 0
        return discarded
    }

    private mutating func append(_ frame: ByteBuffer) {
        if frames == nil { frames = CircularBuffer(initialCapacity: 8) }
        frames?.append(frame)
        byteCount += frame.readableBytes
    }
}
