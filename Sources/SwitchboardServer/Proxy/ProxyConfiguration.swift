import NIOCore

/// Where the application's backend decides: each event the server would otherwise decide alone (a
/// connection, its renewal, a subscription, a publication) or cannot answer at all (an RPC) is POSTed
/// there as JSON, and the backend's answer is the server's (docs/PROTOCOL.md, "Event proxy"). A URL left
/// nil keeps that event the server's own; subscribe and publish are proxied only in namespaces that say
/// so (`NamespaceOptions.proxySubscribe`, `proxyPublish`).
public struct ProxyConfiguration: Sendable, Equatable {
    /// Asked at every upgrade, instead of a token: answers who the user is (a session cookie, say).
    public var connectURL: String?
    /// Asked before a proxied connection's `expire_at`, instead of closing it.
    public var refreshURL: String?
    /// Asked for every client subscribe in a namespace with `proxySubscribe`.
    public var subscribeURL: String?
    /// Asked for every client publish in a namespace with `proxyPublish`: it may refuse or rewrite it.
    public var publishURL: String?
    /// Answers the `rpc` command.
    public var rpcURL: String?
    /// How long the backend has to answer; past it the client gets error 110 (or 503 at the upgrade).
    /// Default 5 s.
    public var timeout: TimeAmount
    /// The upgrade request's headers sent along with every event (`Cookie`, `Authorization`): none by
    /// default, since they carry the user's credentials.
    public var forwardedHeaders: [String]
    /// How long before a proxied connection's `expire_at` the refresh proxy is asked (where no token
    /// verifier says otherwise). Default 30 s.
    public var refreshNotice: TimeAmount = .seconds(30)

    /// A configuration asking the backend at the given URLs.
    public init(
        connectURL: String? = nil, refreshURL: String? = nil, subscribeURL: String? = nil, publishURL: String? = nil,
        rpcURL: String? = nil, timeout: TimeAmount = .seconds(5), forwardedHeaders: [String] = []
    ) {
        self.connectURL = connectURL
        self.refreshURL = refreshURL
        self.subscribeURL = subscribeURL
        self.publishURL = publishURL
        self.rpcURL = rpcURL
        self.timeout = timeout
        self.forwardedHeaders = forwardedHeaders
    }

    /// Whether any event is proxied.
    public var isEmpty: Bool {
        connectURL == nil && refreshURL == nil && subscribeURL == nil && publishURL == nil && rpcURL == nil
    }
}
