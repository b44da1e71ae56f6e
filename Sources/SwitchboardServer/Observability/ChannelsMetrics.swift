import CoreMetrics
import SwitchboardCore

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

    init(factory: any MetricsFactory) {
        authFailures = Dictionary(
            uniqueKeysWithValues: TokenFailure.allCases.map {
                (
                    $0,
                    Counter(
                        label: "switchboard_auth_failures_total", dimensions: [("reason", $0.rawValue)],
                        factory: factory)
                )
            })
        deliveries = Counter(label: "switchboard_deliveries_total", factory: factory)
        publishToDelivery = Timer(label: "switchboard_publish_to_delivery_seconds", factory: factory)
        gaps = Dictionary(
            uniqueKeysWithValues: SlowConsumerPolicy.allCases.map {
                ($0, Counter(label: "switchboard_gaps_total", dimensions: [("policy", $0.rawValue)], factory: factory))
            })
        gapDropped = Dictionary(
            uniqueKeysWithValues: SlowConsumerPolicy.allCases.map {
                (
                    $0,
                    Counter(
                        label: "switchboard_gap_dropped_messages_total", dimensions: [("policy", $0.rawValue)],
                        factory: factory)
                )
            })
    }
}
