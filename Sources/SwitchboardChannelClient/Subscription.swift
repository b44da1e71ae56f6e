/// A subscription to one channel, kept across reconnects: after each one the client subscribes again,
/// recovering from the last position it saw, so every publication arrives once and in order (or
/// `.subscribed(recovered: false)` says some are lost).
public final class Subscription: Sendable {
    /// The channel subscribed to.
    public let channel: String
    /// The subscription's events, in order. One consumer: iterate it from one task. It finishes after
    /// `unsubscribe()`, when the server ends or refuses the subscription, and when the client closes.
    /// Cancelling the task iterating it ends the subscription too (a stream cannot be iterated again).
    /// Events are buffered until read.
    public let events: AsyncStream<SubscriptionEvent>
    private let entry: UInt64
    private let core: ClientCore

    init(channel: String, events: AsyncStream<SubscriptionEvent>, entry: UInt64, core: ClientCore) {
        self.channel = channel
        self.events = events
        self.entry = entry
        self.core = core
    }

    /// Ends the subscription: the server is told when connected, `events` finishes, and the channel may be
    /// subscribed to again.
    public func unsubscribe() {
        core.unsubscribe(channel, entry: entry)
    }
}

extension Subscription: AsyncSequence {
    /// Each event of `events`.
    public typealias Element = SubscriptionEvent

    /// Iterates `events`: `for await event in subscription { … }`.
    public func makeAsyncIterator() -> AsyncStream<SubscriptionEvent>.Iterator {
        events.makeAsyncIterator()
    }
}
