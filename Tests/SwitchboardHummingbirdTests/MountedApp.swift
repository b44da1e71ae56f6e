import Hummingbird
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import SwitchboardCore
import SwitchboardHTTPAPI
import SwitchboardHummingbird
import SwitchboardNIO
import SwitchboardServer

/// A Hummingbird app on a free loopback port with the hub mounted at `/ws` (the channel layer), `GET /hello`
/// and the server API under `/api/`: what the example program builds, run in a `ServiceGroup` the test can
/// shut down gracefully.
struct MountedApp {
    let port: Int
    let hub: Hub
    let channels: ChannelsApplication
    private let group: ServiceGroup
    private let running: Task<Void, any Error>

    static func start(
        channels configure: (inout ChannelsConfiguration) -> Void = { _ in },
        transport: (inout SwitchboardConfiguration) -> Void = { _ in },
        authenticate: ChannelsApplication.Authenticator? = ChannelsApplication.userFromQuery,
        hubIsAService: Bool = true
    ) async throws -> MountedApp {
        var logger = Logger(label: "mount-test")
        logger.logLevel = .critical
        var channelsConfiguration = ChannelsConfiguration.chatDefaults
        configure(&channelsConfiguration)
        let channels = ChannelsApplication(
            configuration: channelsConfiguration, logger: logger, authenticate: authenticate)
        var configuration = SwitchboardConfiguration()
        configuration.shutdownTimeout = .seconds(5)
        configuration.reconnectJitterWindow = .milliseconds(100)
        transport(&configuration)
        let hub = Hub(
            configuration: configuration, application: channels,
            eventLoopGroup: MultiThreadedEventLoopGroup.singleton, logger: logger)
        let router = Router()
        router.get("hello") { _, _ in "hello" }
        ServerAPIRoutes(application: channels, logger: logger).add(to: router)
        let (bound, announce) = AsyncStream<Int>.makeStream()
        let app = Application(
            router: router, server: .switchboard(hub, path: "/ws"),
            configuration: .init(address: .hostname("127.0.0.1", port: 0)), services: hubIsAService ? [hub] : [],
            onServerRunning: { channel in
                announce.yield(channel.localAddress?.port ?? 0)
                announce.finish()
            }, logger: logger)
        if !hubIsAService { hub.startHeartbeats() }
        let group = ServiceGroup(services: [app], logger: logger)
        let running = Task { try await group.run() }
        var port = 0
        for await value in bound {
            port = value
            break
        }
        return MountedApp(port: port, hub: hub, channels: channels, group: group, running: running)
    }

    /// Graceful shutdown, as SIGTERM would: returns when the app's services have all stopped.
    func stop() async throws {
        await group.triggerGracefulShutdown()
        try await running.value
    }
}
