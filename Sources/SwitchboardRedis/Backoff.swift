import NIOCore

/// Delays between reconnection attempts: exponential with jitter (a random delay between half the bound
/// and the bound), so nodes that lost the same Redis at the same moment do not come back in step.
public struct Backoff: Sendable {
    /// The bound after the first failure, doubled after each further one. Default 100 ms.
    public var initial: TimeAmount
    /// The bound never grows past this. Default 5 s.
    public var maximum: TimeAmount

    /// Defaults: from 100 ms up to 5 s.
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
