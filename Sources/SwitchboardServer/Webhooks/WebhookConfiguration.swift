import NIOCore

/// Where the server tells the application's backend what happened: batches of lifecycle events
/// (connect, disconnect, subscribe, unsubscribe, occupied, vacated, and client publications where a
/// namespace asks), POSTed as JSON, signed, and retried until the endpoint takes them (docs/API.md,
/// "Event webhooks").
public struct WebhookConfiguration: Sendable, Equatable {
    /// Where batches are POSTed.
    public var url: String
    /// The HMAC-SHA256 key that signs every batch (`X-Switchboard-Signature: sha256=<hex>`).
    public var secret: String
    /// Events in one batch at most. Default 100.
    public var batchSize: Int
    /// How long an event waits for its batch to fill before the batch goes anyway. Default 1 s.
    public var maxDelay: TimeAmount
    /// Events waiting at most (while the endpoint fails, say); past it new events are dropped, counted
    /// and logged. Default 10,000.
    public var maxQueuedEvents: Int
    /// Bytes the waiting events may take at most (publications carry their data). Default 16 MiB.
    public var maxQueuedBytes: Int = 16 << 20
    /// How long the endpoint has to answer a batch before it is tried again. Default 10 s.
    public var timeout: TimeAmount
    /// How long a channel must stay empty before it is reported vacated: a client reconnecting within it
    /// makes no vacated/occupied pair. Default 5 s.
    public var vacatedDelay: TimeAmount

    /// Batches to `url`, signed with `secret`.
    public init(
        url: String, secret: String, batchSize: Int = 100, maxDelay: TimeAmount = .seconds(1),
        maxQueuedEvents: Int = 10_000, timeout: TimeAmount = .seconds(10), vacatedDelay: TimeAmount = .seconds(5)
    ) {
        self.url = url
        self.secret = secret
        self.batchSize = batchSize
        self.maxDelay = maxDelay
        self.maxQueuedEvents = maxQueuedEvents
        self.timeout = timeout
        self.vacatedDelay = vacatedDelay
    }
}
