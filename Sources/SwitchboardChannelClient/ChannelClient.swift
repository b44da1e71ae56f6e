import Foundation
import NIOCore
import NIOPosix

/// A client for Switchboard's channel protocol (client protocol v1, docs/PROTOCOL.md) over one WebSocket
/// connection that it keeps up: it reconnects with backoff and full jitter, resubscribes every channel
/// recovering what was missed, renews its token before it expires, and drops a silent connection.
///
/// Make one per server, `subscribe` (before or after connecting), `connect()`, and iterate each
/// subscription's events; commands (`publish`, `presence`, `history`, `ping`) are async and throw
/// `ChannelClientError`. `close()` ends everything: a closed client stays closed.
public final class ChannelClient: Sendable {
    /// The settings it was made with.
    public let configuration: Configuration
    /// Every change of the connection's state, in order (the newest 256 are kept until read). It
    /// finishes after the last state, a `.disconnected` with `willReconnect` false. One consumer.
    public let states: AsyncStream<ConnectionState>
    /// Pushes that belong to no subscription of this client: messages from the application's backend and
    /// events of subscriptions the server made. Buffered until read; one consumer. Finishes on close.
    public let pushes: AsyncStream<ServerPush>
    private let core: ClientCore

    /// Makes a client; nothing connects before `connect()`.
    ///
    /// - Parameters:
    ///   - configuration: the server, credentials, backoff and timeouts.
    ///   - group: the event loops the connection runs on (NIOPosix sockets, on Apple platforms too).
    public init(_ configuration: Configuration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        let (states, stateContinuation) = AsyncStream.makeStream(
            of: ConnectionState.self, bufferingPolicy: .bufferingNewest(256))
        let (pushes, pushContinuation) = AsyncStream.makeStream(of: ServerPush.self)
        self.states = states
        self.pushes = pushes
        self.core = ClientCore(
            configuration: configuration, group: group, states: stateContinuation, pushes: pushContinuation)
    }

    /// The connection's state now (`states` reports each change).
    public var state: ConnectionState { core.current }

    /// Starts connecting in the background and keeps the connection up until `close()` or a disconnect
    /// after which reconnecting cannot help (a refused token, a protocol violation). Returns at once: watch
    /// `states`, or just subscribe and publish (commands wait for the connection, within `commandTimeout`).
    /// Calling it again does nothing.
    public func connect() {
        core.start()
    }

    /// Closes for good: pending commands fail with `.closed`, every subscription's events and `states`
    /// finish, and the connection ends with close code 1000. Returns once the socket is closed. A client
    /// is not closed when released (its subscriptions keep it serving): close it when done.
    public func close() async {
        await core.shutDown(code: 1000, reason: "client closed")?.value
    }

    /// Subscribes to `channel`; usable before `connect()` (the subscribe goes out once connected). The
    /// subscription lasts across reconnects until `unsubscribe()`, a refusal, or `close()`.
    ///
    /// - Parameters:
    ///   - channel: the channel's name (`namespace:name`).
    ///   - recover: after a reconnect, ask for what was missed since the last publication seen (in
    ///     namespaces with history). False: subscribe afresh each time.
    ///   - token: a subscription token, for namespaces that require one. It is sent again on every
    ///     reconnect: once it has expired the resubscribe fails with 113 and the subscription ends.
    /// - Throws: `.alreadySubscribed` when this client is subscribed to `channel`; `.closed` after close.
    public func subscribe(_ channel: String, recover: Bool = true, token: String? = nil) throws -> Subscription {
        try core.subscribe(channel, recover: recover, token: token)
    }

    /// Publishes `data`, one JSON value given as text (subscribers receive it byte for byte), and returns
    /// its offset. Not retried: after `.timeout` or `.disconnected` it may have been made (check `history`
    /// before publishing again when duplicates matter).
    @discardableResult
    public func publish(channel: String, data: String) async throws -> Int {
        // A malformed command would be answered without its id: refused here instead.
        guard JSONValue.parse(data) != nil else { throw ChannelClientError.invalidJSON }
        let ok = try await core.command("publish", "\"channel\":\(JSONValue.quote(channel)),\"data\":\(data)")
        guard let offset = ok["offset"]?.int else { throw ChannelClientError.unexpectedReply(command: "publish") }
        return offset
    }

    /// Publishes `value` encoded as JSON; see `publish(channel:data:)`.
    @discardableResult
    public func publish(
        channel: String, value: some Encodable, encoder: JSONEncoder = JSONEncoder()
    ) async throws -> Int {
        let data = String(decoding: try encoder.encode(value), as: UTF8.self)
        return try await publish(channel: channel, data: data)
    }

    /// Who is in `channel` (namespaces with presence; error 104 elsewhere).
    public func presence(channel: String) async throws -> ChannelPresence {
        let ok = try await core.command("presence", "\"channel\":" + JSONValue.quote(channel))
        guard let presence = ChannelPresence(ok) else { throw ChannelClientError.unexpectedReply(command: "presence") }
        return presence
    }

    /// A page of `channel`'s history (namespaces with history), oldest first: without `since` the newest
    /// `limit` (server default 100), with it the oldest `limit` after that offset.
    public func history(channel: String, limit: Int? = nil, since: Int? = nil) async throws -> ChannelHistory {
        var fields = "\"channel\":" + JSONValue.quote(channel)
        if let limit { fields += ",\"limit\":\(limit)" }
        if let since { fields += ",\"since\":\(since)" }
        let ok = try await core.command("history", fields)
        guard let history = ChannelHistory(ok, channel: channel) else {
            throw ChannelClientError.unexpectedReply(command: "history")
        }
        return history
    }

    /// An application-level round trip to the server.
    public func ping() async throws {
        _ = try await core.command("ping")
    }
}
