import Atomics
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// One connection's channel-layer state, owned by its event loop's `ChannelsLoop`.
final class ClientSession {
    let connection: any LocalConnection
    /// The connection as presence shows it (its info only if it is JSON, since it is sent as is).
    var member: PresenceMember
    /// Where the connection is in authenticating: commands other than `connect` and `ping` wait while
    /// a `connect` is being verified, and are refused before it where anonymous access is not allowed.
    var authState = AuthState.awaitingConnect
    /// Commands that arrived while `connect` was being verified, run once it is.
    var held: [ClientCommand] = []
    /// Closes a connection that has not authenticated in time.
    var connectTimer: Scheduled<Void>?
    /// The token's `exp` (Unix seconds), for the connect and refresh replies.
    var expiresAt: Double?
    /// A `connect` was sent: the connection never becomes anonymous implicitly after it.
    var connectAttempted = false
    /// Refresh and subscription tokens refused on this connection.
    var refusedTokens = 0
    var subscriptions: [String: Subscription] = [:]
    /// Channels with a subscribe in flight at the broker, each with the subscribe and unsubscribe
    /// commands that arrived meanwhile: they run in order once it completes, so every command gets
    /// exactly one reply, in order per channel, and the last command decides the final state.
    var waiting: [String: [Pending]] = [:]
    var nextGeneration: UInt64 = 0
    var bucket: TokenBucket
    var rejectedPublishes = 0
    /// The connection closed: answers that arrive later are dropped.
    var isClosed = false
    /// The upgrade's headers that go with every question to the application's backend.
    var forwardedHeaders = HTTPHeaders()
    /// Per channel, the last proxied publish still to be answered: the next waits for it, so publishes reach
    /// the broker in the order sent whatever order the backend answers in.
    var publishTail: [String: EventLoopFuture<Void>] = [:]
    /// The webhook was told of this connection (its `connect`): its `disconnect` follows.
    var announced = false
    /// Questions to the backend (publish, rpc) waiting for their answer: bounded, so one connection cannot
    /// tie up the backend's connection pool.
    var proxyCalls = 0
    /// A one-way event stream: what has a position goes as positioned events (`EventStreamMessages`).
    var eventStream = false
    /// The HTTP transport's secret: a `POST` naming this session must carry it.
    var streamSecret: String?
    /// Per channel, the last presence operation (join or leave) started: the next one waits for it.
    private var presenceTail: [String: PresenceStep] = [:]

    init(connection: any LocalConnection, bucket: TokenBucket, presenceData: String?, node: String?) {
        self.connection = connection
        self.bucket = bucket
        self.member = PresenceMember(client: connection.id, user: connection.userID, data: presenceData, node: node)
    }

    enum AuthState { case awaitingConnect, connecting, connected }

    /// What waits behind a subscribe in flight: a client's command, or the server API's own.
    enum Pending {
        case client(ClientCommand)
        case serverSubscribe(StreamPosition?)
        case serverUnsubscribe
    }

    var id: ConnectionID { connection.id }

    /// Queues the server API's subscribe or unsubscribe behind the one in flight; only the last of a run
    /// of them matters, so it replaces a server entry at the end rather than growing the queue.
    func queueServer(_ pending: Pending, for channel: String) {
        var queue = waiting[channel] ?? []
        if let last = queue.last, case .client = last {
            queue.append(pending)
        } else if queue.isEmpty {
            queue.append(pending)
        } else {
            queue[queue.count - 1] = pending
        }
        waiting[channel] = queue
    }

    /// Starts `operation` (a presence add with its join, or a remove with its leave) once the previous one
    /// for `channel` has completed, whatever became of it. A store may answer late and commands may take
    /// different paths to it, so subscribe → unsubscribe → subscribe must not let the second add reach it
    /// before the first remove (which would delete the new entry: same client id). Called on `loop`.
    func presenceInOrder(
        _ channel: String, on loop: any EventLoop, _ operation: @escaping @Sendable () -> EventLoopFuture<Void>
    ) -> EventLoopFuture<Void> {
        let next: EventLoopFuture<Void>
        if let previous = presenceTail[channel]?.future, presenceTail[channel]?.isDone == false {
            next = previous.flatMapError { _ in previous.eventLoop.makeSucceededVoidFuture() }.flatMap(operation)
        } else {
            next = operation()
        }
        // Finished steps are forgotten without a hop back to this loop (which may be gone by then): their
        // completion sets a flag, and entries are swept once they outnumber the subscriptions.
        if presenceTail.count > 2 * subscriptions.count + 16 { presenceTail = presenceTail.filter { !$0.value.isDone } }
        presenceTail[channel] = PresenceStep(next)
        return next
    }

    func cancelTimers() {
        connectTimer?.cancel()
        connectTimer = nil
    }

    /// Replies, errors and notices: never dropped, flushed with the rest of the loop's batch.
    func reply(_ frame: ByteBuffer) { connection.send(frame, as: .reliable, flush: false) }
}

/// A presence operation in flight, and whether it has completed (set on whatever loop completes it).
final class PresenceStep: Sendable {
    let future: EventLoopFuture<Void>
    private let done = ManagedAtomic(false)

    init(_ future: EventLoopFuture<Void>) {
        self.future = future
        future.whenComplete { [done] _ in done.store(true, ordering: .releasing) }
    }

    var isDone: Bool { done.load(ordering: .acquiring) }
}

extension LocalConnection {
    /// The channel layer's session of this connection, from its opening to its close.
    var session: ClientSession? { applicationState as? ClientSession }
}
