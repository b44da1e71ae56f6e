import NIOCore
import SwitchboardCore

/// One channel's stream in the in-process broker: offsets, epoch, the history ring, and whether this
/// node is subscribed. Mutated in place under its stripe's lock (never copied out and back: that would
/// copy the whole history ring on every publish).
struct ChannelState {
    let epoch: String
    var offset = 0
    var history = CircularBuffer<Publication>()
    /// What `history` takes, counted also in the node's `HistoryBudget`.
    var historyBytes = 0
    /// The namespace's history TTL, from the last publication: what a sweep of untouched channels uses.
    var historyTTL: Int64 = 0
    /// This node listens: publications are handed to the delivery handler.
    var subscribed = false
    /// A namespace with history published here: the offset must be kept even once history expires.
    var keepsOffset = false

    init(epoch: String) {
        self.epoch = epoch
    }

    /// Nothing worth keeping: the channel can be forgotten and costs nothing. A channel in a history
    /// namespace that has published stays (its offset and an empty ring, a few dozen bytes) even after
    /// its history expires: forgetting it would restart its offsets within the same epoch, and a client
    /// holding an old offset could then be told it recovered when it did not. Channels without history
    /// are forgotten; they never claim recovery.
    var isIdle: Bool { !subscribed && history.isEmpty && !keepsOffset && idempotencyKeys.isEmpty }

    /// Idempotency keys of recent publishes with their offsets and expiry, and the keys in the order they
    /// were made (pruned from the front as they expire).
    private var idempotencyKeys: [String: (offset: Int, expires: Int64)] = [:]
    private var idempotencyOrder = CircularBuffer<(key: String, expires: Int64)>()
    /// Keys one channel remembers at most: past it the oldest is forgotten early (a repeat of it then
    /// publishes again), so a publisher inventing keys cannot grow a channel without bound.
    static let maxIdempotencyKeys = 100_000

    /// The offset of the publish made with `key` within its window, if any.
    mutating func repeated(_ key: String, now: Int64) -> Int? {
        expireKeys(now: now)
        guard let entry = idempotencyKeys[key], entry.expires > now else { return nil }
        return entry.offset
    }

    /// Forgets the keys whose window has passed (oldest first: they were made in order).
    mutating func expireKeys(now: Int64) {
        while let first = idempotencyOrder.first, first.expires <= now {
            idempotencyOrder.removeFirst()
            if idempotencyKeys[first.key]?.expires == first.expires { idempotencyKeys[first.key] = nil }
        }
    }

    /// Remembers that the publish made with `key` got `offset`, until `expires`.
    mutating func remember(_ key: String, offset: Int, until expires: Int64) {
        if idempotencyOrder.count >= Self.maxIdempotencyKeys, let oldest = idempotencyOrder.popFirst(),
            idempotencyKeys[oldest.key]?.expires == oldest.expires
        {
            idempotencyKeys[oldest.key] = nil
        }
        idempotencyKeys[key] = (offset, expires)
        idempotencyOrder.append((key, expires))
    }

    /// Keeps `publication` within the namespace's count and byte bounds and the node's `budget`: the
    /// channel's oldest go first; one that does not fit even alone is not kept (recovery past it then
    /// says `recovered: false`, from the offsets).
    mutating func append(
        _ publication: Publication, channel: String, options: NamespaceOptions, budget: HistoryBudget
    ) {
        guard options.historySize > 0 else { return }
        keepsOffset = true
        historyTTL = options.historyTTL.nanoseconds
        let size = publication.historyBytes
        let byteBound = options.historyMaxBytes > 0 ? options.historyMaxBytes : Int.max
        var evicted = 0
        while let first = history.first,
            history.count >= options.historySize || historyBytes + size > byteBound || !budget.fits(size)
        {
            if history.count < options.historySize { evicted += 1 }
            removeFirst(first, budget: budget)
        }
        guard size <= byteBound, budget.fits(size) else {
            budget.evicted(evicted + 1, channel: channel, bound: size > byteBound ? "channel" : "node")
            return
        }
        budget.evicted(evicted, channel: channel, bound: historyBytes + size > byteBound ? "channel" : "node")
        history.append(publication)
        historyBytes += size
        budget.add(size)
    }

    mutating func expire(now: Int64, options: NamespaceOptions, budget: HistoryBudget) {
        historyTTL = options.historyTTL.nanoseconds
        expire(now: now, budget: budget)
    }

    /// With the TTL of the channel's last publication: for channels nobody touches any more.
    mutating func expire(now: Int64, budget: HistoryBudget) {
        let ttl = historyTTL
        guard ttl > 0 else { return }
        while let first = history.first, now - first.time > ttl { removeFirst(first, budget: budget) }
    }

    mutating func removeAll(budget: HistoryBudget) {
        history.removeAll()
        budget.remove(historyBytes)
        historyBytes = 0
    }

    private mutating func removeFirst(_ first: Publication, budget: HistoryBudget) {
        history.removeFirst()
        historyBytes -= first.historyBytes
        budget.remove(first.historyBytes)
    }

    /// Publications after `offset`, oldest first, at most `limit`; `complete` when none after it
    /// is missing from history.
    func publications(after offset: Int, limit: Int) -> (publications: [Publication], complete: Bool) {
        let oldest = history.first?.offset ?? self.offset + 1
        let complete = offset >= oldest - 1 && offset <= self.offset
        let missed = history.filter { $0.offset > offset }
        // A publication made without history (`skip_history`) leaves a hole: what lies past it is no recovery.
        let contiguous =
            missed.first.map { $0.offset == offset + 1 && missed.count == self.offset - offset }
            ?? (offset == self.offset)
        return (Array(missed.prefix(limit)), complete && contiguous && missed.count <= limit)
    }
}
