import NIOCore
import SwitchboardCore

/// How the channels of one namespace (`chat` in `chat:lobby`) behave.
public struct NamespaceOptions: Sendable {
    /// Publications kept per channel for `history` and recovery. Default 0: no history.
    public var historySize = 0
    /// Bytes one channel's history may take (with the node's bound over all channels, `LocalBroker`'s
    /// `maxHistoryBytes`); the oldest go first. Default 1 MiB; 0: only the count bounds it.
    public var historyMaxBytes = 1 << 20
    /// Publications older than this leave history. Default 5 minutes; zero keeps them until pushed out.
    public var historyTTL = TimeAmount.minutes(5)
    /// Track who is in each channel. Default off.
    public var presence = false
    /// Push join and leave events to subscribers. Default off.
    public var joinLeave = false
    /// Answer `presence` with counts only (connections and unique users), for big rooms. Default off.
    public var countsOnly = false
    /// Join/leave pushes stop once a channel has more members than this: in a big room they would
    /// flood every subscriber; `presence` still answers. Default 1,000.
    public var joinLeaveMaxMembers = 1000
    /// Whether clients may publish (the server can always publish). Default true.
    public var clientsMayPublish = true
    /// Include the publisher's user id in publications. Default true.
    public var showPublisher = true
    /// What a lagging subscriber loses: `disconnect` (close 1008; it reconnects and recovers),
    /// `dropOldest`, or `latest` (only the newest pending publication of the channel is kept). The two
    /// dropping policies are followed by a `gap` push. Default: disconnect.
    public var slowConsumer = SlowConsumerPolicy.disconnect
    /// Who may subscribe, publish, read presence and read history. Default: anyone.
    public var permissions = ChannelPermissions()
    /// Ask the application's backend about every client subscribe (`ProxyConfiguration.subscribeURL`),
    /// after the permissions allowed it. Default off.
    public var proxySubscribe = false
    /// Ask the application's backend about every client publish (`ProxyConfiguration.publishURL`): it may
    /// refuse it or replace its data. Default off.
    public var proxyPublish = false
    /// Report client publications to the event webhook (`WebhookConfiguration`). Default off.
    public var publicationEvents = false

    /// A plain pub/sub namespace: no history, no presence, anyone may do anything.
    public init() {}
}

/// Channel-layer settings: namespaces and per-connection limits.
public struct ChannelsConfiguration: Sendable {
    /// Options per namespace. A channel without a `:` belongs to the namespace "" (the default).
    public var namespaces: [String: NamespaceOptions] = ["": NamespaceOptions()]
    /// Subscriptions one connection may hold. Default 128.
    public var maxSubscriptionsPerConnection = 128
    /// Sustained publishes per second per connection (token bucket). Default 20.
    public var publishRate = 20.0
    /// Publishes allowed in a burst. Default 40.
    public var publishBurst = 40.0
    /// Rejected publishes in a row after which the connection is closed with 1008 (the closing one is the
    /// last rejected). Default 100.
    public var maxRejectedPublishes = 100
    /// How long a command waits for the broker or presence before it is answered with error 110. Default 5 s.
    public var brokerTimeout = TimeAmount.seconds(5)
    /// How long a publish's `idempotency_key` answers for it: a repeat within this publishes nothing and
    /// gets the first one's offset. Default 300 s.
    public var idempotencyWindow = TimeAmount.seconds(300)

    /// Only the default namespace "", with default options, and the default limits.
    public init() {}

    /// A namespace with history, presence and join/leave: what a chat room wants.
    public static var chatDefaults: ChannelsConfiguration {
        var configuration = ChannelsConfiguration()
        var chat = NamespaceOptions()
        chat.historySize = 100
        chat.presence = true
        chat.joinLeave = true
        configuration.namespaces["chat"] = chat
        configuration.namespaces["sys"] = .system
        return configuration
    }
}

extension NamespaceOptions {
    /// `sys`: where the server publishes its own statistics (`sys:stats`, the dashboard's feed). Clients
    /// may not publish; reading needs a connection from this host or an authenticated user.
    public static var system: NamespaceOptions {
        var options = NamespaceOptions()
        options.clientsMayPublish = false
        options.slowConsumer = .latest
        for action in ChannelPermissions.Action.allCases { options.permissions[action] = .localOrAuthenticated }
        return options
    }
}
