import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

extension WebSocketServer {
    /// The hub's own listener serving a Hummingbird router as well: WebSocket upgrades at `configuration.path`
    /// (default `/ws`) join the hub; every other request goes to `router`, through Hummingbird's HTTP/1.1 code.
    ///
    /// The other way round from `HTTPServerBuilder.switchboard`, for the same reason the standalone server
    /// accepts connections itself: the hub learns each socket at accept and writes frames straight to it
    /// (direct writes), which a connection Hummingbird's server accepted cannot have (NIO tells no one a
    /// channel's descriptor). docs/benchmarks.md has the difference. What the server gives up is Hummingbird's
    /// server: its `ApplicationConfiguration` (address, server name, connection limit) and services; use the
    /// hub's configuration, TLS and run it as any `WebSocketServer`.
    ///
    /// - Parameters:
    ///   - configuration: the hub's and the listener's settings (host, port, path, limits).
    ///   - application: the hooks (the channel layer, say).
    ///   - tls: certificates for https and wss; nil: plain.
    ///   - eventLoopGroup: the loops to serve on; nil: the server makes its own.
    ///   - metrics: where the hub's counters and gauges go.
    ///   - logger: where the server logs.
    ///   - router: the app's routes (any `HTTPResponderBuilder` whose context is made from
    ///     `ApplicationRequestContextSource`, as `Application` requires).
    ///   - http1: HTTP/1.1 settings for the router's connections (idle timeout, extra handlers).
    public convenience init<Router: HTTPResponderBuilder>(
        configuration: SwitchboardConfiguration,
        application: any SwitchboardApplication,
        router: Router,
        http1: HTTP1Channel.Configuration = .init(),
        tls: TLSCertificates? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        metrics: SwitchboardMetrics = SwitchboardMetrics(),
        logger: Logger = Logger(label: "switchboard")
    ) where Router.Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
        let responder = Self.responder(router.buildResponder(), logger: logger)
        let path = configuration.path ?? "/ws"
        self.init(
            configuration: configuration, application: application, tls: tls, eventLoopGroup: eventLoopGroup,
            metrics: metrics, logger: logger,
            connectionSetup: { hub in
                let child = HubHTTP1Channel(responder: responder, hub: hub, path: path, configuration: http1)
                return { channel, directSocket in
                    let value = try child.setup(channel: channel, logger: logger, directSocket: directSocket)
                    // Until the first request is answered or upgraded; an upgraded connection's task ends at once.
                    Task { await child.handle(value: value, logger: logger) }
                }
            })
    }

    /// What `Application` does per request: a context for the router, its response (500 for an error the
    /// router did not turn into one), written in one go.
    private static func responder<Responder: HTTPResponder>(
        _ responder: Responder, logger: Logger
    ) -> HTTPChannelHandler.Responder
    where Responder.Context: InitializableFromSource<ApplicationRequestContextSource> {
        { request, writer, channel in
            let context = Responder.Context(source: .init(channel: channel, logger: logger))
            var response: Response
            do {
                response = try await responder.respond(to: request, context: context)
            } catch let error as HTTPParserError {
                throw error
            } catch {
                logger.debug("request failed", metadata: ["error": "\(error)"])
                response = Response(status: .internalServerError)
            }
            try await writer.write(response: response.head, body: response.body)
        }
    }
}
