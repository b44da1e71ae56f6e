import CoreMetrics
import SwitchboardCore

/// The server's swift-metrics instruments, created once. Hot-path counts (messages, bytes, drops)
/// are summed per event loop and published on each heartbeat tick, so a broadcast to 10,000
/// connections costs no atomic operations per delivery.
public final class SwitchboardMetrics: Sendable {
    /// Why an upgrade was refused: the `reason` label of `switchboard_handshakes_rejected_total`.
    public enum HandshakeRejection: String, CaseIterable, Sendable {
        case badRequest = "bad_request"
        case unsupportedVersion = "unsupported_version"
        case notFound = "not_found"
        case tooManyConnections = "too_many_connections"
        case rejectedByApplication = "rejected_by_application"
        case timeout = "timeout"
        case shuttingDown = "shutting_down"
        case tooManyPending = "too_many_pending"
        case rateLimited = "rate_limited"
        case originNotAllowed = "origin_not_allowed"
        case tooManyFromAddress = "too_many_from_address"
        case addressRateLimited = "address_rate_limited"
        case tooManyForUser = "too_many_for_user"
    }

    let connectionsAccepted: Counter
    let connectionsOpen: Gauge
    /// Open connections per transport (`switchboard_transport_connections_open{transport}`).
    let transportOpen: [Transport: Gauge]
    /// Connections opened per transport since start.
    let transportAccepted: [Transport: Counter]
    let connectionsClosed: [DisconnectReason: Counter]
    let handshakesRejected: [HandshakeRejection: Counter]
    let messagesIn: Counter
    let bytesIn: Counter
    let messagesOut: Counter
    let bytesOut: Counter
    let queueDropped: Counter
    let slowConsumerDisconnects: Counter
    /// accept(2) failures for lack of descriptors or memory; each pauses accepting briefly.
    let acceptPaused: Counter
    /// From TCP accepted to 101 sent: what the upgrade decision (token checks) costs a client.
    let handshakeDuration: Timer
    /// One connection's outbound queue length, sampled when the heartbeat pings it.
    let queueDepthSample: Recorder
    private let factory: any MetricsFactory

    /// Creates every instrument from `factory`; the default is the process-wide `MetricsSystem.factory`, so
    /// bootstrap the metrics backend first.
    public init(factory: any MetricsFactory = MetricsSystem.factory) {
        connectionsAccepted = Counter(label: "switchboard_connections_accepted_total", factory: factory)
        connectionsOpen = Gauge(label: "switchboard_connections_open", factory: factory)
        transportOpen = Gauge.family("switchboard_transport_connections_open", by: "transport", factory: factory)
        transportAccepted = Counter.family(
            "switchboard_transport_connections_total", by: "transport", factory: factory)
        connectionsClosed = Counter.family("switchboard_connections_closed_total", by: "reason", factory: factory)
        handshakesRejected = Counter.family("switchboard_handshakes_rejected_total", by: "reason", factory: factory)
        messagesIn = Counter(label: "switchboard_messages_in_total", factory: factory)
        bytesIn = Counter(label: "switchboard_bytes_in_total", factory: factory)
        messagesOut = Counter(label: "switchboard_messages_out_total", factory: factory)
        bytesOut = Counter(label: "switchboard_bytes_out_total", factory: factory)
        queueDropped = Counter(label: "switchboard_queue_dropped_total", factory: factory)
        slowConsumerDisconnects = Counter(label: "switchboard_slow_consumer_disconnects_total", factory: factory)
        acceptPaused = Counter(label: "switchboard_accept_paused_total", factory: factory)
        handshakeDuration = Timer(label: "switchboard_handshake_duration_seconds", factory: factory)
        queueDepthSample = Recorder(label: "switchboard_connection_queue_depth_messages", factory: factory)
        self.factory = factory
    }

    /// Messages waiting in connection queues on one event loop, published on each heartbeat tick.
    func queueDepthGauge(loop: Int) -> Gauge {
        Gauge(label: "switchboard_queue_depth_messages", dimensions: [("loop", "\(loop)")], factory: factory)
    }

    func rejected(_ reason: HandshakeRejection) {
        handshakesRejected[reason]?.increment()
    }

    func closed(_ reason: DisconnectReason) {
        connectionsClosed[reason]?.increment()
        if reason == .slowConsumer { slowConsumerDisconnects.increment() }
    }
}

extension Counter {
    /// One counter per value of a label whose values are an enumeration's cases (bounded, as Prometheus
    /// labels must be).
    public static func family<Key: CaseIterable & RawRepresentable & Hashable>(
        _ label: String, by dimension: String, factory: any MetricsFactory
    ) -> [Key: Counter] where Key.RawValue == String {
        metricFamily(by: dimension) { Counter(label: label, dimensions: $0, factory: factory) }
    }
}

extension Gauge {
    /// One gauge per value of a label whose values are an enumeration's cases, as `Counter.family`.
    public static func family<Key: CaseIterable & RawRepresentable & Hashable>(
        _ label: String, by dimension: String, factory: any MetricsFactory
    ) -> [Key: Gauge] where Key.RawValue == String {
        metricFamily(by: dimension) { Gauge(label: label, dimensions: $0, factory: factory) }
    }
}

/// One metric per case of `Key`, made with the dimension naming that case.
private func metricFamily<Key: CaseIterable & RawRepresentable & Hashable, Metric>(
    by dimension: String, _ make: ([(String, String)]) -> Metric
) -> [Key: Metric] where Key.RawValue == String {
    Dictionary(uniqueKeysWithValues: Key.allCases.map { ($0, make([(dimension, $0.rawValue)])) })
}

/// Counts one event loop gathers between heartbeat ticks. Plain integers: only that loop touches them.
struct LoopCounters {
    var messagesIn = 0
    var bytesIn = 0
    var messagesOut = 0
    var bytesOut = 0
    var queueDropped = 0

    mutating func publish(to metrics: SwitchboardMetrics, totals: inout LoopCounters) {
        if messagesIn > 0 { metrics.messagesIn.increment(by: messagesIn) }
        if bytesIn > 0 { metrics.bytesIn.increment(by: bytesIn) }
        if messagesOut > 0 { metrics.messagesOut.increment(by: messagesOut) }
        if bytesOut > 0 { metrics.bytesOut.increment(by: bytesOut) }
        if queueDropped > 0 { metrics.queueDropped.increment(by: queueDropped) }
        totals.messagesIn += messagesIn
        totals.bytesIn += bytesIn
        totals.messagesOut += messagesOut
        totals.bytesOut += bytesOut
        totals.queueDropped += queueDropped
        self = LoopCounters()
    }
}
