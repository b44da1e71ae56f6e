import NIOCore
import SwitchboardCore

/// One channel's stream in the in-process broker: offsets, epoch, the history ring, and whether this
/// node is subscribed. Mutated in place under its stripe's lock (never copied out and back: that would
/// copy the whole history ring on every publish).
struct ChannelState {
    let epoch: String
    var offset = 0
    var history = CircularBuffer<Publication>()
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
    var isIdle: Bool { !subscribed && history.isEmpty && !keepsOffset }

    mutating func append(_ publication: Publication, options: NamespaceOptions) {
        guard options.historySize > 0 else { return }
        keepsOffset = true
        history.append(publication)
        while history.count > options.historySize { history.removeFirst() }
    }

    mutating func expire(now: Int64, options: NamespaceOptions) {
        let ttl = options.historyTTL.nanoseconds
        guard ttl > 0 else { return }
        while let first = history.first, now - first.time > ttl { history.removeFirst() }
    }

    /// Publications after `offset`, oldest first, at most `limit`; `complete` when none after it
    /// is missing from history.
    func publications(after offset: Int, limit: Int) -> (publications: [Publication], complete: Bool) {
        let oldest = history.first?.offset ?? self.offset + 1
        let complete = offset >= oldest - 1 && offset <= self.offset
        let missed = history.filter { $0.offset > offset }
        return (Array(missed.prefix(limit)), complete && missed.count <= limit)
    }
}
