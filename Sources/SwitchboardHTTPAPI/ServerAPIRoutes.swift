import CoreMetrics
import Foundation
import Hummingbird
import Logging
import NIOPosix
import Prometheus
import SwitchboardServer

/// The server API's routes (`/api/<endpoint>`, docs/API.md) and `/metrics`, to add to any Hummingbird
/// router: what `APIServer` serves on its own listener, and what an app that mounts the hub serves on its
/// own port beside its routes.
public struct ServerAPIRoutes: Sendable {
    private let application: ChannelsApplication
    private let configuration: APIConfiguration
    private let registry: PrometheusCollectorRegistry?
    private let factory: any MetricsFactory
    private let logger: Logger
    private let started: Date
    private let gauges: NodeGauges

    /// - Parameters:
    ///   - application: the channel layer whose operations the routes serve.
    ///   - logger: where wrong keys and failures are logged.
    ///   - configuration: the API key (nil: no key asked, for loopback-only use), body limit, node name; its
    ///     listener settings are not used.
    ///   - registry: what `/metrics` shows; nil: no `/metrics` route.
    ///   - metricsFactory: where the API's own metrics go (requests by endpoint and status, node gauges).
    public init(
        application: ChannelsApplication, configuration: APIConfiguration = APIConfiguration(),
        registry: PrometheusCollectorRegistry? = nil, metricsFactory: any MetricsFactory = MetricsSystem.factory,
        logger: Logger = Logger(label: "switchboard.api")
    ) {
        self.init(
            application: application, configuration: configuration, registry: registry,
            metricsFactory: metricsFactory, logger: logger, started: Date())
    }

    init(
        application: ChannelsApplication, configuration: APIConfiguration, registry: PrometheusCollectorRegistry?,
        metricsFactory: any MetricsFactory, logger: Logger, started: Date
    ) {
        self.application = application
        self.configuration = configuration
        self.registry = registry
        self.factory = metricsFactory
        self.logger = logger
        self.started = started
        self.gauges = NodeGauges(factory: metricsFactory)
    }

    /// Adds `POST /api/<endpoint>` for every endpoint (with the API key check, wrong keys throttled per
    /// client address when the context is a `RemoteAddressRequestContext`, and errors as the protocol's
    /// error objects) and `GET /metrics` when there is a registry.
    public func add<Context: RequestContext>(to router: Router<Context>) {
        add(to: router, countingErrors: true)
    }

    /// `countingErrors`: the API's error middleware on the routes added here; `APIServer` has it on its
    /// whole router instead.
    func add<Context: RequestContext>(to router: Router<Context>, countingErrors: Bool) {
        if let registry {
            let metrics = countingErrors ? router.group("metrics").add(middleware: errors()) : router.group("metrics")
            metrics.get { [application, gauges] _, _ in
                let statistics = try await application.statistics(on: MultiThreadedEventLoopGroup.singleton.next())
                    .get()
                gauges.record(statistics)
                var output: [UInt8] = []
                output.reserveCapacity(16 * 1024)
                registry.emit(into: &output)
                return Response(
                    status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                    body: .init(byteBuffer: ByteBuffer(bytes: output)))
            }
        }
        var api = router.group("api")
        if countingErrors { api = api.add(middleware: errors()) }
        api = api.add(
            middleware: APIKeyMiddleware(
                key: configuration.apiKey.map { Array($0.utf8) },
                attempts: FailedKeyAttempts(burst: configuration.failedKeyBurst), logger: logger))
        let routes = APIRoutes(
            application: application, limit: configuration.maxBodySize, nodeName: configuration.nodeName,
            started: started)
        for endpoint in APIServer.endpoints {
            api.post(RouterPath(stringLiteral: endpoint)) { request, _ in
                try await routes.handle(endpoint, try await APIRequest.read(request, limit: routes.limit))
            }
        }
    }

    private func errors<Context: RequestContext>() -> APIErrorMiddleware<Context> {
        APIErrorMiddleware(
            endpoints: Set(APIServer.endpoints.map { "/api/\($0)" } + ["/metrics"]), logger: logger, factory: factory)
    }
}
