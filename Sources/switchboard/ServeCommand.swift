import ArgumentParser
import Foundation
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwitchboardCluster
import SwitchboardConfig
import SwitchboardCore
import SwitchboardHTTPAPI
import SwitchboardNIO
import SwitchboardServer

struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Run the Switchboard hub (single node by default; a cluster node with --redis).",
        discussion: """
            Speaks client protocol v1 (docs/PROTOCOL.md) at --path. Every setting (docs/CONFIGURATION.md) has one \
            name in three layers, the first that gives it wins: a flag (--max-message-size 65536), an environment \
            variable (SWITCHBOARD_MAX_MESSAGE_SIZE=65536), the file named by --config FILE or SWITCHBOARD_CONFIG \
            (JSON, or YAML by its extension; {"maxMessageSize": 65536, "namespaces": {…}}). Unknown flags and file \
            keys are errors. `switchboard check-config` prints the effective settings and where each came from. \
            SIGHUP reloads the file: namespaces, channel and abuse limits, allowed origins, token keys and the TLS \
            certificate change in place; other changes are logged and wait for a restart.

            Settings (flag, default):
            \(SettingKey.all.map { "  \($0.flag)  \($0.defaultValue.isEmpty ? "-" : $0.defaultValue)  \($0.help)" }.joined(separator: "\n"))
            """)

    @Argument(parsing: .allUnrecognized, help: "Settings as --name value (see above).")
    var settings: [String] = []

    func run() async throws {
        let loaded: LoadedSettings
        do {
            loaded = try SettingsLoader.load(arguments: settings, environment: ProcessInfo.processInfo.environment)
        } catch {
            throw ValidationError("\(error)")
        }
        let settings = loaded.settings
        try await checkStartup(settings)
        let registry = bootstrap(logLevel: settings.logLevel)
        let logger = Logger(label: "switchboard")
        for warning in loaded.warnings { logger.warning("\(warning)") }
        let verifier: TokenVerifier?
        do {
            let auth = try settings.authConfiguration()
            verifier = settings.hasTokenKeys ? try await TokenVerifier.make(auth) : nil
        } catch {
            throw ValidationError("token keys: \(error)")
        }
        let cluster = settings.cluster.map { ClusterNode(configuration: $0, logger: logger) }
        let application = ChannelsApplication(
            configuration: settings.channels,
            broker: cluster?.broker ?? LocalBroker(maxHistoryBytes: settings.historyMaxBytes),
            presence: cluster?.presence ?? LocalPresence(), control: cluster?.control, nodeName: settings.nodeName,
            verifier: verifier, authenticate: settings.insecureUserFromQuery ? ChannelsApplication.userFromQuery : nil,
            proxy: settings.proxy, webhooks: settings.webhooks,
            occupancy: cluster.map { $0.occupancy } ?? LocalOccupancy())
        if let cluster { try await cluster.start() }
        if settings.insecureUserFromQuery {
            logger.notice(
                "demo mode: connections name their user with ?user= (no token key; bound to loopback); configure tokenSecret, tokenPublicKey or jwksUrl for real authentication"
            )
        }
        let feed =
            settings.statsInterval > 0
            ? StatisticsFeed(application: application, interval: .nanoseconds(Int64(settings.statsInterval * 1e9)))
            : nil
        let reload = SettingsReload(
            arguments: self.settings, loaded: loaded, application: application, verifier: verifier, logger: logger)
        let statsChannel = feed?.channel ?? "sys:stats"
        let site =
            settings.web
            ? try webSite(
                path: settings.transport.path ?? "/ws", httpStreamPath: settings.transport.httpStreamPath,
                stats: statsChannel) : nil
        try await runServer(
            settings, path: settings.transport.path, application: application, site: site, reload: reload,
            started: { feed?.start() }
        ) { ready in
            // Stops last (services stop in reverse order): the drained server's disconnects reach the webhook.
            var services: [any Service] = [EventFlush(application: application)]
            if let cluster { services.append(cluster) }
            guard !settings.noAPI else { return services }
            let configuration = apiConfiguration(settings)
            let server = try APIServer(
                configuration: configuration, application: application, ready: ready,
                unreachable: {
                    guard let cluster else { return nil }
                    if let reason = await cluster.broker.unreachable() { return reason }
                    return await cluster.control.unreachable()
                }, registry: registry,
                logger: Logger(label: "switchboard.api"))
            services.append(AnnouncingAPI(server: server, configuration: configuration))
            return services
        }
    }
}

/// This node's part in a cluster: the Redis broker, presence and node control on one event loop of
/// their own. A service, so it shuts down after the WebSocket server has drained.
private final class ClusterNode: Service {
    let broker: RedisBroker
    let presence: RedisPresence
    let control: RedisNodeControl
    let occupancy: RedisOccupancy
    private let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    private let logger: Logger

    init(configuration: ClusterConfiguration, logger: Logger) {
        let redisLogger = Logger(label: "switchboard.cluster")
        broker = RedisBroker(configuration: configuration, group: group, logger: redisLogger)
        presence = RedisPresence(broker: broker, logger: redisLogger)
        control = RedisNodeControl(broker: broker, group: group, logger: redisLogger)
        occupancy = RedisOccupancy(broker: broker, logger: redisLogger)
        self.logger = logger
    }

    func start() async throws {
        let configuration = broker.configuration
        logger.notice(
            "cluster node",
            metadata: [
                "node": "\(configuration.nodeID)",
                "redis": "\(configuration.redis.map(\.displayAddress).joined(separator: ", "))",
            ])
        try await broker.start().get()
        try await control.start().get()
        presence.start(on: group.next())
        occupancy.start(on: group.next())
    }

    func run() async throws {
        try? await gracefulShutdown()
        presence.stop()
        occupancy.stop()
        await control.shutdown()
        await broker.shutdown()
        try await group.shutdownGracefully()
    }
}

/// The chat demo and the dashboard, bundled with the executable (Sources/switchboard/Web).
/// `/config.json` tells the pages where the WebSocket endpoint is (`path`) and the HTTP transport
/// (`httpStreamPath`, null when off).
private func webSite(path: String, httpStreamPath: String?, stats: String) throws -> StaticSite {
    let fallback = httpStreamPath.map(ServerMessage.quote) ?? "null"
    guard let directory = Bundle.module.url(forResource: "Web", withExtension: nil) else {
        throw ValidationError("the web pages are missing from the build")
    }
    return try StaticSite(
        directory: directory, aliases: ["/": "index.html", "/dashboard": "dashboard.html"],
        generated: [
            "/config.json": (
                "config.json",
                "{\"path\":\(ServerMessage.quote(path)),\"httpStreamPath\":\(fallback),\"stats\":\(ServerMessage.quote(stats))}"
            )
        ])
}

@main
struct Switchboard: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switchboard",
        abstract: "A high-concurrency WebSocket hub on SwiftNIO.",
        subcommands: [ServeCommand.self, EchoCommand.self, TokenCommand.self, CheckConfigCommand.self])
}

/// On graceful shutdown, once the WebSocket server has drained, hands the webhook what is still queued.
private struct EventFlush: Service {
    let application: ChannelsApplication

    func run() async throws {
        try? await gracefulShutdown()
        await application.flushEvents(within: .seconds(5))
    }
}

/// Runs the server API and prints where it listens (scripts wait for the line).
private struct AnnouncingAPI: Service {
    let server: APIServer
    let configuration: APIConfiguration

    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    try await server.run()
                } catch {
                    guard await server.boundAddress() == nil else { throw error }
                    throw ListenFailure(
                        "the server API", host: configuration.host, port: configuration.port, error: error,
                        hint: "set apiPort (--api-port) to a free port or 0 for any, or run without the API (--no-api)")
                }
            }
            if let address = await server.boundAddress() {
                print("switchboard API on http://\(address.ipAddress ?? "127.0.0.1"):\(address.port ?? 0)")
                fflush(nil)
            }
            try await group.waitForAll()
        }
    }
}
