import NIOCore

/// How a queued message may be treated while its connection lags.
public enum OutboundClass: Hashable, Sendable {
    /// Never dropped: replies, errors, presence events, notices. Counts toward the bound; when the
    /// bound is hit and nothing droppable is left to make room, the connection is closed as a slow
    /// consumer (1008) rather than silently losing one.
    case reliable
    /// Follows the connection's default policy (`SwitchboardConfiguration.slowConsumerPolicy`).
    case standard
    /// A channel's message, with the channel's own policy.
    case lane(DeliveryLane)

    var lane: DeliveryLane? {
        if case .lane(let lane) = self { return lane }
        return nil
    }
}

/// The data messages waiting for one connection while its socket is not writable, bounded in bytes
/// and in messages. Holds encoded frames, often shared with every other receiver of a broadcast.
/// Control frames never enter it. Only messages of a dropping policy (`dropOldest`, `latest`) are
/// ever dropped, and only to make room or to be superseded; what a lane loses is remembered as a gap
/// to report. A dropped message leaves a hole in place (so superseding the pending message of a
/// `latest` lane is O(1)); holes are compacted away once they outnumber the live messages.
package struct OutboundQueue: Sendable {
    package enum EnqueueResult: Equatable, Sendable {
        case queued
        /// Queued after dropping this many older messages.
        case queuedAfterDropping(Int)
        /// The bound was hit and the message may not be dropped, nor room made for it: the connection
        /// must be closed as a slow consumer. Nothing was queued.
        case overflow
    }

    package struct Entry: Sendable {
        package let frame: ByteBuffer
        package let lane: DeliveryLane?
    }

    private struct Slot: Sendable {
        /// nil once dropped.
        var frame: ByteBuffer?
        let kind: OutboundClass
    }

    // First, beside the connection's other hot fields: what every write checks (empty, no gaps).
    package private(set) var count = 0
    /// Messages dropped per lane and not yet reported.
    private var gaps: [DeliveryLane: Int] = [:]
    package let maxBytes: Int
    package let maxMessages: Int
    /// The policy for `.standard` messages.
    package let policy: SlowConsumerPolicy
    /// Allocated on first use and released when emptied: most connections are idle most of the time.
    private var slots: CircularBuffer<Slot>?
    /// The sequence number of the first slot; slot sequence numbers are consecutive.
    private var headSequence = 0
    /// No droppable message lives below this sequence number: the search for the oldest droppable
    /// message starts here, so a queue led by reliable messages is not rescanned on every overflow.
    private var dropSearchStart = 0
    /// The pending message of each `latest` lane, by sequence number.
    private var pendingLatest: [DeliveryLane: Int] = [:]
    package private(set) var byteCount = 0

    package init(maxBytes: Int, maxMessages: Int, policy: SlowConsumerPolicy) {
        self.maxBytes = maxBytes
        self.maxMessages = maxMessages
        self.policy = policy
    }

    package var isEmpty: Bool { count == 0 }
    package var hasGaps: Bool { !gaps.isEmpty }

    private func droppable(_ kind: OutboundClass) -> Bool {
        switch kind {
        case .reliable: return false
        case .standard: return policy != .disconnect
        case .lane(let lane): return lane.policy != .disconnect
        }
    }

    private func full(adding size: Int) -> Bool { byteCount + size > maxBytes || count >= maxMessages }

    package mutating func enqueue(_ frame: ByteBuffer, as kind: OutboundClass = .standard) -> EnqueueResult {
        let size = frame.readableBytes
        var dropped = 0
        if let lane = kind.lane, lane.policy == .latest, let sequence = pendingLatest[lane] {
            // The connection lags: the pending message of this lane is superseded by the new one.
            drop(sequence: sequence)
            dropped += 1
        }
        if full(adding: size), !isEmpty {
            // A `disconnect` message closes the connection rather than take another's place.
            if kind != .reliable, !droppable(kind) { return .overflow }
            while full(adding: size), !isEmpty, let sequence = oldestDroppable() {
                drop(sequence: sequence)
                dropped += 1
            }
            // Only messages that may not be dropped are left, and they fill the bound.
            if full(adding: size), !isEmpty { return .overflow }
        }
        // A single frame larger than the whole bound is still delivered, alone: dropping the newest
        // message would lose it without making room for anything.
        append(Slot(frame: frame, kind: kind))
        compactIfSparse()
        return dropped > 0 ? .queuedAfterDropping(dropped) : .queued
    }

    package mutating func popFirst() -> Entry? {
        while let slot = slots?.popFirst() {
            let sequence = headSequence
            headSequence += 1
            guard let frame = slot.frame else { continue }
            count -= 1
            byteCount -= frame.readableBytes
            if let lane = slot.kind.lane, lane.policy == .latest, pendingLatest[lane] == sequence {
                pendingLatest[lane] = nil
            }
            if count == 0 { releaseSlots() }
            return Entry(frame: frame, lane: slot.kind.lane)
        }
        return nil
    }

    /// The drops to report for a lane before its next message goes out; clears them.
    package mutating func takeGap(for lane: DeliveryLane) -> Int? {
        gaps.removeValue(forKey: lane)
    }

    /// Every unreported gap; clears them.
    package mutating func takeAllGaps() -> [DeliveryLane: Int] {
        defer { gaps = [:] }
        return gaps
    }

    /// Frees everything, returning how many messages were discarded.
    @discardableResult
    package mutating func removeAll() -> Int {
        let discarded = count
        releaseSlots()
        gaps = [:]
        return discarded
    }

    private mutating func releaseSlots() {
        headSequence += slots?.count ?? 0
        slots = nil
        dropSearchStart = headSequence
        pendingLatest = [:]
        count = 0
        byteCount = 0
    }

    private func index(of sequence: Int) -> CircularBuffer<Slot>.Index? {
        guard let slots, sequence >= headSequence, sequence - headSequence < slots.count else { return nil }
        return slots.index(slots.startIndex, offsetBy: sequence - headSequence)
    }

    private mutating func oldestDroppable() -> Int? {
        guard let slots else { return nil }
        var sequence = max(dropSearchStart, headSequence)
        var index = slots.index(slots.startIndex, offsetBy: sequence - headSequence)
        while index != slots.endIndex {
            let slot = slots[index]
            if slot.frame != nil, droppable(slot.kind) {
                dropSearchStart = sequence
                return sequence
            }
            sequence += 1
            index = slots.index(after: index)
        }
        dropSearchStart = sequence
        return nil
    }

    private mutating func drop(sequence: Int) {
        guard let index = index(of: sequence), let slot = slots?[index], let frame = slot.frame else { return }
        slots?[index].frame = nil
        count -= 1
        byteCount -= frame.readableBytes
        if let lane = slot.kind.lane {
            gaps[lane, default: 0] += 1
            if lane.policy == .latest, pendingLatest[lane] == sequence { pendingLatest[lane] = nil }
        }
    }

    private mutating func append(_ slot: Slot) {
        if slots == nil { slots = CircularBuffer(initialCapacity: 8) }
        let sequence = headSequence + (slots?.count ?? 0)
        slots?.append(slot)
        count += 1
        byteCount += slot.frame?.readableBytes ?? 0
        if let lane = slot.kind.lane, lane.policy == .latest { pendingLatest[lane] = sequence }
    }

    /// Removes the holes once they outnumber the live messages: amortised O(1) per drop, and the
    /// memory held stays within twice the bound.
    private mutating func compactIfSparse() {
        guard let old = slots, old.count - count > max(count, 16) else { return }
        var compacted = CircularBuffer<Slot>(initialCapacity: count)
        pendingLatest = [:]
        for slot in old where slot.frame != nil {
            if let lane = slot.kind.lane, lane.policy == .latest {
                pendingLatest[lane] = headSequence + compacted.count
            }
            compacted.append(slot)
        }
        slots = compacted
        dropSearchStart = headSequence
    }
}
