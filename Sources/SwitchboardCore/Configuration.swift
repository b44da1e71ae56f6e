import NIOCore

/// Everything an operator can tune. Each default is what a production deployment should start with.
public struct SwitchboardConfiguration: Sendable {
    /// Address to bind. Default `127.0.0.1`; use `0.0.0.0` to listen on every interface.
    public var host = "127.0.0.1"
    /// TCP port. Default 8080; 0 picks a free port (the bound port is reported after start).
    public var port = 8080
    /// The WebSocket endpoint. nil accepts an upgrade at any path (the echo server). Default `/ws`.
    public var path: String? = "/ws"
    /// Server-Sent Events on the same listener: `GET <path>?channel=…` streams channels one way (the
    /// application decides what the request may read). nil: none. Default `/sse`.
    public var eventStreamPath: String? = "/sse"
    /// The HTTP transport for clients whose WebSocket upgrade fails: `GET` opens the session's stream of
    /// protocol messages, `POST ?session=…` sends it commands. nil: none. Default `/http-stream`.
    public var httpStreamPath: String? = "/http-stream"
    /// Event loop threads, one registry shard each. Default: the number of cores.
    public var threads = System.coreCount
    /// Largest message (all fragments together) a client may send; past it, close 1009. Default 1 MiB.
    public var maxMessageSize = 1 << 20
    /// Open WebSocket connections allowed at once; further upgrades get 503. Default 100,000.
    public var maxConnections = 100_000
    /// Which web pages may connect (checked on the `Origin` header browsers send). Default: the
    /// server's own origin only; clients without `Origin` are not affected.
    public var originPolicy = OriginPolicy.sameOrigin
    /// Host names clients reach this server by (`chat.example.com`, ports ignored): the same-origin check
    /// takes only these as the server's own. Empty: loopback names when bound to loopback, any otherwise.
    public var publicHosts: [String] = []
    /// Time a client has to complete the HTTP upgrade after connecting. Default 10 s.
    public var handshakeTimeout = TimeAmount.seconds(10)
    /// Connections that have not finished their upgrade, at most, at once (each event loop takes its
    /// share, rounded up); beyond, a new TCP connection is closed at accept and counted. Bounds what
    /// silent or slow clients can hold. Default 4,096.
    public var maxPendingHandshakes = 4096
    /// Upgrades admitted per second (spread over the event loops, each with a second's worth of burst);
    /// beyond, 503 with `Retry-After: 1`. Spreads a reconnect storm so the connections already open keep
    /// their latency. Default 0: no limit.
    public var maxUpgradesPerSecond = 0.0
    /// Time between server pings (jittered by ±10%). Default 25 s; zero disables pings.
    public var pingInterval = TimeAmount.seconds(25)
    /// Time a ping may go unanswered before the connection is closed. Default 10 s.
    public var pongTimeout = TimeAmount.seconds(10)
    /// Close a connection that sent no data message for this long. Default zero: disabled.
    public var idleTimeout = TimeAmount.zero
    /// Time to wait for the peer's close frame after sending ours before dropping TCP. Default 5 s.
    public var closeTimeout = TimeAmount.seconds(5)
    /// Bytes of data messages queued for one connection while its socket is not writable. Default 1 MiB.
    public var queueMaxBytes = 1 << 20
    /// Messages queued for one connection while its socket is not writable. Default 4,096.
    public var queueMaxMessages = 4096
    /// What happens when the queue is full. Default: disconnect (1008 "slow consumer").
    public var slowConsumerPolicy = SlowConsumerPolicy.disconnect
    /// How long shutdown waits for queues to drain and close handshakes to finish. Default 10 s.
    public var shutdownTimeout = TimeAmount.seconds(10)
    /// Connections sent their close frame together during shutdown, per loop, per batch. Default 500.
    public var shutdownBatchSize = 500
    /// Reconnect hints in shutdown close reasons are spread uniformly over this window. Default 10 s.
    public var reconnectJitterWindow = TimeAmount.seconds(10)
    /// NIO's write buffer water marks: above `high` a socket counts as not writable and messages
    /// wait in the connection's bounded queue. Defaults 32 KiB / 64 KiB.
    public var writeBufferLowWaterMark = 32 * 1024
    /// The high mark of the pair above (see `writeBufferLowWaterMark`). Default 64 KiB.
    public var writeBufferHighWaterMark = 64 * 1024
    /// Plain ws:// connections write a frame the socket takes whole with one `send(2)`, below NIO's
    /// pipeline, and hand NIO only what does not fit (see `DirectSocket`). Default true; false writes
    /// everything through the pipeline.
    public var directWrites = true
    /// permessage-deflate (RFC 7692), offered by browsers by default. Default nil: off, the extension is
    /// not negotiated.
    public var deflate: DeflateOptions?
    /// Per address, per user and per connection limits. Default: only the inbound byte and frame rates
    /// (see `AbuseLimits`).
    public var abuseLimits = AbuseLimits()

    /// Every setting at its default; change the properties you need.
    public init() {}
}
