import Foundation
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// What the upgrade leaves for the channel layer when the backend takes part: the token's claims or the
/// connect proxy's grant, and the request headers later events forward.
struct UpgradeContext: Sendable {
    var claims: TokenClaims?
    var grant: ConnectGrant?
    var forwardedHeaders: HTTPHeaders
}

/// The connect proxy's `result`.
struct ConnectGrant: Sendable {
    /// The user id; nil is anonymous (the backend said "").
    var user: String?
    /// Unix seconds; nil: the connection does not expire.
    var expireAt: Double?
    /// Presence data, as JSON text.
    var info: String?
    /// Sent to the client in the connect reply, as JSON text.
    var data: String?
    /// Subscribed on the server's initiative at once.
    var channels: [String]

    init(_ result: JSONObject) throws {
        guard let user = try result.string("user") else { throw ProtocolError.badRequest("result.user is required") }
        self.user = user.isEmpty ? nil : user
        expireAt = try result.number("expire_at", nullable: true)
        if let expireAt, !(0...1e11).contains(expireAt) {
            throw ProtocolError.badRequest("result.expire_at must be Unix seconds")
        }
        // Already past: the connection would be closed at once and reconnect into the backend in a loop.
        if let expireAt, expireAt <= Date().timeIntervalSince1970 {
            throw ProtocolError.badRequest("result.expire_at is in the past")
        }
        info = result.json("info")
        data = result.json("data")
        channels = try result.strings("channels") ?? []
        guard channels.allSatisfy(ChannelName.validate) else {
            throw ProtocolError.badRequest("result.channels must be channel names")
        }
    }
}

extension LocalConnection {
    /// The upgrade's context, when the backend takes part.
    var upgradeContext: UpgradeContext? { upgradeAttachment as? UpgradeContext }
    /// The claims of the token the upgrade carried, if any.
    var tokenClaims: TokenClaims? { upgradeAttachment as? TokenClaims ?? upgradeContext?.claims }
    /// The upgrade decision's attachment (an event stream's request carries it inside).
    private var upgradeAttachment: (any Sendable)? { (attachment as? EventStreamRequest)?.inner ?? attachment }
}

extension EventProxy {
    /// Asks the backend about `session`'s event: the body names the connection (`client`), the transport
    /// and the user, then `fields` (each value JSON text, data as the client sent it).
    func ask(
        _ event: Event, for session: ClientSession, _ fields: KeyValuePairs<String, String?> = [:],
        on eventLoop: any EventLoop, check: @escaping @Sendable (JSONObject) throws -> Void = { _ in }
    ) -> EventLoopFuture<ProxyAnswer> {
        var body =
            "{\"client\":\(ServerMessage.quote(session.member.clientID)),\"transport\":\"\(session.connection.transport.rawValue)\""
        if let user = session.connection.userID { body += ",\"user\":\(ServerMessage.quote(user))" }
        for (key, value) in fields {
            guard let value else { continue }
            body += ",\"\(key)\":\(value)"
        }
        return call(event, body: body + "}", headers: session.forwardedHeaders, on: eventLoop, check: check)
    }
}
