/// What happens when a connection's outbound queue is full.
public enum SlowConsumerPolicy: String, CaseIterable, Sendable {
    /// Close with 1008 "slow consumer": the client reconnects and recovers.
    case disconnect
    /// Drop the oldest queued data messages until the new one fits; drops are counted.
    case dropOldest = "drop-oldest"
}
