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

    /// Takes `amount` while the bucket is not in debt: one large message is allowed, then the bucket has to
    /// refill past zero before the next. What "sustained" means for inbound byte and message rates.
    package mutating func takeAllowingDebt(_ amount: Double, now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(now - last, 0)) / 1e9 * rate)
        last = max(last, now)
        guard tokens >= 0 else { return false }
        tokens -= amount
        return true
    }

    package mutating func take(now: Int64) -> Bool {
        tokens = min(burst, tokens + Double(max(now - last, 0)) / 1e9 * rate)
        last = max(last, now)
        guard tokens >= 1 else { return false }
        tokens -= 1
        return true
    }
}
