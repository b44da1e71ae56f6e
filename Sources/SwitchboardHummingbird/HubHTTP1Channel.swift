import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import SwitchboardNIO

/// A Hummingbird HTTP/1.1 child channel that serves the app's routes and, at one path, the hub: each
/// connection starts as HTTP; a WebSocket upgrade to the mount path is decided by the hub and, on 101,
/// becomes one of the hub's connections on the same channel (same port, TLS and event loop). Everything
/// else is the app's. Make it with `HTTPServerBuilder.switchboard(_:path:configuration:)`.
public struct HubHTTP1Channel: ServerChildChannel, HTTPChannelHandler {
    /// What became of a connection's first request.
    public enum UpgradeResult: Sendable {
        /// The hub owns the channel now.
        case upgraded
        /// Plain HTTP for the app's routes.
        case notUpgraded(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>)
        /// The hub refused the upgrade: answered with the refusal's status, then closed.
        case refused(NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>, UpgradeRefusal)
    }

    /// A set-up connection: its channel and what its first request became.
    public struct Value: ServerChildChannelValue {
        let result: EventLoopFuture<UpgradeResult>
        /// The connection's channel.
        public let channel: any Channel
    }

    /// The app's routes.
    public let responder: HTTPChannelHandler.Responder
    private let hub: Hub
    private let path: String
    private let configuration: HTTP1Channel.Configuration

    /// - Parameters:
    ///   - responder: the app's routes, as Hummingbird hands them to a child channel.
    ///   - hub: the hub that takes the WebSocket upgrades (made with the app's event loop group).
    ///   - path: where the hub answers WebSocket upgrades (`/ws`); the app's routes get every other request.
    ///   - configuration: the app's HTTP/1.1 settings (idle timeout, extra handlers, decoder limits).
    public init(
        responder: @escaping HTTPChannelHandler.Responder, hub: Hub, path: String,
        configuration: HTTP1Channel.Configuration = .init()
    ) {
        self.responder = responder
        self.hub = hub
        self.path = path
        self.configuration = configuration
    }

    /// Sets up NIO's typed HTTP upgrade with the hub's upgrader; a request that does not upgrade gets
    /// Hummingbird's usual HTTP/1.1 handlers.
    public func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture { try setup(channel: channel, logger: logger, directSocket: nil) }
    }

    /// `setup`, on the channel's loop, with the socket when the hub's own listener accepted the channel.
    func setup(channel: any Channel, logger: Logger, directSocket: DirectSocket?) throws -> Value {
        // Before the first read: the receive buffer each connection keeps starts at 512 bytes rather than
        // NIO's 2 KiB, so a WebSocket that goes idle holds what one on the hub's own listener holds.
        try channel.syncOptions?.setOption(.recvAllocator, value: Hub.receiveAllocator)
        let verdict = NIOLoopBoundBox<UpgradeVerdict?>(nil, eventLoop: channel.eventLoop)
        let upgrader = HubUpgrader(hub: hub, path: path, verdict: verdict, directSocket: directSocket)
        let http1 = configuration
        let upgrade = NIOTypedHTTPServerUpgradeConfiguration<UpgradeResult>(
            upgraders: [upgrader],
            notUpgradingCompletionHandler: { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    try sync.addHandler(HTTP1ToHTTPServerCodec(secure: false))
                    try sync.addHandlers(http1.additionalChannelHandlers())
                    try sync.addHandler(
                        HTTPConnectionStateHandler(idleTimeout: http1.idleTimeout.map { .init($0) }, logger: logger)
                    )
                    let asyncChannel = try NIOAsyncChannel<HTTPRequestPart, HTTPResponsePart>(
                        wrappingChannelSynchronously: channel,
                        configuration: .init(isOutboundHalfClosureEnabled: true))
                    if case .refused(let refusal) = verdict.value { return .refused(asyncChannel, refusal) }
                    return .notUpgraded(asyncChannel)
                }
            })
        var pipeline = NIOUpgradableHTTPServerPipelineConfiguration(upgradeConfiguration: upgrade)
        pipeline.enablePipelining = false  // NIOAsyncChannel pipelines HTTP for Hummingbird
        pipeline.enableErrorHandling = false  // Hummingbird answers errors
        pipeline.enableResponseHeaderValidation = false  // HTTPTypes validates
        pipeline.decoderConfiguration.maxHeaderFieldSize = http1.httpDecoder.maxHeaderFieldSize
        pipeline.decoderConfiguration.maxHeaderListSize = http1.httpDecoder.maxHeaderListSize
        pipeline.decoderConfiguration.maxHeaderFieldCount = http1.httpDecoder.maxHeaderFieldCount
        let result = try channel.pipeline.syncOperations.configureUpgradableHTTPServerPipeline(
            configuration: pipeline)
        // Until the first request is served or upgraded, nothing of Hummingbird's bounds the connection (its
        // idle timeout and quiescing come with the HTTP handlers): the hub's handshake timeout does.
        let deadline = channel.eventLoop.scheduleTask(in: hub.configuration.handshakeTimeout) {
            channel.close(promise: nil)
        }
        result.whenComplete { _ in deadline.cancel() }
        return Value(result: result, channel: channel)
    }

    /// Serves HTTP for the app, answers a refusal, or returns at once for a WebSocket (the hub's loop runs
    /// it: no task is kept per connection).
    public func handle(value: Value, logger: Logger) async {
        do {
            switch try await value.result.get() {
            case .upgraded:
                return
            case .notUpgraded(let http):
                await handleHTTP(asyncChannel: http, logger: logger)
            case .refused(let http, let refusal):
                try await http.executeThenClose { _, outbound in
                    var fields = HTTPFields()
                    for (name, value) in refusal.response.head.headers {
                        if let name = HTTPField.Name(name) { fields.append(HTTPField(name: name, value: value)) }
                    }
                    let response = HTTPResponse(status: .init(code: Int(refusal.status.code)), headerFields: fields)
                    try await outbound.write(.head(response))
                    try await outbound.write(.body(ByteBuffer(string: refusal.response.body)))
                    try await outbound.write(.end(nil))
                }
            }
        } catch {
            logger.debug("connection ended during the upgrade", metadata: ["error": "\(error)"])
        }
    }
}

extension HTTPServerBuilder {
    /// HTTP/1.1 for the app's routes plus the hub at `path`, on the app's port (wrap it in `.tls(...)` for
    /// wss://). Run the hub among the app's services (`services: [hub]`) for heartbeats and its drain, and
    /// make it with the app's event loop group (`MultiThreadedEventLoopGroup.singleton` by default).
    public static func switchboard(
        _ hub: Hub, path: String = "/ws", configuration: HTTP1Channel.Configuration = .init()
    ) -> HTTPServerBuilder {
        .init { responder in HubHTTP1Channel(responder: responder, hub: hub, path: path, configuration: configuration) }
    }
}
