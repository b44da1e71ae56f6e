import Foundation
import NIOCore
import NIOPosix

/// A client for Switchboard's channel protocol (client protocol v1, docs/PROTOCOL.md) over one WebSocket
/// connection that it keeps up: it reconnects with backoff and full jitter, resubscribes every channel
/// recovering what was missed, renews its token before it expires, and drops a silent connection.
///
/// Make one per server, `subscribe` (before or after connecting), `connect()`, and iterate each
/// subscription's events; commands (`publish`, `presence`, `history`, `rpc`, `ping`) are async and throw
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
    /// its offset. Not retried: after `.timeout`, `.disconnected` or a 110 whose message says so it may have
    /// been made. With an `idempotencyKey` a retry is safe: publishing again with the same key on the same
    /// channel within the server's idempotency window (300 s by default) publishes nothing and returns the
    /// first one's offset. Without one, check `history` before publishing again when duplicates matter.
    ///
    /// - Parameters:
    ///   - channel: the channel's name (`namespace:name`).
    ///   - data: the publication, one JSON value as text.
    ///   - idempotencyKey: names this publication for retries (1–256 bytes, unique per channel within the
    ///     window: an order id, say); nil publishes without one.
    /// - Returns: the publication's offset (the first one's, for a repeated key).
    @discardableResult
    public func publish(channel: String, data: String, idempotencyKey: String? = nil) async throws -> Int {
        // A malformed command would be answered without its id: refused here instead.
        guard JSONValue.parse(data) != nil else { throw ChannelClientError.invalidJSON }
        var fields = "\"channel\":\(JSONValue.quote(channel)),\"data\":\(data)"
        if let idempotencyKey { fields += ",\"idempotency_key\":" + JSONValue.quote(idempotencyKey) }
        let ok = try await core.command("publish", fields)
        guard let offset = ok["offset"]?.int else { throw ChannelClientError.unexpectedReply(command: "publish") }
        return offset
    }

    /// Publishes `value` encoded as JSON; see `publish(channel:data:idempotencyKey:)`.
    ///
    /// - Parameters:
    ///   - channel: the channel's name (`namespace:name`).
    ///   - value: the publication, encoded with `encoder`.
    ///   - encoder: the encoder for `value`.
    ///   - idempotencyKey: names this publication for retries; see `publish(channel:data:idempotencyKey:)`.
    /// - Returns: the publication's offset (the first one's, for a repeated key).
    @discardableResult
    public func publish(
        channel: String, value: some Encodable, encoder: JSONEncoder = JSONEncoder(), idempotencyKey: String? = nil
    ) async throws -> Int {
        let data = String(decoding: try encoder.encode(value), as: UTF8.self)
        return try await publish(channel: channel, data: data, idempotencyKey: idempotencyKey)
    }

    /// Calls `method` of the application's backend through the server and returns the backend's answer.
    /// Counts against the connection's publish rate (error 106 past it). Not retried: after `.timeout`,
    /// `.disconnected` or a 110 the backend may have run it.
    ///
    /// - Parameters:
    ///   - method: the backend's method, e.g. `getProfile`.
    ///   - data: its argument, one JSON value as text; nil sends none.
    /// - Returns: the backend's `data`, as the JSON text the server sent; nil when the backend returned none.
    /// - Throws: `ChannelClientError.server` with the backend's own code (1000 and up), 110 (temporarily
    ///   unavailable: the backend did not answer in time or failed; retry later), 118 (the backend's answer
    ///   was unusable) or 104 (the server has no backend for `rpc`); `.invalidJSON` when `data` is not one
    ///   JSON value; or the client's own failures.
    public func rpc(method: String, data: String? = nil) async throws -> String? {
        var fields = "\"method\":" + JSONValue.quote(method)
        if let data {
            guard JSONValue.parse(data) != nil else { throw ChannelClientError.invalidJSON }
            fields += ",\"data\":" + data
        }
        let ok = try await core.command("rpc", fields)
        guard case .object = ok.kind else { throw ChannelClientError.unexpectedReply(command: "rpc") }
        return ok["data"]?.text
    }

    /// Calls `method` with `value` encoded as JSON and decodes the backend's answer as `Response`; see
    /// `rpc(method:data:)`. An answer without data decodes as JSON `null`: make `Response` optional for a
    /// method that may return none.
    ///
    /// - Parameters:
    ///   - method: the backend's method, e.g. `getProfile`.
    ///   - value: its argument, encoded with `encoder`.
    ///   - response: the type to decode the answer as.
    ///   - encoder: the encoder for `value`.
    ///   - decoder: the decoder for the answer.
    /// - Returns: the backend's `data`, decoded.
    public func rpc<Response: Decodable>(
        method: String, value: some Encodable, returning response: Response.Type = Response.self,
        encoder: JSONEncoder = JSONEncoder(), decoder: JSONDecoder = JSONDecoder()
    ) async throws -> Response {
        let data = String(decoding: try encoder.encode(value), as: UTF8.self)
        let answer = try await rpc(method: method, data: data) ?? "null"
        return try decoder.decode(Response.self, from: Data(answer.utf8))
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
