import NIOCore

/// The data messages waiting for one connection while its socket is not writable, bounded in bytes
/// and in messages. Holds encoded frames, often shared with every other receiver of a broadcast.
/// Control frames never enter it, so they can never be dropped. Messages may belong to a lane
/// (a channel) with its own policy; what a lane loses is remembered as a gap to report.
public struct OutboundQueue: Sendable {
    public enum EnqueueResult: Equatable, Sendable {
        case queued
        /// Queued after dropping this many older messages.
        case queuedAfterDropping(Int)
        /// The bound was hit under the `disconnect` policy; nothing was queued.
        case overflow
    }

    public struct Entry: Sendable {
        public let frame: ByteBuffer
        public let lane: DeliveryLane?
    }

    public let maxBytes: Int
    public let maxMessages: Int
    /// The policy for messages without a lane.
    public let policy: SlowConsumerPolicy
    /// Allocated on first use and released when emptied: most connections are idle most of the time.
    private var entries: CircularBuffer<Entry>?
    public private(set) var byteCount = 0
    /// Messages dropped per lane and not yet reported.
    private var gaps: [DeliveryLane: Int] = [:]

    public init(maxBytes: Int, maxMessages: Int, policy: SlowConsumerPolicy) {
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.policy = policy
    }

    public var isEmpty: Bool { entries?.isEmpty ?? true }
    public var count: Int { entries?.count ?? 0 }
    public var hasGaps: Bool { !gaps.isEmpty }

    public mutating func enqueue(_ frame: ByteBuffer, lane: DeliveryLane? = nil) -> EnqueueResult {
        let size = frame.readableBytes
        var dropped = 0
        if let lane, lane.policy == .latest, let index = entries?.lastIndex(where: { $0.lane == lane }) {
            // The connection lags: the pending message of this lane is superseded by the new one.
            drop(at: index)
            dropped += 1
        }
        guard byteCount + size > maxBytes || count >= maxMessages else {
            append(Entry(frame: frame, lane: lane))
            return dropped > 0 ? .queuedAfterDropping(dropped) : .queued
        }
        if (lane?.policy ?? policy) == .disconnect { return .overflow }
        while let first = entries?.startIndex, !isEmpty, byteCount + size > maxBytes || count >= maxMessages {
            drop(at: first)
            dropped += 1
        }
        // A single frame larger than the whole bound is still delivered, alone: dropping the newest
        // message would lose it without making room for anything.
        append(Entry(frame: frame, lane: lane))
        return .queuedAfterDropping(dropped)
    }

    public mutating func popFirst() -> Entry? {
        guard let entry = entries?.popFirst() else { return nil }
        byteCount -= entry.frame.readableBytes
        if entries?.isEmpty == true { entries = nil }
        return entry
    }

    /// The drops to report for a lane before its next message goes out; clears them.
    public mutating func takeGap(for lane: DeliveryLane) -> Int? {
        gaps.removeValue(forKey: lane)
    }

    /// Every unreported gap; clears them.
    public mutating func takeAllGaps() -> [DeliveryLane: Int] {
        defer { gaps = [:] }
        return gaps
    }

    /// Frees everything, returning how many messages were discarded.
    @discardableResult
    public mutating func removeAll() -> Int {
        let discarded = count
        entries = nil
        byteCount = 0
        gaps = [:]
        return discarded
    }

    private mutating func drop(at index: CircularBuffer<Entry>.Index) {
        guard let entry = entries?.remove(at: index) else { return }
        byteCount -= entry.frame.readableBytes
        if let lane = entry.lane { gaps[lane, default: 0] += 1 }
    }

    private mutating func append(_ entry: Entry) {
        if entries == nil { entries = CircularBuffer(initialCapacity: 8) }
        entries?.append(entry)
        byteCount += entry.frame.readableBytes
    }
}
