import NIOCore
import NIOPosix
import NIOSSL
import SwitchboardCore

/// Connection settings for `WebSocketClient`.
public struct ClientOptions: Sendable {
    /// The request target of the upgrade, query included. Default `/`.
    public var path = "/"
    /// Extra request headers, sent in order after the upgrade's own (`Origin`, `Authorization`…).
    public var headers: [(String, String)] = []
    /// Offered in `Sec-WebSocket-Protocol`; the server's pick is `WebSocketClient.subprotocol`.
    public var subprotocols: [String] = []
    /// Source address to bind (e.g. 127.0.0.7), to spread many connections over address space.
    public var localAddress: String?
    /// Answer server pings and close frames automatically. Turn off to play a client that has
    /// stopped responding.
    public var autoPong = true
    /// Time allowed for the TCP connect, then again for the upgrade's answer. Default 10 s.
    public var connectTimeout = TimeAmount.seconds(10)
    /// Speak TLS (wss://) with this context, checking the server's certificate for `serverHostname`.
    public var tls: NIOSSLContext?
    /// The name for SNI and the certificate check when `tls` is set; usually the host connected to.
    public var serverHostname: String?

    /// Plain ws:// to `path`, with every other option at its default.
    public init(path: String = "/") { self.path = path }
}

/// A small WebSocket client on SwiftNIO: connect, send, read events in order, ping, close. Used by
/// the tests and the load generator. It can also write raw bytes, to speak broken WebSocket on purpose.
public final class WebSocketClient: Sendable {
    /// The NIO channel underneath: its event loop, or a way to drop TCP without ceremony.
    public let channel: any Channel
    /// The subprotocol the server chose from those offered; nil when it chose none.
    public let subprotocol: String?
    private let inbox: ClientInbox

    private init(channel: any Channel, subprotocol: String?, inbox: ClientInbox) {
        self.channel = channel
        self.subprotocol = subprotocol
        self.inbox = inbox
    }

    /// Opens TCP, performs the upgrade, and returns once the server answered 101.
    /// Throws `HandshakeFailure` with the status and body when the server refuses.
    public static func connect(
        host: String, port: Int, options: ClientOptions = ClientOptions(), group: any EventLoopGroup
    ) async throws -> WebSocketClient {
        let loop = group.next()
        let inbox = ClientInbox(eventLoop: loop)
        let (channel, subprotocol) = try await open(
            host: host, port: port, options: options, group: loop, sink: { _ in inbox })
        return WebSocketClient(channel: channel, subprotocol: subprotocol, inbox: inbox)
    }

    /// Lower level: frames go to a sink made for the channel (the load generator's counters).
    public static func open(
        host: String, port: Int, options: ClientOptions, group: any EventLoopGroup,
        sink makeSink: @escaping @Sendable (any Channel) -> any ClientFrameSink
    ) async throws -> (any Channel, String?) {
        try await openFuture(host: host, port: port, options: options, on: group.next(), sink: makeSink).get()
    }

    /// `open` without Swift concurrency: everything happens on `loop`, which is what a load generator
    /// opening thousands of connections a second wants.
    public static func openFuture(
        host: String, port: Int, options: ClientOptions, on loop: any EventLoop,
        sink makeSink: @escaping @Sendable (any Channel) -> any ClientFrameSink
    ) -> EventLoopFuture<(any Channel, String?)> {
        var bootstrap = ClientBootstrap(group: loop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let local = options.localAddress {
            do {
                bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: local, port: 0))
            } catch {
                return loop.makeFailedFuture(error)
            }
        }
        let handshake = ClientHandshake(
            host: host, port: port, path: options.path, headers: options.headers, subprotocols: options.subprotocols)
        let autoPong = options.autoPong
        let connectTimeout = options.connectTimeout
        let tls = options.tls
        let serverHostname = options.serverHostname
        let upgraded = loop.makePromise(of: String?.self)
        let initialized = bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let tls {
                    try channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: tls, serverHostname: serverHostname))
                }
                try channel.pipeline.syncOperations.addHandler(
                    ClientConnectionHandler(
                        handshake: handshake, upgraded: upgraded, sink: makeSink(channel), autoPong: autoPong))
            }
        }
        // An address literal skips the resolver and happy-eyeballs machinery, a quarter of the load
        // generator's time per connection when it was used for "127.0.0.1".
        let connected: EventLoopFuture<any Channel>
        if let address = try? SocketAddress(ipAddress: host, port: port) {
            connected = initialized.connect(to: address)
        } else {
            connected = initialized.connect(host: host, port: port)
        }
        return connected.flatMapError { error in
            upgraded.fail(error)
            return loop.makeFailedFuture(error)
        }.flatMap { channel in
            // A server at its file limit may accept TCP (the kernel's backlog) and never answer: give up
            // after the connect timeout rather than wait forever.
            let timeout = loop.scheduleTask(in: connectTimeout) {
                upgraded.fail(
                    HandshakeFailure(status: 0, headers: [:], body: "no upgrade response within the timeout"))
            }
            return upgraded.futureResult.map { subprotocol in
                timeout.cancel()
                return (channel, subprotocol)
            }.flatMapError { error in
                timeout.cancel()
                // Closed either way; the caller learns why the upgrade failed, not how the close went.
                return channel.close().flatMapThrowing { () -> (any Channel, String?) in throw error }
                    .flatMapErrorThrowing { _ -> (any Channel, String?) in throw error }
            }
        }
    }

    /// The next event from the server, waiting at most `timeout`.
    public func next(timeout: TimeAmount = .seconds(10)) async throws -> ClientEvent {
        try await inbox.next(timeout: timeout).get()
    }

    /// Every event from the server, in order, as an async sequence that ends after `.disconnected`,
    /// or fails with `ClientTimeout` when the server stays silent for `idleTimeout`. It is the
    /// connection's reader: iterate it from one task and do not mix it with `next`. Once iteration
    /// stops, the read behind it ends within a second.
    public func events(idleTimeout: TimeAmount = .hours(1)) -> AsyncThrowingStream<ClientEvent, any Error> {
        let poll = TimeAmount.seconds(1)
        return AsyncThrowingStream { continuation in
            let reader = Task {
                var silent = TimeAmount.zero
                do {
                    while !Task.isCancelled {
                        let event: ClientEvent
                        do {
                            event = try await self.next(timeout: min(poll, idleTimeout))
                        } catch is ClientTimeout {
                            silent = silent + min(poll, idleTimeout)
                            if silent >= idleTimeout { throw ClientTimeout() }
                            continue
                        }
                        silent = .zero
                        continuation.yield(event)
                        if event == .disconnected { break }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in reader.cancel() }
        }
    }

    /// The next event other than a ping or pong: a message, or `.close`/`.disconnected` when the connection
    /// ends. Throws `ClientTimeout` when nothing arrives within `timeout`.
    public func nextMessage(timeout: TimeAmount = .seconds(10)) async throws -> ClientEvent {
        while true {
            let event = try await next(timeout: timeout)
            switch event {
            case .ping, .pong: continue
            default: return event
            }
        }
    }

    /// Sends a text message as one masked frame. Fire and forget: nothing reports a failed write.
    public func send(text: String) { sendRaw(ClientFrameEncoder.text(text)) }

    /// Sends a binary message as one masked frame.
    public func send(binary: [UInt8]) {
        sendRaw(ClientFrameEncoder.encode(opcode: Opcode.binary.rawValue, payload: binary))
    }

    /// Sends a ping; the server's pong arrives as a `.pong` event.
    public func ping(_ payload: [UInt8] = []) {
        sendRaw(ClientFrameEncoder.encode(opcode: Opcode.ping.rawValue, payload: payload))
    }

    /// Sends a close frame; the server answers and closes TCP.
    public func close(code: UInt16? = 1000, reason: String = "") {
        sendRaw(ClientFrameEncoder.close(code: code, reason: reason))
    }

    /// Writes bytes as they are: broken frames included.
    public func sendRaw(_ bytes: ByteBuffer) {
        channel.writeAndFlush(bytes, promise: nil)
    }

    /// Drops TCP without a close handshake.
    public func disconnect() async {
        try? await channel.close()
    }

    /// Waits for the server's close frame and the end of TCP, returning the close frame's code and reason.
    public func waitForClose(timeout: TimeAmount = .seconds(10)) async throws -> (code: UInt16?, reason: String)? {
        var close: (UInt16?, String)?
        while true {
            switch try await next(timeout: timeout) {
            case .close(let code, let reason): close = (code, reason)
            case .disconnected: return close
            default: continue
            }
        }
    }
}
