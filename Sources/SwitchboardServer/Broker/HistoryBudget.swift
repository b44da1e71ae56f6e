import Atomics
import CoreMetrics
import Logging
import NIOCore

/// The bytes all of a node's in-process history may take. Without it, history is bounded only by
/// rate × message size × TTL × connections: one client publishing large messages to fresh channels grows
/// the process by gigabytes. Every channel's history counts here as it grows and shrinks; a publication
/// that would pass the bound first pushes out its own channel's oldest, and is not kept at all if that is
/// not enough (its channel's recovery then says `recovered: false`). Counted and logged when it evicts.
final class HistoryBudget: Sendable {
    let maxBytes: Int
    private let used = ManagedAtomic(0)
    private let evicted: CoreMetrics.Counter
    private let gauge: CoreMetrics.Gauge
    private let logger: Logger
    private let lastLogged = ManagedAtomic<Int64>(.min)

    init(maxBytes: Int, logger: Logger) {
        self.maxBytes = maxBytes
        self.logger = logger
        self.evicted = CoreMetrics.Counter(
            label: "switchboard_history_evicted_total", dimensions: [("reason", "bytes")])
        self.gauge = CoreMetrics.Gauge(label: "switchboard_history_bytes")
    }

    var usedBytes: Int { used.load(ordering: .relaxed) }

    /// Whether `bytes` more fit under the node's bound.
    func fits(_ bytes: Int) -> Bool { used.load(ordering: .relaxed) + bytes <= maxBytes }

    func add(_ bytes: Int) {
        gauge.record(used.wrappingIncrementThenLoad(by: bytes, ordering: .relaxed))
    }

    func remove(_ bytes: Int) {
        guard bytes > 0 else { return }
        gauge.record(used.wrappingDecrementThenLoad(by: bytes, ordering: .relaxed))
    }

    /// Publications pushed out (or not kept) to stay within a byte bound: counted, logged every 10 s at most.
    func evicted(_ count: Int, channel: String, bound: String) {
        guard count > 0 else { return }
        evicted.increment(by: count)
        let now = Int64(NIODeadline.now().uptimeNanoseconds)
        let last = lastLogged.load(ordering: .relaxed)
        guard last == .min || now - last >= 10_000_000_000,
            lastLogged.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        logger.warning(
            "history evicted to stay within its byte bound",
            metadata: ["channel": "\(channel)", "bound": "\(bound)", "publications": "\(count)"])
    }
}

extension Publication {
    /// What one publication costs in history: its text plus the entry's fixed part.
    var historyBytes: Int { data.utf8.count + (user?.utf8.count ?? 0) + 64 }
}
