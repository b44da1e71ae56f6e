/// What happens when a connection's outbound queue is full.
public enum SlowConsumerPolicy: String, CaseIterable, Sendable {
    /// Close with 1008 "slow consumer": the client reconnects and recovers.
    case disconnect
    /// Drop the oldest queued data messages until the new one fits; drops are counted.
    case dropOldest = "drop-oldest"
    /// Keep only the newest pending message of each lane (a channel): right for positions, prices,
    /// cursors, where an old value is worthless once a newer one exists. Applies per lane as soon as
    /// the connection lags, not only when the queue is full; when full, the oldest go, as `dropOldest`.
    case latest
}

/// Where a data message belongs for slow-consumer handling: typically one channel, with that
/// channel's policy. Drops are counted per lane so the client can be told exactly what it missed.
public struct DeliveryLane: Hashable, Sendable {
    /// Identifies the lane, typically the channel name; drop counts and gap notices are kept by lane.
    public let name: String
    /// How this lane's messages are treated when the connection falls behind.
    public let policy: SlowConsumerPolicy

    /// A lane named `name` (usually a channel) whose messages follow `policy`.
    public init(name: String, policy: SlowConsumerPolicy) {
        self.name = name
        self.policy = policy
    }
}
