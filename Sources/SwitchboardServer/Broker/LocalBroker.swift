import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore

/// The in-process broker, the default for a single node. Channel state is split over lock stripes by
/// channel name, so publishers to different channels rarely meet and there is no global lock. Every
/// call completes at once, on the caller's `eventLoop`.
///
/// Publication and join/leave events are handed to the `BrokerEventHandler` under the channel's stripe
/// lock: that is what keeps each channel in order for every event loop. The handler only queues them
/// (encoding happens later, on the loops), so the lock is held briefly. Lock order: a stripe lock is the
/// innermost lock taken by callers (`NodeSubscriptions` holds its own while subscribing); the handler
/// takes only the event loops' inbox locks under it.
public final class LocalBroker: Broker {
    private let states: StripedTable<ChannelState>
    /// This broker's history continuity: a restart means a new epoch, so clients learn that their
    /// offsets no longer mean anything.
    private let epoch = String(UInt64.random(in: 0...UInt64.max), radix: 36)
    // Lock: guards the delivery target, attached once at start.
    private let target = NIOLockedValueBox<(any BrokerEventHandler)?>(nil)

    private let budget: HistoryBudget
    /// When history was last swept for expired publications in channels nobody touches.
    private let lastSweep = ManagedAtomic<Int64>(0)
    /// When idempotency keys were last swept in channels nobody publishes to again.
    private let lastKeySweep = ManagedAtomic<Int64>(0)

    /// - Parameters:
    ///   - maxHistoryBytes: what all channels' history may take together (with each namespace's
    ///     `historyMaxBytes` per channel). Default 64 MiB.
    ///   - stripes: how many locks the channels are spread over (more: less contention between loops).
    ///   - logger: where the broker logs.
    public init(
        stripes: Int = 64, maxHistoryBytes: Int = 64 << 20, logger: Logger = Logger(label: "switchboard.history")
    ) {
        self.states = StripedTable(stripes: stripes)
        self.budget = HistoryBudget(maxBytes: maxHistoryBytes, logger: logger)
    }

    /// Bytes all channels' history takes now.
    public var historyBytes: Int { budget.usedBytes }

    /// Channels with state (this node subscribed, history, or an offset to keep); idle ones cost nothing.
    public var channelCount: Int { states.count }

    /// Sets the handler events are delivered to, under the channel's stripe lock.
    public func attach(_ handler: any BrokerEventHandler) {
        target.withLockedValue { $0 = handler }
    }

    private static func now() -> Int64 { Int64(NIODeadline.now().uptimeNanoseconds) }

    /// Runs `body` on the channel's state in place, under its stripe lock; forgets the channel if it is
    /// left idle.
    private func withState<T>(_ channel: String, _ body: (inout ChannelState) -> T) -> T {
        states.withChannel(channel) { states in
            let result = body(&states[channel, default: ChannelState(epoch: epoch)])
            if states[channel]?.isIdle == true { states[channel] = nil }
            return result
        }
    }

    /// Hands an event to the handler, checking (in debug builds) that it does not call back into a broker.
    private func deliver(_ body: (any BrokerEventHandler) -> Void) {
        guard let handler = target.withLockedValue({ $0 }) else { return }
        assert(Self.enterDelivery(), "a BrokerEventHandler called back into the broker synchronously")
        body(handler)
        assert(Self.leaveDelivery())
    }

    /// Marks the channel subscribed, so its publications and join/leave events reach the handler.
    public func subscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        checkNotReentrant()
        withState(channel) { $0.subscribed = true }
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Stops delivery for the channel; its history and offset stay.
    public func unsubscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        checkNotReentrant()
        withState(channel) { $0.subscribed = false }
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Assigns the next offset, appends to history (within the namespace's and the node's budgets) and
    /// delivers to the handler if this node is subscribed, all under the channel's lock.
    public func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, idempotency: IdempotencyKey?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        checkNotReentrant()
        let publication = withState(channel) { state -> Publication in
            let now = Self.now()
            state.expire(now: now, options: options, budget: budget)
            if let idempotency, let offset = state.repeated(idempotency.key, now: now) {
                return Publication(offset: offset, data: data, user: user, time: now, isRepeat: true)
            }
            state.offset += 1
            let publication = Publication(offset: state.offset, data: data, user: user, time: now)
            state.append(publication, channel: channel, options: options, budget: budget)
            if let idempotency {
                state.remember(idempotency.key, offset: publication.offset, until: now + idempotency.window.nanoseconds)
            }
            if state.subscribed { deliver { $0.handlePublication(publication, channel: channel) } }
            return publication
        }
        sweepIfFull(now: publication.time)
        if let idempotency { sweepKeys(now: publication.time, window: idempotency.window) }
        return eventLoop.makeSucceededFuture(publication)
    }

    /// History expires when its channel is touched; channels nobody touches again would hold their bytes in
    /// the node's budget for ever and starve the others. Once the budget is 90% used, every channel is
    /// swept (a stripe at a time, at most once a second).
    private func sweepIfFull(now: Int64) {
        guard !budget.fits(budget.maxBytes / 10) else { return }
        let last = lastSweep.load(ordering: .relaxed)
        guard now - last >= 1_000_000_000,
            lastSweep.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        let budget = self.budget
        states.forEachStripe { states in
            for name in Array(states.keys) {
                states[name]?.expire(now: now, budget: budget)
                if states[name]?.isIdle == true { states[name] = nil }
            }
        }
    }

    /// Keys are dropped when their channel is published to again; channels nobody publishes to again would
    /// keep theirs (and so their state) for ever. While keyed publishes go on, every channel's expired keys
    /// are swept, a stripe at a time, at most once per window (or once a minute for long windows).
    private func sweepKeys(now: Int64, window: TimeAmount) {
        let every = min(max(window.nanoseconds, 1_000_000_000), 60_000_000_000)
        let last = lastKeySweep.load(ordering: .relaxed)
        guard now - last >= every,
            lastKeySweep.compareExchange(expected: last, desired: now, ordering: .relaxed).exchanged
        else { return }
        states.forEachStripe { states in
            for name in Array(states.keys) {
                states[name]?.expireKeys(now: now)
                if states[name]?.isIdle == true { states[name] = nil }
            }
        }
    }

    /// Delivers the join to the handler if this node is subscribed to the channel; nothing is stored.
    public func publishJoin(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<
        Void
    > {
        checkNotReentrant()
        withState(channel) { state in
            if state.subscribed { deliver { $0.handleJoin(member, channel: channel) } }
        }
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Delivers the leave to the handler if this node is subscribed to the channel; nothing is stored.
    public func publishLeave(channel: String, member: PresenceMember, on eventLoop: any EventLoop)
        -> EventLoopFuture<Void>
    {
        checkNotReentrant()
        withState(channel) { state in
            if state.subscribed { deliver { $0.handleLeave(member, channel: channel) } }
        }
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Expires old history first; recovers only from this process's epoch and while the missed publications
    /// are all still in history.
    public func recover(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot> {
        checkNotReentrant()
        let snapshot = withState(channel) { state -> SubscribeSnapshot in
            state.expire(now: Self.now(), options: options, budget: budget)
            guard let since, since.epoch == state.epoch else {
                return SubscribeSnapshot(epoch: state.epoch, offset: state.offset, publications: [], recovered: false)
            }
            let (missed, complete) = state.publications(after: since.offset, limit: options.historySize)
            // Without history nothing can be replayed, so recovery is never claimed.
            let recovered = complete && options.historySize > 0
            return SubscribeSnapshot(
                epoch: state.epoch, offset: state.offset, publications: recovered ? missed : [], recovered: recovered)
        }
        return eventLoop.makeSucceededFuture(snapshot)
    }

    /// Expires old history first, then reads the page from what is left.
    public func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<HistoryPage> {
        checkNotReentrant()
        let page = withState(channel) { state -> HistoryPage in
            state.expire(now: Self.now(), options: options, budget: budget)
            let selected = since.map { offset in state.history.filter { $0.offset > offset } } ?? Array(state.history)
            // Without `since`, the newest `limit`; with it, the oldest `limit` after it.
            let publications = since == nil ? Array(selected.suffix(limit)) : Array(selected.prefix(limit))
            return HistoryPage(epoch: state.epoch, offset: state.offset, publications: publications)
        }
        return eventLoop.makeSucceededFuture(page)
    }

    /// Drops the channel's history and returns its bytes to the node's budget.
    public func removeHistory(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        checkNotReentrant()
        withState(channel) { state in state.removeAll(budget: budget) }
        return eventLoop.makeSucceededVoidFuture()
    }

    // MARK: re-entrancy check (debug builds)

    private func checkNotReentrant() {
        assert(!Self.insideDelivery, "a BrokerEventHandler called back into the broker synchronously")
    }

    private static let deliveryKey = "switchboard.LocalBroker.delivering"

    private static var insideDelivery: Bool { Thread.current.threadDictionary[deliveryKey] != nil }

    private static func enterDelivery() -> Bool {
        Thread.current.threadDictionary[deliveryKey] = true
        return true
    }

    private static func leaveDelivery() -> Bool {
        Thread.current.threadDictionary.removeObject(forKey: deliveryKey)
        return true
    }
}
