import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import ServiceLifecycle
import SwitchboardCore

/// The WebSocket server: binds, accepts (with back-off at the file-descriptor limit), hands each
/// connection to the `HandshakeHandler`, and shuts down gracefully. Runs as a swift-service-lifecycle
/// `Service`, so SIGTERM/SIGINT trigger the drain.
public final class WebSocketServer: Service, Sendable {
    /// The settings the server was made with; a reload changes the hub's origin policy and abuse limits,
    /// not this.
    public let configuration: SwitchboardConfiguration
    /// The hub the server made: send, broadcast, query and count connections through it.
    public let hub: Hub
    private let group: any EventLoopGroup
    /// Whether `shutdown` stops the group: only when the server made it.
    private let ownsGroup: Bool
    private let logger: Logger
    /// Certificates for wss://; nil: plain ws://.
    public let tls: TLSCertificates?
    // Lock: guards the acceptor, set once by `start` and cleared by `shutdown`.
    private let listener = NIOLockedValueBox<Acceptor?>(nil)
    /// Finished when `shutdown` has completed; `run` waits on it.
    private let stopped: AsyncStream<Void>
    private let markStopped: AsyncStream<Void>.Continuation
    /// Sets up each accepted connection in place of the built-in handshake; nil: the handshake.
    private let connectionSetup: ConnectionSetup?

    /// Makes a server and its hub; nothing is bound until `start` or `run`.
    ///
    /// - Parameters:
    ///   - site: pages served to plain GETs on the WebSocket port (the demo); nil: none.
    ///   - metrics: where the hub's counters and gauges go.
    ///   - logger: where the server logs.
    ///   - configuration: limits, timers, address.
    ///   - application: the hooks (upgrade decision, open, message, close); `attached(to:)` is called
    ///     here, once.
    ///   - tls: the certificate and key for wss:// (reloadable while serving); nil serves plain ws://.
    ///   - eventLoopGroup: the event loops to serve on, one registry shard each: an embedding server's own
    ///     group (a `MultiThreadedEventLoopGroup`), which it keeps and shuts down itself. nil: the server
    ///     makes one of `configuration.threads` loops and stops it on shutdown.
    public convenience init(
        configuration: SwitchboardConfiguration,
        application: any SwitchboardApplication,
        tls: TLSCertificates? = nil,
        site: StaticSite? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        metrics: SwitchboardMetrics = SwitchboardMetrics(),
        logger: Logger = Logger(label: "switchboard")
    ) {
        self.init(
            configuration: configuration, application: application, tls: tls, site: site,
            eventLoopGroup: eventLoopGroup, metrics: metrics, logger: logger, connectionSetup: nil)
    }

    /// With `connectionSetup`, each accepted connection (after TLS, if any) is set up by it instead of the
    /// built-in handshake: how SwitchboardHummingbird serves an app's routes on this listener. It is made
    /// with the hub once; it gets each channel with its `DirectSocket` when direct writes are allowed.
    package init(
        configuration: SwitchboardConfiguration,
        application: any SwitchboardApplication,
        tls: TLSCertificates? = nil,
        site: StaticSite? = nil,
        eventLoopGroup: (any EventLoopGroup)? = nil,
        metrics: SwitchboardMetrics = SwitchboardMetrics(),
        logger: Logger = Logger(label: "switchboard"),
        connectionSetup: ((Hub) -> ConnectionSetup)?
    ) {
        self.configuration = configuration
        self.logger = logger
        self.tls = tls
        if let eventLoopGroup {
            self.group = eventLoopGroup
            self.ownsGroup = false
        } else {
            self.group = MultiThreadedEventLoopGroup(numberOfThreads: max(configuration.threads, 1))
            self.ownsGroup = true
        }
        let loops = Array(group.makeIterator())
        self.hub = Hub(
            configuration: configuration, application: application, metrics: metrics, logger: logger, eventLoops: loops,
            site: site)
        (self.stopped, self.markStopped) = AsyncStream<Void>.makeStream()
        self.connectionSetup = connectionSetup?(hub)
    }

    /// Binds and starts accepting; returns the address actually bound (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        let loops = Array(group.makeIterator())
        guard loops.allSatisfy({ ClientBootstrap(validatingGroup: $0) != nil }) else {
            throw ChannelError.operationUnsupported  // not NIOPosix event loops: they cannot take a descriptor
        }
        guard let first = loops.first else { throw ChannelError.ioOnClosedChannel }
        let acceptor = try Acceptor(
            host: configuration.host, port: configuration.port, backlog: 4096,
            maxWaiting: max(configuration.maxPendingHandshakes, 1024), finishedOn: first)
        let hub = self.hub
        let initialize = connectionInitializer()
        let options = connectionOptions()
        acceptor.start(loops: loops.count, metrics: hub.metrics, logger: logger) { index, descriptors in
            let loop = loops[index]
            loop.execute {
                let bootstrap = options(ClientBootstrap(group: loop))
                for descriptor in descriptors {
                    bootstrap.channelInitializer { initialize($0, descriptor) }.withConnectedSocket(descriptor)
                        .whenFailure { error in
                            // Refused at admission is logged there; anything else (the socket already
                            // gone, say) only here. NIO has closed the channel.
                            guard !(error is TooManyPendingHandshakes) else { return }
                            hub.logger.debug("accepted connection failed to open", metadata: ["error": "\(error)"])
                        }
                }
                acceptor.taken(descriptors.count)
            }
        }
        listener.withLockedValue { $0 = acceptor }
        hub.startHeartbeats()
        logger.info(
            "listening", metadata: ["address": "\(acceptor.address)", "path": "\(configuration.path ?? "*")"])
        return acceptor.address
    }

    /// What every accepted connection's channel is set to.
    private func connectionOptions() -> @Sendable (ClientBootstrap) -> ClientBootstrap {
        let waterMarks = ChannelOptions.Types.WriteBufferWaterMark(
            low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark)
        return { bootstrap in
            bootstrap
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .channelOption(.recvAllocator, value: Hub.receiveAllocator)
                .channelOption(.writeBufferWaterMark, value: waterMarks)
        }
    }

    /// The pipeline of a new connection: TLS when configured, HTTP, and the handshake.
    private func connectionInitializer() -> @Sendable (any Channel, CInt) -> EventLoopFuture<Void> {
        let hub = self.hub
        let tls = self.tls
        let directWrites = tls == nil && configuration.directWrites
        let setup = connectionSetup
        return { channel, descriptor in
            channel.eventLoop.makeCompletedFuture {
                guard let shard = hub.shard(for: channel.eventLoop) else { throw ChannelError.ioOnClosedChannel }
                guard shard.admission.hasRoomForHandshake else {
                    // Closed before anything is allocated for it; the client sees the connection end.
                    hub.metrics.rejected(.tooManyPending)
                    hub.logger.debug("connection closed at accept: too many handshakes in progress")
                    throw TooManyPendingHandshakes()
                }
                let direct = directWrites ? DirectSocket(descriptor: descriptor, channel: channel) : nil
                if let setup {
                    if let tls {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls.context))
                    }
                    return try setup(channel, direct)
                }
                let encoder = HTTPResponseEncoder()
                let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
                let sync = channel.pipeline.syncOperations
                // The TLS handshake runs inside the handshake timeout and the pending-handshake bound:
                // both start here, at accept.
                if let tls { try sync.addHandler(NIOSSLServerHandler(context: tls.context)) }
                try sync.addHandler(encoder)
                try sync.addHandler(decoder)
                try sync.addHandler(
                    HandshakeHandler(
                        hub: hub, shard: shard, encoder: encoder, decoder: decoder,
                        directSocket: direct))
            }
        }
    }

    /// The address `start` bound (the real port when configured with 0); nil before `start` and after `shutdown`.
    public var localAddress: SocketAddress? { listener.withLockedValue { $0?.address } }

    /// Stops accepting, closes every connection with 1001 in batches, waits up to `shutdownTimeout`
    /// for queues to drain and close handshakes to finish, then drops what is left and stops the loops.
    public func shutdown() async {
        guard
            let acceptor = listener.withLockedValue({ value -> Acceptor? in
                defer { value = nil }
                return value
            })
        else { return }
        logger.info("shutting down", metadata: ["connections": "\(hub.connectionCount)"])
        try? await acceptor.stop().get()
        try? await hub.shutdown().get()
        logger.info("stopped", metadata: ["connections": "\(hub.connectionCount)"])
        if ownsGroup { try? await group.shutdownGracefully() }
        markStopped.finish()
    }

    /// `Service`: serves until a graceful-shutdown signal, then drains.
    public func run() async throws {
        if localAddress == nil { try await start() }
        await withGracefulShutdownHandler {
            for await _ in self.stopped {}
        } onGracefulShutdown: {
            Task { await self.shutdown() }
        }
    }
}

/// Sets up one accepted connection's pipeline (on its loop), given its direct socket when direct writes are
/// allowed; what it throws closes the connection.
package typealias ConnectionSetup = @Sendable (any Channel, DirectSocket?) throws -> Void

/// Thrown from the child channel initializer to have NIO close a connection admission refused.
struct TooManyPendingHandshakes: Error {}
