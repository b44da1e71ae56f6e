import CoreMetrics
import SwitchboardCore
import SwitchboardNIO

/// The channel layer's swift-metrics instruments. Delivery is counted once per event per event loop
/// (not per subscriber), so a fan-out to 10,000 subscribers adds two metric updates per loop.
final class ChannelsMetrics: Sendable {
    let authFailures: [TokenFailure: Counter]
    /// Publications and join/leave events handed to subscribers' queues.
    let deliveries: Counter
    /// From the broker accepting a publication to its push being queued for this loop's subscribers.
    let publishToDelivery: Timer
    /// Gap notices sent, and the messages they reported dropped, by slow-consumer policy.
    let gaps: [SlowConsumerPolicy: Counter]
    let gapDropped: [SlowConsumerPolicy: Counter]
    /// Subscribers recovered after their node may have missed events (a cluster's Redis link broke), by
    /// outcome: recovered, not recovered (told `recovered: false`), failed (closed 1013).
    let resynchronized: [String: Counter]

    init(factory: any MetricsFactory) {
        authFailures = Counter.family("switchboard_auth_failures_total", by: "reason", factory: factory)
        deliveries = Counter(label: "switchboard_deliveries_total", factory: factory)
        publishToDelivery = Timer(label: "switchboard_publish_to_delivery_seconds", factory: factory)
        gaps = Counter.family("switchboard_gaps_total", by: "policy", factory: factory)
        gapDropped = Counter.family("switchboard_gap_dropped_messages_total", by: "policy", factory: factory)
        resynchronized = Dictionary(
            uniqueKeysWithValues: ["recovered", "not_recovered", "failed"].map {
                (
                    $0,
                    Counter(label: "switchboard_resynchronized_total", dimensions: [("outcome", $0)], factory: factory)
                )
            })
    }
}
