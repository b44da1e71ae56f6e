import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// A TCP proxy on a free loopback port that fails the way real networks do, on command: it passes bytes,
/// delays them, drops them without closing anything (a blackhole: a NAT that forgot the flow, a virtual IP
/// that moved), drops one direction only, or resets every link. Faults that only kill processes or close
/// sockets are clean; these are not, and they are what keepalives and timeouts exist for.
public final class FaultProxy: Sendable {
    /// What a link does with the bytes it reads; `pass` forwards them untouched.
    public enum Mode: Sendable, Equatable {
        case pass
        /// Every byte arrives this much later (order kept).
        case latency(TimeAmount)
        /// Nothing is forwarded in either direction, and nothing is closed.
        case blackhole
        /// Bytes from the client to the server are dropped; the other way passes.
        case dropClientToServer
        /// Bytes from the server to the client are dropped; the other way passes.
        case dropServerToClient
    }

    /// One proxied connection: its two channels and its own mode.
    private final class Link: Sendable {
        // Lock: guards the link's mode, read on its channels' loop and set by tests.
        let mode: NIOLockedValueBox<Mode>
        // Lock: guards the outbound channel, set once it is connected.
        let server = NIOLockedValueBox<(any Channel)?>(nil)
        let client: any Channel
        init(client: any Channel, mode: Mode) {
            self.client = client
            self.mode = NIOLockedValueBox(mode)
        }
    }

    /// The loopback port the proxy listens on: connect here instead of to the target.
    public let port: Int
    private let listener: any Channel
    private struct State {
        var mode: Mode = .pass
        var links: [ObjectIdentifier: Link] = [:]
    }
    // Lock: guards the mode for new links and the live links.
    private let state: NIOLockedValueBox<State>

    private init(port: Int, listener: any Channel, state: NIOLockedValueBox<State>) {
        self.port = port
        self.listener = listener
        self.state = state
    }

    /// Listens on a free loopback port and forwards every connection to `host:targetPort`.
    public static func start(to targetPort: Int, host: String = "127.0.0.1") async throws -> FaultProxy {
        let state = NIOLockedValueBox(State())
        let group = MultiThreadedEventLoopGroup.singleton
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelInitializer { client in
                let link = Link(client: client, mode: state.withLockedValue { $0.mode })
                let key = ObjectIdentifier(link)
                state.withLockedValue { $0.links[key] = link }
                client.closeFuture.whenComplete { _ in
                    state.withLockedValue { _ = $0.links.removeValue(forKey: key) }
                    link.server.withLockedValue { $0 }?.close(promise: nil)
                }
                return ClientBootstrap(group: client.eventLoop)
                    .channelInitializer { server in
                        server.pipeline.addHandler(Relay(link: link, towardsClient: true, peer: client))
                    }
                    .connect(host: host, port: targetPort)
                    .flatMap { server in
                        link.server.withLockedValue { $0 = server }
                        server.closeFuture.whenComplete { _ in
                            // The server went away: the client sees it, unless the link is silent.
                            if link.mode.withLockedValue({ $0 }) != .blackhole { client.close(promise: nil) }
                        }
                        return client.pipeline.addHandler(Relay(link: link, towardsClient: false, peer: server))
                            .flatMap { client.setOption(.autoRead, value: true) }
                    }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return FaultProxy(port: listener.localAddress?.port ?? 0, listener: listener, state: state)
    }

    /// The mode of every link, the live ones and those to come.
    public func set(_ mode: Mode) {
        let links = state.withLockedValue { state -> [Link] in
            state.mode = mode
            return Array(state.links.values)
        }
        for link in links { link.mode.withLockedValue { $0 = mode } }
    }

    /// Silences the links open now; new connections pass (a virtual IP that moved to a new primary).
    public func blackholeOpenLinks() {
        for link in state.withLockedValue({ Array($0.links.values) }) { link.mode.withLockedValue { $0 = .blackhole } }
    }

    /// Resets every open link on both sides (RST, not FIN).
    public func resetOpenLinks() {
        for link in state.withLockedValue({ Array($0.links.values) }) {
            for channel in [link.client, link.server.withLockedValue { $0 }].compactMap({ $0 }) {
                if let provider = channel as? any SocketOptionProvider {
                    _ = provider.setSoLinger(linger(l_onoff: 1, l_linger: 0)).always { _ in
                        channel.close(promise: nil)
                    }
                } else {
                    channel.close(promise: nil)
                }
            }
        }
    }

    /// Proxied connections whose client side is still open, silenced ones included.
    public var openLinks: Int { state.withLockedValue { $0.links.count } }

    /// Stops listening and resets every open link (RST); the shared event loop group keeps running.
    public func stop() async {
        try? await listener.close()
        resetOpenLinks()
    }

    /// Forwards what one side reads to the other, as the link's mode allows.
    private final class Relay: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let link: Link
        let towardsClient: Bool
        let peer: any Channel

        init(link: Link, towardsClient: Bool, peer: any Channel) {
            self.link = link
            self.towardsClient = towardsClient
            self.peer = peer
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let bytes = unwrapInboundIn(data)
            switch link.mode.withLockedValue({ $0 }) {
            case .pass:
                peer.writeAndFlush(bytes, promise: nil)
            case .latency(let delay):
                let peer = self.peer
                context.eventLoop.scheduleTask(in: delay) { peer.writeAndFlush(bytes, promise: nil) }
            case .blackhole:
                break
            case .dropClientToServer:
                if towardsClient { peer.writeAndFlush(bytes, promise: nil) }
            case .dropServerToClient:
                if !towardsClient { peer.writeAndFlush(bytes, promise: nil) }
            }
        }

        func channelInactive(context: ChannelHandlerContext) {
            if link.mode.withLockedValue({ $0 }) != .blackhole { peer.close(promise: nil) }
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
