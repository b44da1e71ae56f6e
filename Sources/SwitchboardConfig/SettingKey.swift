/// One setting of `switchboard serve`: the same name in the file (`maxMessageSize`), the environment
/// (`SWITCHBOARD_MAX_MESSAGE_SIZE`) and on the command line (`--max-message-size`). The catalog below is
/// the one list that reading, validation, `check-config` and the documentation test all use.
public struct SettingKey: Sendable, Hashable {
    /// The value type; the raw value is how error messages and the documentation name it.
    public enum Kind: String, Sendable {
        case int = "an integer"
        case double = "a number"
        case bool = "true or false"
        case string = "a string"
        case strings = "a list of strings"
    }

    /// The file key, in lowerCamelCase; `flag` and `environmentVariable` derive from it.
    public let name: String
    /// What type of value the setting takes.
    public let kind: Kind
    /// As the documentation shows it; empty when the setting is off or unset by default.
    public let defaultValue: String
    /// One line for the documentation table and `--help`.
    public let help: String
    /// The value is shown as `<redacted>` by `check-config` and marked secret for swift-configuration.
    public let isSecret: Bool
    /// Applied on SIGHUP without a restart.
    public let reloadable: Bool

    init(
        _ name: String, _ kind: Kind, _ defaultValue: String, _ help: String, secret: Bool = false,
        reloadable: Bool = false
    ) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.help = help
        self.isSecret = secret
        self.reloadable = reloadable
    }

    /// `maxMessageSize` → `--max-message-size`.
    public var flag: String { "--" + words.joined(separator: "-") }
    /// `maxMessageSize` → `SWITCHBOARD_MAX_MESSAGE_SIZE`.
    public var environmentVariable: String { "SWITCHBOARD_" + words.joined(separator: "_").uppercased() }

    private var words: [String] {
        var words: [String] = []
        var current = ""
        for character in name {
            if character.isUppercase, !current.isEmpty {
                words.append(current)
                current = ""
            }
            current.append(character.lowercased().first ?? character)
        }
        words.append(current)
        return words
    }
}

extension SettingKey {
    /// Every setting, in the order `check-config` prints them.
    public static let all: [SettingKey] =
        transport + tls + deflate + auth + proxy + events + api + channels + abuse + cluster

    static let events: [SettingKey] = [
        .init("eventsUrl", .string, "", "where batches of lifecycle events are POSTed (the event webhook)"),
        .init(
            "eventsSecret", .string, "", "HMAC-SHA256 key (≥ 16 bytes) signing every batch; needed with eventsUrl",
            secret: true),
        .init("eventsBatchSize", .int, "100", "events in one webhook batch at most"),
        .init("eventsMaxDelay", .double, "1", "seconds an event waits for its batch to fill"),
    ]

    static let proxy: [SettingKey] = [
        .init(
            "proxyConnectUrl", .string, "",
            "the application's backend decides every upgrade without a bearer token (POST, docs/PROTOCOL.md)"),
        .init("proxyRefreshUrl", .string, "", "renews a proxied connection before its expire_at"),
        .init("proxySubscribeUrl", .string, "", "decides client subscribes in namespaces with proxySubscribe"),
        .init(
            "proxyPublishUrl", .string, "", "decides (and may rewrite) client publishes in namespaces with proxyPublish"
        ),
        .init("proxyRpcUrl", .string, "", "answers the client's rpc command"),
        .init("proxyTimeout", .double, "5", "seconds the backend has to answer a proxied event"),
        .init(
            "proxyHeaders", .strings, "",
            "upgrade-request headers forwarded with every proxied event (Cookie, Authorization); none by default"),
    ]

    static let transport: [SettingKey] = [
        .init("host", .string, "127.0.0.1", "address to bind; 0.0.0.0 for every interface"),
        .init("port", .int, "8080", "TCP port (0 picks a free one)"),
        .init("path", .string, "/ws", "path of the WebSocket endpoint"),
        .init("ssePath", .string, "/sse", "path of the one-way Server-Sent Events endpoint (empty: none)"),
        .init(
            "httpStreamPath", .string, "/http-stream",
            "path of the HTTP transport for clients whose WebSocket upgrade fails (empty: none)"),
        .init("threads", .int, "cores", "event loop threads, one registry shard each"),
        .init("maxMessageSize", .int, "1048576", "largest message a client may send, all fragments (past it: 1009)"),
        .init("maxConnections", .int, "100000", "open connections at once; further upgrades get 503"),
        .init("handshakeTimeout", .double, "10", "seconds a client has to complete the upgrade (TLS included)"),
        .init(
            "allowedOrigins", .strings, "", "web origins allowed to connect (`*`: any); empty: the server's own",
            reloadable: true),
        .init(
            "publicHosts", .strings, "",
            "host names clients reach this server by, for the same-origin check; empty: loopback names when bound to loopback, any otherwise"
        ),
        .init("maxPendingHandshakes", .int, "4096", "upgrades in progress at once; beyond, closed at accept"),
        .init("maxUpgradesPerSecond", .double, "0", "upgrades admitted per second (beyond: 503); 0: no limit"),
        .init("pingInterval", .double, "25", "seconds between server pings (jittered ±10%); 0: no pings"),
        .init("pongTimeout", .double, "10", "seconds a ping may go unanswered"),
        .init("idleTimeout", .double, "0", "close after this many seconds without a data message; 0: never"),
        .init("closeTimeout", .double, "5", "seconds to wait for the client's close frame"),
        .init("queueMaxBytes", .int, "1048576", "bytes queued per connection while its socket is full"),
        .init("queueMaxMessages", .int, "4096", "messages queued per connection while its socket is full"),
        .init("slowConsumer", .string, "disconnect", "when a queue is full: disconnect, drop-oldest or latest"),
        .init("shutdownTimeout", .double, "10", "seconds shutdown waits for queues and close handshakes"),
        .init("logLevel", .string, "info", "trace, debug, info, notice, warning, error or critical"),
    ]

    static let tls: [SettingKey] = [
        .init(
            "tlsCertificate", .string, "",
            "PEM certificate chain for wss:// (with tlsKey); the files are re-read on SIGHUP"),
        .init("tlsKey", .string, "", "PEM private key for wss://"),
    ]

    static let deflate: [SettingKey] = [
        .init("deflate", .bool, "false", "negotiate permessage-deflate with clients that offer it"),
        .init("deflateMinSize", .int, "256", "messages smaller than this go uncompressed"),
        .init("deflateLevel", .int, "1", "zlib level for outgoing messages, 1…9"),
        .init("deflateClientContextTakeover", .bool, "false", "let clients keep their compression context"),
    ]

    static let auth: [SettingKey] = [
        .init(
            "tokenSecret", .strings, "", "HMAC secrets (≥ 32 bytes) for HS256/384/512 tokens", secret: true,
            reloadable: true),
        .init("tokenPublicKey", .strings, "", "PEM files with RSA or EC public keys", reloadable: true),
        .init("jwksFile", .string, "", "JSON Web Key Set file", reloadable: true),
        .init("jwksUrl", .string, "", "JSON Web Key Set URL (https://, or http:// on loopback)"),
        .init("tokenAudience", .string, "", "required `aud` claim"),
        .init("tokenIssuer", .string, "", "required `iss` claim"),
        .init("tokenLeeway", .double, "5", "seconds of clock skew allowed on exp, nbf and iat"),
        .init("allowAnonymous", .bool, "no keys", "accept connections without a token; default: only without keys"),
        .init("connectTimeout", .double, "5", "seconds a connection without a token has to send `connect`"),
        .init("refreshNotice", .double, "30", "seconds before expiry that the server asks for a refresh"),
        .init(
            "insecureUserFromQuery", .bool, "loopback without keys or connect proxy",
            "user id from `?user=`, presence data from `?info=`, unauthenticated (the demo); default: on only when bound to loopback with no token key"
        ),
    ]

    static let api: [SettingKey] = [
        .init("apiHost", .string, "127.0.0.1", "address of the server API, /metrics, /health and /ready"),
        .init("apiPort", .int, "8081", "port of the server API (0 picks a free one)"),
        .init("apiKey", .string, "", "key the server API requires; needed when apiHost is not loopback", secret: true),
        .init(
            "apiKeyFailureBurst", .int, "10",
            "wrong API keys one address may send in a burst; then one a second, the rest answered 429"),
        .init("noApi", .bool, "false", "do not start the server API listener"),
        .init("web", .bool, "true", "serve the chat demo at / and the dashboard at /dashboard on the WebSocket port"),
        .init("statsInterval", .double, "1", "seconds between the server's statistics on `sys:stats`; 0: none"),
        .init(
            "historyMaxBytes", .int, "67108864",
            "bytes all channels' history may take on this node (single node; namespaces bound each channel too)"),
    ]

    static let channels: [SettingKey] = [
        .init("maxSubscriptionsPerConnection", .int, "128", "subscriptions one connection may hold", reloadable: true),
        .init("publishRate", .double, "20", "publishes per second one connection may sustain", reloadable: true),
        .init("publishBurst", .double, "40", "publishes one connection may make in a burst", reloadable: true),
        .init(
            "maxRejectedPublishes", .int, "100", "rate-limited publishes in a row before the connection closes",
            reloadable: true),
        .init(
            "chatHistorySize", .int, "", "overrides the `chat` namespace's historySize (100 by default)",
            reloadable: true),
        .init(
            "idempotencyWindow", .double, "300",
            "seconds a publish's idempotency_key answers for it (a repeat publishes nothing)", reloadable: true),
    ]

    static let abuse: [SettingKey] = [
        .init(
            "maxConnectionsPerAddress", .int, "0", "open connections per client address; 0: no limit", reloadable: true),
        .init(
            "connectionsPerSecondPerAddress", .double, "0",
            "new connections per second per client address; 0: no limit",
            reloadable: true),
        .init("maxConnectionsPerUser", .int, "0", "open connections per user; 0: no limit", reloadable: true),
        .init(
            "inboundMessagesPerSecond", .double, "0", "messages per second one connection may send; 0: no limit",
            reloadable: true),
        .init(
            "inboundBytesPerSecond", .double, "16777216", "bytes per second one connection may send; 0: no limit",
            reloadable: true),
        .init(
            "inboundFramesPerSecond", .double, "10000",
            "WebSocket frames (data, continuation, control) per second one connection may send; 0: no limit",
            reloadable: true),
        .init(
            "trustedProxies", .strings, "",
            "peer addresses or CIDR ranges (10.0.0.0/8) whose X-Forwarded-For / Forwarded header names the client",
            reloadable: true),
    ]

    static let cluster: [SettingKey] = [
        .init(
            "redis", .strings, "",
            "Redis addresses (redis://[[user]:password@]host[:port][/db], rediss:// for TLS, or redis+sentinel://[[user]:password@]sentinel[:port][,sentinel…]/primary-name[/db] to follow Sentinel failovers): run as a cluster node; channels are spread over several by consistent hashing",
            secret: true),
        .init(
            "redisPrefix", .string, "switchboard", "prefix of every Redis key and channel (clusters sharing a Redis)"),
        .init("redisTimeout", .double, "3", "seconds a Redis command may take before it fails"),
        .init(
            "redisPingInterval", .double, "5",
            "seconds between PINGs on each Redis pub/sub link: a link silent for this plus redisTimeout is reconnected"),
        .init("nodeId", .string, "random", "this node's id in the cluster (letters and digits), part of client ids"),
        .init("nodeName", .string, "host name", "what node info calls this node"),
        .init("presenceTtl", .double, "60", "seconds until a node's presence entries expire unless it refreshes them"),
        .init("streamTtl", .double, "604800", "seconds a channel's offset and epoch outlive its last publication"),
        .init("nodeInfoInterval", .double, "5", "seconds between node announcements; silent for three: gone"),
    ]

    static let byName: [String: SettingKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })
    static let byFlag: [String: SettingKey] = Dictionary(uniqueKeysWithValues: all.map { ($0.flag, $0) })
}
