import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Prometheus
import ServiceLifecycle
import SwitchboardCore
import SwitchboardNIO
import SwitchboardServer

/// The HTTP server API for the application's backend (docs/API.md, docs/openapi.yaml), `/metrics`,
/// `/health` and `/ready`, on their own listener. Hummingbird does the HTTP: routing, body limits and
/// middleware are its job, not ours.
public final class APIServer: Service, Sendable {
    /// The server version the `info` endpoint reports.
    public static let version = "0.7.0"

    private let configuration: APIConfiguration
    private let application: ChannelsApplication
    private let ready: @Sendable () -> Bool
    private let unreachable: @Sendable () async -> String?
    private let registry: PrometheusCollectorRegistry?
    private let logger: Logger
    private let started = Date()
    private let factory: any MetricsFactory
    // Lock: guards the bound address, set once the listener runs.
    private let bound = NIOLockedValueBox<SocketAddress?>(nil)
    private let (boundStream, boundContinuation) = AsyncStream<SocketAddress?>.makeStream()

    /// - Parameters:
    ///   - configuration: the listener (host, port, key, limits).
    ///   - application: the channel layer whose operations the API serves.
    ///   - logger: where the API logs refusals and failures.
    ///   - ready: whether the WebSocket server takes connections (false while starting or draining).
    ///   - unreachable: what the node needs and cannot reach (a Redis pub/sub link that is down), nil when
    ///     nothing: `/ready` is 503 with that reason meanwhile, so a load balancer sends clients elsewhere.
    ///   - registry: what `/metrics` shows; nil: no `/metrics`.
    ///   - metricsFactory: where the API's own metrics go (requests by endpoint and status; node gauges).
    /// - Throws: `APIConfigurationError` for what `APIConfiguration.validate()` refuses.
    public init(
        configuration: APIConfiguration, application: ChannelsApplication, ready: @escaping @Sendable () -> Bool,
        unreachable: @escaping @Sendable () async -> String? = { nil },
        registry: PrometheusCollectorRegistry? = nil, metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger = Logger(label: "switchboard.api")
    ) throws {
        try configuration.validate()
        self.configuration = configuration
        self.application = application
        self.ready = ready
        self.unreachable = unreachable
        self.registry = registry
        self.logger = logger
        self.factory = metricsFactory
    }

    /// Waits until the listener is bound and returns its address (nil if it failed to start).
    public func boundAddress() async -> SocketAddress? {
        if let address = bound.withLockedValue({ $0 }) { return address }
        for await address in boundStream { return address }
        return bound.withLockedValue { $0 }
    }

    /// Binds and serves until the surrounding service group shuts it down (or the task is cancelled);
    /// throws if the listener cannot start. `boundAddress()` learns the port.
    public func run() async throws {
        let limits = APIConnectionGuard.Limits(
            headerTimeout: configuration.headerTimeout, bodyTimeout: configuration.bodyTimeout,
            maxBodySize: configuration.maxBodySize)
        let logger = self.logger
        let app = Application(
            router: makeRouter(),
            server: .http1(
                configuration: .init(additionalChannelHandlers: [APIConnectionGuard(limits: limits, logger: logger)])),
            configuration: .init(
                address: .hostname(configuration.host, port: configuration.port), serverName: "switchboard",
                availableConnectionsDelegate: .maximum(configuration.maxConnections, logger: logger)),
            onServerRunning: { [bound, boundContinuation] channel in
                // At the process's descriptor limit, pause accepting rather than spin (as the hub's listener).
                // Made and added on the channel's loop: the handler is not Sendable.
                try? await channel.eventLoop.submit {
                    try channel.pipeline.syncOperations.addHandler(
                        AcceptPauseHandler(pause: .milliseconds(100), metrics: nil, logger: logger), position: .first)
                }.get()
                bound.withLockedValue { $0 = channel.localAddress }
                boundContinuation.yield(channel.localAddress)
                boundContinuation.finish()
            },
            logger: logger)
        defer { boundContinuation.finish() }
        try await app.run()
    }

    static let endpoints = [
        "publish", "broadcast", "send", "subscribe", "unsubscribe", "disconnect", "refresh", "presence",
        "presence_stats", "history", "history_remove", "channels", "info",
    ]

    private func makeRouter() -> Router<APIRequestContext> {
        let router = Router(context: APIRequestContext.self)
        let paths = Set(Self.endpoints.map { "/api/\($0)" } + ["/health", "/ready", "/metrics"])
        router.add(middleware: APIErrorMiddleware(endpoints: paths, logger: logger, factory: factory))
        router.get("health") { _, _ in APIResponse.json("{\"status\":\"ok\"}") }
        router.get("ready") { [ready, unreachable] _, _ in
            guard ready() else {
                return APIResponse.json(
                    "{\"ready\":false,\"reason\":\"not accepting connections (starting or draining)\"}",
                    status: .serviceUnavailable)
            }
            if let reason = await unreachable() {
                return APIResponse.json(
                    "{\"ready\":false,\"reason\":\(ServerMessage.quote(reason))}", status: .serviceUnavailable)
            }
            return APIResponse.json("{\"ready\":true}")
        }
        routes.add(to: router, countingErrors: false)
        return router
    }

    private var routes: ServerAPIRoutes {
        ServerAPIRoutes(
            application: application, configuration: configuration, registry: registry, metricsFactory: factory,
            logger: logger, started: started)
    }
}

/// Node-wide counts published as gauges when `/metrics` is scraped (cheaper than tracking them live).
final class NodeGauges: Sendable {
    let subscriptions: CoreMetrics.Gauge
    let channels: CoreMetrics.Gauge
    let users: CoreMetrics.Gauge

    init(factory: any MetricsFactory) {
        subscriptions = CoreMetrics.Gauge(label: "switchboard_subscriptions", factory: factory)
        channels = CoreMetrics.Gauge(label: "switchboard_channels", factory: factory)
        users = CoreMetrics.Gauge(label: "switchboard_users", factory: factory)
    }

    func record(_ statistics: ChannelsApplication.NodeStatistics) {
        subscriptions.record(statistics.subscriptions)
        channels.record(statistics.channels)
        users.record(statistics.users)
    }
}

/// A request's context with the client's address (for throttling wrong API keys).
struct APIRequestContext: RequestContext, RemoteAddressRequestContext {
    var coreContext: CoreRequestContextStorage
    let remoteAddress: SocketAddress?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
}
