import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// Wrong API keys by client address: a burst of them, then one a second. Past that the address is
/// answered 429 whatever key it sends, until its bucket refills: guessing a key at thousands of tries a
/// second on one connection becomes one a second. Each address is logged at most once a minute.
final class FailedKeyAttempts: Sendable {
    private struct Entry {
        var bucket: TokenBucket
        var lastLogged: Int64 = .min
    }

    private let burst: Double
    // Lock: guards the table of addresses with recent failures.
    private let table = NIOLockedValueBox<[String: Entry]>([:])
    private static let logInterval: Int64 = 60_000_000_000

    init(burst: Int) { self.burst = Double(max(burst, 1)) }

    /// Whether `address` must wait before it may try a key again.
    func isThrottled(_ address: String, now: Int64) -> Bool {
        table.withLockedValue { $0[address].map { !$0.bucket.hasToken(now: now) } ?? false }
    }

    /// Counts a wrong key; returns whether to log it (the first of the minute for this address).
    func failed(_ address: String, now: Int64) -> Bool {
        table.withLockedValue { table in
            if table.count > 4096 {
                table = table.filter { !$0.value.bucket.isFull(now: now) }
                // Still full (a spread of addresses): forget them all rather than grow or scan on every failure.
                if table.count > 4096 { table.removeAll() }
            }
            var entry = table[address] ?? Entry(bucket: TokenBucket(rate: 1, burst: burst, now: now))
            _ = entry.bucket.take(now: now)
            let log = entry.lastLogged == .min || now - entry.lastLogged >= Self.logInterval
            if log { entry.lastLogged = now }
            table[address] = entry
            return log
        }
    }
}
