import NIOConcurrencyHelpers

/// A table by channel name split over lock stripes, so callers working on different channels rarely
/// meet and there is no global lock. Each stripe's lock is held only for the body given to `withChannel`.
final class StripedTable<Value: Sendable>: Sendable {
    // Lock: each stripe guards the entries of the channels that hash to it.
    private let stripes: [NIOLockedValueBox<[String: Value]>]

    init(stripes: Int = 64) {
        self.stripes = (0..<max(stripes, 1)).map { _ in NIOLockedValueBox([:]) }
    }

    /// Runs `body` on the stripe that holds `channel`, under its lock.
    func withChannel<T>(_ channel: String, _ body: (inout [String: Value]) throws -> T) rethrows -> T {
        var hasher = Hasher()
        hasher.combine(channel)
        let stripe = stripes[Int(UInt(bitPattern: hasher.finalize()) % UInt(stripes.count))]
        return try stripe.withLockedValue(body)
    }

    /// Runs `body` on each stripe in turn, each under its own lock (never two at once).
    func forEachStripe(_ body: (inout [String: Value]) -> Void) {
        for stripe in stripes { stripe.withLockedValue(body) }
    }

    /// Entries over every stripe (each read under its lock; not one snapshot).
    var count: Int { stripes.reduce(0) { $0 + $1.withLockedValue(\.count) } }
}
