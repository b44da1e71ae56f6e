import ArgumentParser
import Foundation
import Hummingbird
import Logging
import Metrics
import NIOPosix
import Prometheus
import ServiceLifecycle
import SwitchboardCore
import SwitchboardHTTPAPI
import SwitchboardHummingbird
import SwitchboardNIO
import SwitchboardServer

/// A Hummingbird 2 app with the hub mounted on one of its routes: `GET /hello`, the channel protocol at
/// `/ws` and the server API under `/api/` (with `/metrics`), all on one port. What docs/hummingbird.md
/// shows, as a program the tests run.
@main
struct ExampleCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard-example-hummingbird",
        abstract: "A Hummingbird app serving /hello, the channel protocol at /ws and the server API at /api/.")

    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port to listen on (0: any free port; the ready line says which).") var port = 8080
    @Option(help: "HMAC secret for connection tokens; without one, ?user= names the user (loopback only).")
    var tokenSecret: String?
    @Option(help: "Key the server API asks for (Authorization: apikey KEY); none: no key asked.") var apiKey: String?
    @Option(help: "Event loops (0: one per core, Hummingbird's default group).") var threads = 0
    @Flag(help: "Serve `switchboard echo --broadcast` at /ws instead of the channel layer (for benchmarks).")
    var echoBroadcast = false
    @Flag(help: "Serve the routes on the hub's own listener (direct writes) instead of Hummingbird's server.")
    var hubListener = false

    func run() async throws {
        let demo = tokenSecret == nil
        guard !demo || ["127.0.0.1", "::1", "localhost"].contains(host) else {
            throw ValidationError("demo mode (no --token-secret) serves loopback only: give a token secret")
        }
        let loopback = ["127.0.0.1", "::1", "localhost"].contains(host)
        guard loopback || apiKey != nil else {
            throw ValidationError("the server API would be reachable from other hosts: give --api-key")
        }
        // Logs on standard output, where scripts wait for the ready line ("… listening on http://host:port").
        LoggingSystem.bootstrap { label in StreamLogHandler.standardOutput(label: label) }
        let logger = Logger(label: "switchboard-example")
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        var auth = AuthConfiguration()
        auth.keys = tokenSecret.map { [.hmac(secret: $0)] } ?? []
        let verifier = demo ? nil : try await TokenVerifier.make(auth)
        let channels = ChannelsApplication(
            verifier: verifier, authenticate: demo ? ChannelsApplication.userFromQuery : nil)
        let group = threads > 0 ? MultiThreadedEventLoopGroup(numberOfThreads: threads) : .singleton
        let application: any SwitchboardApplication = echoBroadcast ? EchoApplication(broadcast: true) : channels
        let router = Router()
        router.get("hello") { _, _ in "hello" }
        var api = APIConfiguration()
        api.apiKey = apiKey
        ServerAPIRoutes(application: channels, configuration: api, registry: registry).add(to: router)
        let ready = "switchboard-example-hummingbird listening on http://\(host):"
        let note = demo ? "demo mode: ?user= names the user; give --token-secret for tokens" : nil

        if hubListener {
            var configuration = SwitchboardConfiguration()
            (configuration.host, configuration.port, configuration.path) = (host, port, "/ws")
            let server = WebSocketServer(
                configuration: configuration, application: application, router: router, eventLoopGroup: group)
            let address = try await server.start()
            logger.notice("\(ready)\(address.port ?? port)")
            if let note { logger.notice("\(note)") }
            try await ServiceGroup(services: [server], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
                .run()
            return
        }
        // The hub lives on the app's event loops (Hummingbird's default group is the singleton).
        // The app's address names this server for the hub's same-origin check of browsers' upgrades.
        var hubConfiguration = SwitchboardConfiguration()
        hubConfiguration.host = host
        let hub = Hub(configuration: hubConfiguration, application: application, eventLoopGroup: group)
        let app = Application(
            router: router, server: .switchboard(hub, path: "/ws"),
            configuration: .init(address: .hostname(host, port: port)), services: [hub],
            onServerRunning: { channel in
                logger.notice("\(ready)\(channel.localAddress?.port ?? 0)")
                if let note { logger.notice("\(note)") }
            }, eventLoopGroupProvider: .shared(group), logger: logger)
        try await app.runService()
    }
}
