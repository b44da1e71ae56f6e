import Logging
import NIOSSL

extension ChannelClient {
    /// Where to connect, with which credentials, and how patiently: backoff, watchdog and timeouts.
    public struct Configuration: Sendable {
        /// The server's host name or address.
        public var host: String
        /// The server's port (`switchboard serve` listens on 8080 by default).
        public var port: Int
        /// The WebSocket endpoint (`switchboard serve`'s `path` setting).
        public var path: String
        /// Speaks TLS (wss://) with this context, checking the certificate for `serverHostname` (or `host`).
        public var tls: NIOSSLContext?
        /// The name the server's certificate must carry, when it is not `host` (an address, say).
        public var serverHostname: String?
        /// Headers sent with the upgrade request: a session cookie for a server whose authenticator reads it
        /// (the hub mounted in your own HTTP app), say. Nothing by default.
        public var headers: [(String, String)] = []
        /// A connection token (JWT) sent in `connect`. Used when `getToken` is nil; it cannot be renewed, so
        /// once it expires (close code 4001) the client stops.
        public var token: String?
        /// Fetches a fresh connection token from the application's backend: before each connection, and
        /// when the server asks for one ahead of the current token's expiry (the `refresh` push, 30 s before
        /// by default). A throw counts as a failed connection attempt (retried with backoff).
        public var getToken: (@Sendable () async throws -> String)?
        /// Backoff between attempts: a random delay in [0, min(max, min × 2^failures)) (full jitter), never
        /// less than the server's `after_ms` hint when it shuts down.
        public var minReconnectDelay: Duration = .milliseconds(200)
        /// The ceiling of the backoff (the server's `after_ms` hint may still ask for longer).
        public var maxReconnectDelay: Duration = .seconds(20)
        /// How long the connection may stay silent (no frame at all, pings included) before the client
        /// drops it and reconnects; halfway through it sends a `ping` command. The server pings every 25 s
        /// by default (`pingInterval`): keep this above that interval.
        public var watchdogTimeout: Duration = .seconds(40)
        /// How long a command waits for its reply, or for a connection while disconnected.
        public var commandTimeout: Duration = .seconds(10)
        /// How long opening TCP (and TLS) and the WebSocket upgrade may take.
        public var connectTimeout: Duration = .seconds(10)
        /// Where the client reports what it cannot return to a caller (a failed token refresh, say).
        public var logger = Logger(label: "switchboard.channel-client")

        /// - Parameters:
        ///   - host: the server's name or address.
        ///   - port: its WebSocket port.
        ///   - path: the channel protocol's path (`/ws` for `switchboard serve`).
        ///   - token: a connection token; nil connects anonymously (where the server allows it).
        ///   - getToken: fetches tokens as they are needed; takes precedence over `token`.
        public init(
            host: String, port: Int, path: String = "/ws", token: String? = nil,
            getToken: (@Sendable () async throws -> String)? = nil
        ) {
            self.host = host
            self.port = port
            self.path = path
            self.token = token
            self.getToken = getToken
        }

        /// The wait before the next attempt after `attempt` failures (full jitter), at least `hint` ms.
        func reconnectDelay(attempt: Int, notBefore hint: Int?) -> Duration {
            let ceiling = min(maxReconnectDelay.inSeconds, minReconnectDelay.inSeconds * Double(1 << min(attempt, 30)))
            let jittered = Double.random(in: 0...1) * max(ceiling, 0)
            return .seconds(max(jittered, Double(hint ?? 0) / 1000))
        }
    }
}

extension Duration {
    var inSeconds: Double {
        let parts = components
        return Double(parts.seconds) + Double(parts.attoseconds) * 1e-18
    }
}
