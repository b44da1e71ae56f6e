import NIOCore

/// Delays between reconnection attempts: exponential with full jitter (a random delay up to the bound),
/// so nodes that lost the same Redis at the same moment do not come back in step.
public struct Backoff: Sendable {
    public var initial: TimeAmount
    public var maximum: TimeAmount

    public init(initial: TimeAmount = .milliseconds(100), maximum: TimeAmount = .seconds(5)) {
        self.initial = initial
        self.maximum = maximum
    }

    /// The delay before attempt `failures + 1`, after `failures` consecutive failures (at least one).
    public func delay(afterFailures failures: Int) -> TimeAmount {
        let doublings = min(max(failures - 1, 0), 20)
        let bound = min(initial.nanoseconds << doublings, maximum.nanoseconds)
        return .nanoseconds(Int64.random(in: bound / 2...max(bound, 1)))
    }
}
