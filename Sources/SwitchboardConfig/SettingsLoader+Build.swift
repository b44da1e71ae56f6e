import Configuration
import Foundation
import NIOCore
import SwitchboardCluster
import SwitchboardCore
import SwitchboardRedis
import SwitchboardServer

extension SettingsLoader {
    /// Turns the values read into settings, checking each range; a bad value names its key.
    static func build(_ values: [String: ConfigContent], namespaces: Data?, filePath: String?) throws -> ServeSettings {
        let reader = Values(values: values)
        var settings = ServeSettings()
        var transport = SwitchboardConfiguration()
        transport.host = reader.string("host") ?? transport.host
        transport.port = try reader.int("port", in: 0...65535) ?? transport.port
        transport.path = reader.string("path") ?? "/ws"
        transport.eventStreamPath = try Values.streamPath(
            "ssePath", reader.rawString("ssePath") ?? "/sse", besides: transport.path)
        transport.httpStreamPath = try Values.streamPath(
            "httpStreamPath", reader.rawString("httpStreamPath") ?? "/http-stream", besides: transport.path)
        if let sse = transport.eventStreamPath, sse == transport.httpStreamPath {
            throw SettingsError("ssePath and httpStreamPath must differ")
        }
        transport.threads = try reader.int("threads", in: 1...1024) ?? transport.threads
        transport.maxMessageSize = try reader.int("maxMessageSize", in: 1...Int(Int32.max)) ?? transport.maxMessageSize
        transport.maxConnections = try reader.int("maxConnections", in: 1...Int(Int32.max)) ?? transport.maxConnections
        transport.handshakeTimeout =
            try reader.seconds("handshakeTimeout", positive: true) ?? transport.handshakeTimeout
        let origins = reader.strings("allowedOrigins") ?? []
        transport.originPolicy = origins.contains("*") ? .any : origins.isEmpty ? .sameOrigin : .allowList(origins)
        transport.publicHosts = reader.strings("publicHosts") ?? []
        transport.maxPendingHandshakes =
            try reader.int("maxPendingHandshakes", in: 1...Int(Int32.max)) ?? transport.maxPendingHandshakes
        transport.maxUpgradesPerSecond = try reader.number("maxUpgradesPerSecond") ?? 0
        transport.pingInterval = try reader.seconds("pingInterval") ?? transport.pingInterval
        transport.pongTimeout = try reader.seconds("pongTimeout", positive: true) ?? transport.pongTimeout
        transport.idleTimeout = try reader.seconds("idleTimeout") ?? transport.idleTimeout
        transport.closeTimeout = try reader.seconds("closeTimeout", positive: true) ?? transport.closeTimeout
        transport.queueMaxBytes = try reader.int("queueMaxBytes", in: 1...Int(Int32.max)) ?? transport.queueMaxBytes
        transport.queueMaxMessages =
            try reader.int("queueMaxMessages", in: 1...Int(Int32.max)) ?? transport.queueMaxMessages
        if let policy = reader.string("slowConsumer") {
            guard let parsed = SlowConsumerPolicy(rawValue: policy) else {
                throw SettingsError("slowConsumer: must be disconnect, drop-oldest or latest, not \"\(policy)\"")
            }
            transport.slowConsumerPolicy = parsed
        }
        transport.shutdownTimeout = try reader.seconds("shutdownTimeout", positive: true) ?? transport.shutdownTimeout
        // Checked whether or not deflate is on: a bad value is an error from any layer, not one that waits.
        let deflate = DeflateOptions(
            minSize: try reader.int("deflateMinSize", in: 0...Int(Int32.max)) ?? 256,
            level: try reader.int("deflateLevel", in: 1...9) ?? 1,
            clientContextTakeover: reader.bool("deflateClientContextTakeover") ?? false)
        if reader.bool("deflate") ?? false { transport.deflate = deflate }
        var limits = AbuseLimits()
        limits.maxConnectionsPerAddress = try reader.int("maxConnectionsPerAddress", in: 0...Int(Int32.max)) ?? 0
        limits.connectionsPerSecondPerAddress = try reader.number("connectionsPerSecondPerAddress") ?? 0
        limits.maxConnectionsPerUser = try reader.int("maxConnectionsPerUser", in: 0...Int(Int32.max)) ?? 0
        limits.inboundMessagesPerSecond = try reader.number("inboundMessagesPerSecond") ?? 0
        limits.inboundBytesPerSecond =
            try reader.number("inboundBytesPerSecond") ?? AbuseLimits.defaultInboundBytesPerSecond
        limits.inboundFramesPerSecond =
            try reader.number("inboundFramesPerSecond") ?? AbuseLimits.defaultInboundFramesPerSecond
        limits.trustedProxies = reader.strings("trustedProxies") ?? []
        if let bad = limits.trustedRanges.invalid.first {
            throw SettingsError("trustedProxies: \(bad) is not an IP address or a CIDR range (10.0.0.0/8, fd00::/8)")
        }
        transport.abuseLimits = limits
        settings.transport = transport

        settings.logLevel = reader.string("logLevel") ?? "info"
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(settings.logLevel) else {
            throw SettingsError("logLevel: must be trace, debug, info, notice, warning, error or critical")
        }
        settings.tlsCertificate = reader.string("tlsCertificate")
        settings.tlsKey = reader.string("tlsKey")
        guard (settings.tlsCertificate == nil) == (settings.tlsKey == nil) else {
            throw SettingsError("tlsCertificate and tlsKey go together")
        }

        settings.tokenSecrets = reader.strings("tokenSecret") ?? []
        settings.tokenPublicKeys = reader.strings("tokenPublicKey") ?? []
        settings.jwksFile = reader.string("jwksFile")
        settings.jwksURL = reader.string("jwksUrl")
        settings.tokenAudience = reader.string("tokenAudience")
        settings.tokenIssuer = reader.string("tokenIssuer")
        settings.tokenLeeway = try reader.number("tokenLeeway") ?? 5
        settings.allowAnonymous = reader.bool("allowAnonymous")
        settings.connectTimeout = try reader.number("connectTimeout") ?? 5
        settings.refreshNotice = try reader.number("refreshNotice") ?? 30
        settings.proxy = try proxy(reader)
        if let proxy = settings.proxy, proxy.connectURL != nil, proxy.timeout >= transport.handshakeTimeout {
            throw SettingsError(
                "proxyTimeout: must be shorter than handshakeTimeout, which bounds the connect proxy's answer")
        }
        settings.proxy?.refreshNotice = .nanoseconds(Int64(settings.refreshNotice * 1e9))
        settings.webhooks = try webhooks(reader)
        // Demo mode (names from `?user=`) only where nobody else can connect: bound to loopback, no keys, and no
        // proxy in front (a proxy on this host would carry the whole internet to the loopback address); and
        // not where the backend decides who connects.
        let demo =
            isLoopbackHost(transport.host) && !settings.hasTokenKeys && settings.allowAnonymous != false
            && transport.abuseLimits.trustedProxies.isEmpty && settings.proxy?.connectURL == nil
        settings.insecureUserFromQuery = reader.bool("insecureUserFromQuery") ?? demo
        if reader.bool("insecureUserFromQuery") == true, settings.proxy?.connectURL != nil {
            throw SettingsError("insecureUserFromQuery and proxyConnectUrl both decide who connects: use one")
        }
        if reader.bool("insecureUserFromQuery") == true, settings.hasTokenKeys {
            throw SettingsError("insecureUserFromQuery would let anyone bypass the token keys: use one or the other")
        }
        if settings.allowAnonymous == false, !settings.hasTokenKeys, !settings.insecureUserFromQuery {
            throw SettingsError(
                "allowAnonymous false needs a token key (tokenSecret, tokenPublicKey, jwksFile, jwksUrl)")
        }

        settings.apiHost = reader.string("apiHost") ?? settings.apiHost
        settings.apiPort = try reader.int("apiPort", in: 0...65535) ?? settings.apiPort
        settings.apiKey = reader.string("apiKey")
        settings.apiKeyFailureBurst = try reader.int("apiKeyFailureBurst", in: 1...Int(Int32.max)) ?? 10
        settings.noAPI = reader.bool("noApi") ?? false
        settings.web = reader.bool("web") ?? true
        settings.statsInterval = try reader.number("statsInterval") ?? 1
        settings.historyMaxBytes = try reader.int("historyMaxBytes", in: 1...Int(Int32.max)) ?? settings.historyMaxBytes
        guard settings.statsInterval == 0 || (0.1...86_400).contains(settings.statsInterval) else {
            throw SettingsError("statsInterval: must be 0 (off) or within 0.1…86400 seconds")
        }

        var channels = ChannelsConfiguration.chatDefaults
        if let namespaces {
            do {
                channels = try ChannelsConfiguration(json: namespaces)
            } catch {
                throw SettingsError("\(filePath ?? "file"): \(error)")
            }
            // The server's own statistics channel exists unless the file says otherwise about `sys`.
            if channels.namespaces["sys"] == nil { channels.namespaces["sys"] = .system }
        }
        channels.maxSubscriptionsPerConnection =
            try reader.int("maxSubscriptionsPerConnection", in: 0...Int(Int32.max))
            ?? channels.maxSubscriptionsPerConnection
        channels.publishRate = try reader.number("publishRate", positive: true) ?? channels.publishRate
        channels.publishBurst = try reader.number("publishBurst", positive: true) ?? channels.publishBurst
        guard channels.publishBurst >= 1 else { throw SettingsError("publishBurst: must be at least 1") }
        channels.maxRejectedPublishes =
            try reader.int("maxRejectedPublishes", in: 0...Int(Int32.max)) ?? channels.maxRejectedPublishes
        if let size = try reader.int("chatHistorySize", in: 0...1_000_000) {
            guard channels.namespaces["chat"] != nil else {
                throw SettingsError("chatHistorySize: the configuration has no `chat` namespace")
            }
            channels.namespaces["chat"]?.historySize = size
        }
        if let window = try reader.number("idempotencyWindow", positive: true) {
            guard window <= 86_400 else { throw SettingsError("idempotencyWindow: must be at most 86400 seconds") }
            channels.idempotencyWindow = .nanoseconds(Int64(window * 1e9))
        }
        for (name, options) in channels.namespaces.sorted(by: { $0.key < $1.key }) {
            if options.proxySubscribe, settings.proxy?.subscribeURL == nil {
                throw SettingsError("namespace \"\(name)\" has proxySubscribe, but proxySubscribeUrl is not set")
            }
            if options.proxyPublish, settings.proxy?.publishURL == nil {
                throw SettingsError("namespace \"\(name)\" has proxyPublish, but proxyPublishUrl is not set")
            }
            if options.publicationEvents, settings.webhooks == nil {
                throw SettingsError("namespace \"\(name)\" has publicationEvents, but eventsUrl is not set")
            }
        }
        if !settings.hasTokenKeys,
            let namespace = channels.namespaces.first(where: { $0.value.permissions.subscribe == .token })?.key
        {
            throw SettingsError(
                "namespace \"\(namespace)\" requires subscription tokens, but no token key is configured")
        }
        settings.channels = channels
        settings.nodeName = reader.string("nodeName") ?? settings.nodeName
        settings.cluster = try cluster(reader)
        return settings
    }

    private static func proxy(_ reader: Values) throws -> ProxyConfiguration? {
        var proxy = ProxyConfiguration()
        for (key, url) in [
            ("proxyConnectUrl", \ProxyConfiguration.connectURL), ("proxyRefreshUrl", \.refreshURL),
            ("proxySubscribeUrl", \.subscribeURL), ("proxyPublishUrl", \.publishURL), ("proxyRpcUrl", \.rpcURL),
        ] {
            guard let value = reader.string(key) else { continue }
            guard let parsed = URL(string: value), ["http", "https"].contains(parsed.scheme?.lowercased()),
                parsed.host?.isEmpty == false
            else { throw SettingsError("\(key): must be an http:// or https:// URL, not \"\(value)\"") }
            proxy[keyPath: url] = value
        }
        if let timeout = try reader.number("proxyTimeout", positive: true) {
            guard timeout <= 600 else { throw SettingsError("proxyTimeout: must be at most 600 seconds") }
            proxy.timeout = .nanoseconds(Int64(timeout * 1e9))
        }
        proxy.forwardedHeaders = reader.strings("proxyHeaders") ?? []
        if let bad = proxy.forwardedHeaders.first(where: { !Self.isHeaderName($0) }) {
            throw SettingsError("proxyHeaders: \"\(bad)\" is not a header name")
        }
        // Headers that frame or route the request to the backend are the HTTP client's, not the user's.
        let framing: Set = [
            "host", "content-length", "content-type", "transfer-encoding", "connection", "upgrade", "keep-alive",
            "te", "trailer", "proxy-connection", "expect",
        ]
        if let bad = proxy.forwardedHeaders.first(where: {
            framing.contains($0.lowercased()) || $0.lowercased().hasPrefix("sec-websocket-")
        }) {
            throw SettingsError("proxyHeaders: \(bad) frames the request to the backend; it cannot be forwarded")
        }
        if proxy.refreshURL != nil, proxy.connectURL == nil {
            throw SettingsError("proxyRefreshUrl renews connections the connect proxy made: set proxyConnectUrl too")
        }
        return proxy.isEmpty ? nil : proxy
    }

    private static func webhooks(_ reader: Values) throws -> WebhookConfiguration? {
        guard let url = reader.string("eventsUrl") else {
            for key in ["eventsSecret", "eventsBatchSize", "eventsMaxDelay"] where reader.values[key] != nil {
                throw SettingsError("\(key): only used with eventsUrl")
            }
            return nil
        }
        guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased()),
            parsed.host?.isEmpty == false
        else { throw SettingsError("eventsUrl: must be an http:// or https:// URL, not \"\(url)\"") }
        guard let secret = reader.string("eventsSecret"), secret.utf8.count >= 16 else {
            throw SettingsError("eventsSecret: needed with eventsUrl, at least 16 bytes (openssl rand -hex 16)")
        }
        var webhooks = WebhookConfiguration(url: url, secret: secret)
        webhooks.batchSize = try reader.int("eventsBatchSize", in: 1...10_000) ?? webhooks.batchSize
        if let delay = try reader.number("eventsMaxDelay") {
            guard delay <= 3600 else { throw SettingsError("eventsMaxDelay: must be at most 3600 seconds") }
            webhooks.maxDelay = .nanoseconds(Int64(delay * 1e9))
        }
        return webhooks
    }

    private static func isHeaderName(_ name: String) -> Bool {
        !name.isEmpty
            && name.utf8.allSatisfy { byte in
                (0x30...0x39).contains(byte) || (0x41...0x5A).contains(byte) || (0x61...0x7A).contains(byte)
                    || "!#$%&'*+-.^_`|~".utf8.contains(byte)
            }
    }

    private static func cluster(_ reader: Values) throws -> ClusterConfiguration? {
        guard let addresses = reader.strings("redis"), !addresses.isEmpty else {
            for key in [
                "redisPrefix", "nodeId", "presenceTtl", "streamTtl", "nodeInfoInterval", "redisTimeout",
                "redisPingInterval",
            ]
            where reader.values[key] != nil {
                throw SettingsError("\(key): only used with redis (a cluster)")
            }
            return nil
        }
        let timeout = try reader.seconds("redisTimeout", positive: true) ?? .seconds(3)
        let pingInterval = try reader.seconds("redisPingInterval", positive: true) ?? .seconds(5)
        var instances: [RedisConfiguration] = []
        for address in addresses {
            do {
                var instance = try RedisConfiguration(url: address)
                instance.commandTimeout = timeout
                instance.connectTimeout = timeout
                instance.pingInterval = pingInterval
                instances.append(instance)
            } catch {
                throw SettingsError("redis: \(error)")
            }
        }
        var cluster = ClusterConfiguration(redis: instances)
        if let prefix = reader.string("redisPrefix") {
            guard !prefix.contains(where: \.isWhitespace) else { throw SettingsError("redisPrefix: no spaces") }
            cluster.prefix = prefix
        }
        if let id = reader.string("nodeId") {
            guard ClusterConfiguration.isValidNodeID(id) else {
                throw SettingsError("nodeId: letters and digits only, at most 64")
            }
            cluster.nodeID = id
        }
        cluster.presenceTTL = try reader.seconds("presenceTtl", positive: true) ?? cluster.presenceTTL
        cluster.streamTTL = try reader.seconds("streamTtl", positive: true) ?? cluster.streamTTL
        cluster.nodeInfoInterval = try reader.seconds("nodeInfoInterval", positive: true) ?? cluster.nodeInfoInterval
        return cluster
    }
}

/// Typed access to the values read, with the range checks every setting needs.
private struct Values {
    let values: [String: ConfigContent]

    func string(_ key: String) -> String? {
        if case .string(let value) = values[key] { return value.isEmpty ? nil : value }
        return nil
    }

    /// The value as given, empty included (where empty means "off").
    func rawString(_ key: String) -> String? {
        if case .string(let value) = values[key] { return value }
        return nil
    }

    func strings(_ key: String) -> [String]? {
        if case .stringArray(let value) = values[key] { return value.filter { !$0.isEmpty } }
        return nil
    }

    func bool(_ key: String) -> Bool? {
        if case .bool(let value) = values[key] { return value }
        return nil
    }

    func int(_ key: String, in range: ClosedRange<Int>) throws -> Int? {
        guard case .int(let value) = values[key] else { return nil }
        guard range.contains(value) else {
            throw SettingsError("\(key): must be within \(range.lowerBound)…\(range.upperBound)")
        }
        return value
    }

    func number(_ key: String, positive: Bool = false) throws -> Double? {
        guard case .double(let value) = values[key] else { return nil }
        guard value.isFinite, positive ? value > 0 : value >= 0 else {
            throw SettingsError("\(key): must be \(positive ? "greater than 0" : "0 or more")")
        }
        return value
    }

    func seconds(_ key: String, positive: Bool = false) throws -> TimeAmount? {
        try number(key, positive: positive).map { .nanoseconds(Int64($0 * 1e9)) }
    }

    /// A stream endpoint's path: empty turns it off; otherwise an absolute path other than the WebSocket's.
    static func streamPath(_ key: String, _ value: String, besides path: String?) throws -> String? {
        guard !value.isEmpty else { return nil }
        guard value.hasPrefix("/"), !value.contains("?") else {
            throw SettingsError("\(key): must be a path starting with /, or empty to turn it off")
        }
        guard value != path else { throw SettingsError("\(key): must differ from path (the WebSocket endpoint)") }
        return value
    }
}
