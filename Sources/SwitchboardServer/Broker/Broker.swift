import NIOCore
import SwitchboardCore

/// A publication in a channel's stream. `data` is the publisher's JSON, byte for byte.
public struct Publication: Sendable, Equatable {
    /// Place in the channel's stream: one more than the previous publication's, from 1. A channel without
    /// history that nobody subscribes to may be forgotten by `LocalBroker` and start again from 1.
    public let offset: Int
    /// The publisher's JSON value, exactly as sent; it goes to subscribers without re-encoding.
    public let data: String
    /// The publisher's user id; nil for an anonymous client or a publication from the server API.
    public let user: String?
    /// Monotonic nanoseconds when it was published (for history TTL), or, from another node, when this
    /// node received it.
    public let time: Int64
    /// The stream's epoch, from a broker whose epoch can change while a node is subscribed (Redis): a
    /// subscriber at another epoch cannot take its offset as a continuation. Nil from `LocalBroker`, whose
    /// epoch lasts as long as the process.
    public let epoch: String?
    /// The answer to a repeated idempotent publish: this is the first one's offset, and nothing was
    /// published now (so nothing is delivered or reported again).
    public let isRepeat: Bool

    /// Made by brokers; `time` is monotonic nanoseconds (`NIODeadline.now().uptimeNanoseconds`).
    public init(offset: Int, data: String, user: String?, time: Int64, epoch: String? = nil, isRepeat: Bool = false) {
        self.offset = offset
        self.data = data
        self.user = user
        self.time = time
        self.epoch = epoch
        self.isRepeat = isRepeat
    }
}

/// What a subscription starts from: the channel's epoch, its newest offset, and (when recovering)
/// the publications after the client's position, oldest first.
public struct SubscribeSnapshot: Sendable, Equatable {
    /// The stream's current epoch; the client stores it with `offset` to recover later.
    public let epoch: String
    /// The channel's newest offset when the snapshot was taken (0 while the stream has no publication).
    public let offset: Int
    /// The publications missed since the client's position, oldest first; empty unless `recovered`.
    public let publications: [Publication]
    /// True when `publications` is exactly what the client missed since its position.
    public let recovered: Bool

    /// Made by brokers in answer to `Broker.recover(channel:since:options:on:)`.
    public init(epoch: String, offset: Int, publications: [Publication], recovered: Bool) {
        self.epoch = epoch
        self.offset = offset
        self.publications = publications
        self.recovered = recovered
    }
}

/// A page of a channel's history with the stream's current position.
public struct HistoryPage: Sendable, Equatable {
    /// The stream's current epoch; offsets are comparable only within it.
    public let epoch: String
    /// The channel's newest offset, which may be beyond the last publication of the page.
    public let offset: Int
    /// At most the requested `limit`, oldest first as brokers return them (the server API's `reverse`
    /// turns them newest first).
    public let publications: [Publication]

    /// Made by brokers in answer to `Broker.history(channel:since:limit:options:on:)`.
    public init(epoch: String, offset: Int, publications: [Publication]) {
        self.epoch = epoch
        self.offset = offset
        self.publications = publications
    }
}

/// Where a broker hands this node what happens in the channels the node is subscribed to.
///
/// Contract: for one channel, calls arrive in the channel's order (publications in offset order, and
/// join/leave events where they happened among them) and never concurrently with each other. They may
/// come on any thread, possibly while the broker holds a lock of its own: an implementation must return
/// quickly and must not call back into the broker synchronously (`ChannelsApplication` only queues the
/// event for each event loop; `LocalBroker` enforces this with a precondition in debug builds).
public protocol BrokerEventHandler: AnyObject, Sendable {
    func handlePublication(_ publication: Publication, channel: String)
    func handleJoin(_ member: PresenceMember, channel: String)
    func handleLeave(_ member: PresenceMember, channel: String)
    /// This node may have missed events of `channel` (its link to the broker broke and is back, or the
    /// stream's epoch changed under it): each local subscriber recovers from its own position, as a
    /// reconnecting client would, and learns whether that was complete. Comes in the channel's order:
    /// events after it are newer than the break.
    func handleResynchronize(channel: String)
}

/// The seam between the hub and where channel streams live: in this process (`LocalBroker`) or shared
/// by several nodes (Redis). The shape is centrifuge's: a node subscribes to a channel once, when its
/// first local subscriber arrives, and unsubscribes after the last; clients subscribe to the node, never
/// to the broker (with Redis that would be a network round trip per client). Presence is a separate
/// contract (`PresenceManager`).
///
/// Every method may be called from any thread and returns a future that may complete on any event
/// loop, at any later time, or fail (`BrokerError`, or the broker's own errors). Callers hop results to
/// their own loop and bound them with a timeout.
///
/// - `subscribe`/`unsubscribe` are called in order for a channel (the caller serializes them) and take
///   effect in that order: after `subscribe`'s future succeeds, every later publication in the channel
///   reaches the handler, until `unsubscribe`.
/// - `publish` assigns the channel's next offset (one more than the previous publication's, within one
///   epoch), appends the publication to history when the namespace keeps history, and hands it to every
///   subscribed node, atomically with respect to other publications in the channel, so every node sees
///   a channel in offset order. Delivery is at most once: a node not subscribed when a publication is
///   made gets it only through history.
/// - `publishJoin`/`publishLeave` reach subscribed nodes in the channel's order with publications.
/// - `recover` reads the stream's position and, with `since`, the publications after it. A subscriber
///   calls it after its node's `subscribe` succeeded and holds live publications meanwhile, then drops
///   those at or below the snapshot's offset: no gap, no duplicate.
/// - The epoch changes whenever continuity is lost (an in-memory broker restarted, history evicted while
///   offsets were kept); offsets from another epoch say nothing about this one.
public protocol Broker: Sendable {
    /// Sets where fanned-out events go. Called once, before any other call.
    func attach(_ handler: any BrokerEventHandler)
    /// Subscribes this node to `channel`.
    func subscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// Unsubscribes this node from `channel`.
    func unsubscribe(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// With `idempotency`, a repeat of a publish made within its window (same channel, same key)
    /// publishes nothing and answers with the first one's publication, marked `isRepeat`.
    func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, idempotency: IdempotencyKey?,
        on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication>
    func publishJoin(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    func publishLeave(channel: String, member: PresenceMember, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// The stream's epoch and newest offset and, with `since` in the current epoch and within history,
    /// the publications after it (`recovered` true). Without history nothing is ever claimed recovered.
    func recover(
        channel: String, since: StreamPosition?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SubscribeSnapshot>
    /// Without `since`, the newest `limit` publications; with it, the oldest `limit` after that offset.
    func history(
        channel: String, since: Int?, limit: Int, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<HistoryPage>
    /// Empties the channel's history, keeping its epoch and offset: a client recovering from before the
    /// removal is told `recovered: false`, never handed a gap as if it were complete.
    func removeHistory(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
}

extension Broker {
    /// A publish that is not to be deduplicated.
    public func publish(
        channel: String, data: String, user: String?, options: NamespaceOptions, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Publication> {
        publish(channel: channel, data: data, user: user, options: options, idempotency: nil, on: eventLoop)
    }
}

/// What makes a publish safe to repeat (after error 110 "may have been published", say): within `window`,
/// a second publish to the same channel with the same `key` is not made again.
public struct IdempotencyKey: Sendable, Equatable {
    /// The publisher's key, 1–256 bytes (`validate`).
    public let key: String
    /// How long the first publish answers for the key. Default 300 s (`idempotencyWindow`).
    public let window: TimeAmount

    /// A key with its window.
    public init(_ key: String, window: TimeAmount = .seconds(300)) {
        self.key = key
        self.window = window
    }

    /// Longest key accepted, in bytes.
    public static let maxBytes = 256

    /// Whether `key` may serve as an idempotency key: 1–256 bytes.
    public static func isValid(_ key: String) -> Bool { (1...maxBytes).contains(key.utf8.count) }
}

/// Why a broker or presence call failed, in terms a client can be told.
public struct BrokerError: Error, Equatable, Sendable, CustomStringConvertible {
    /// What went wrong, for the logs; clients and API callers are answered with error 110 (unavailable).
    public let description: String
    /// A failure described by `description`.
    public init(_ description: String) { self.description = description }

    /// The call did not complete in time; nothing says whether it took effect.
    public static let timedOut = BrokerError("broker timed out")
    /// The command reached the store but its answer did not come back (a timeout, a link that broke after
    /// sending): it may have been carried out.
    public static let outcomeUnknown = BrokerError("no answer from the broker; the command may have been carried out")
}
