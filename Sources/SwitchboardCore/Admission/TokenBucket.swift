/// `rate` tokens per second up to `burst`: for publishes per connection and upgrades per event loop.
/// Time is monotonic nanoseconds, passed in so that the bucket is a plain value, testable without clocks.
package struct TokenBucket: Sendable {
    package let rate: Double
    package let burst: Double
    private var tokens: Double
    private var last: Int64

    package init(rate: Double, burst: Double, now: Int64) {
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now
    }

    /// Takes `amount` unless the bucket is more than `debt` below zero: a message larger than the burst
    /// (arriving over several reads) passes, then the bucket has to refill. What "sustained" means for
    /// inbound byte and message rates.
    package mutating func takeAllowingDebt(_ amount: Double, upTo debt: Double, now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(now - last, 0)) / 1e9 * rate)
        last = max(last, now)
        guard tokens >= -debt else { return false }
        tokens -= amount
        return true
    }

    /// Whether the bucket has refilled to its burst by `now` (nothing left to remember).
    /// Whether a token could be taken at `now` (nothing is taken).
    package func hasToken(now: Int64) -> Bool {
        tokens + Double(max(now - last, 0)) / 1e9 * rate >= 1
    }

    package func isFull(now: Int64) -> Bool {
        tokens + Double(max(now - last, 0)) / 1e9 * rate >= burst
    }

    package mutating func take(now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(now - last, 0)) / 1e9 * rate)
        last = max(last, now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
