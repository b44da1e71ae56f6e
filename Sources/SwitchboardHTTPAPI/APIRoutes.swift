import Foundation
import Hummingbird
import NIOCore
import NIOPosix
import SwitchboardCore
import SwitchboardServer

/// One handler per endpoint: read the body's fields, call the application, answer JSON.
struct APIRoutes: Sendable {
    let application: ChannelsApplication
    let limit: Int
    let nodeName: String
    let started: Date

    private var loop: any EventLoop { MultiThreadedEventLoopGroup.singleton.next() }

    func handle(_ endpoint: String, _ body: JSONObject) async throws -> Response {
        switch endpoint {
        case "publish":
            let publication = try await application.publish(
                channel: try body.requiredString("channel"), data: try body.requiredJSON("data"),
                idempotencyKey: try body.string("idempotency_key"), on: loop
            ).get()
            return APIResponse.json("{\"offset\":\(publication.offset)}")
        case "broadcast":
            let channels = try body.requiredStrings("channels")
            guard channels.allSatisfy(ChannelName.validate) else { throw ProtocolError.invalidChannel }
            let results = try await application.broadcast(
                channels: channels, data: try body.requiredJSON("data"), on: loop
            )
            .get()
            let items = zip(channels, results).map { channel, result in
                switch result {
                case .success(let publication):
                    return "{\"channel\":\(APIResponse.quote(channel)),\"offset\":\(publication.offset)}"
                case .failure(let error):
                    let failure = error as? ProtocolError ?? .unavailable
                    return "{\"channel\":\(APIResponse.quote(channel)),\"error\":{\"code\":\(failure.code),"
                        + "\"message\":\(APIResponse.quote(failure.message))}}"
                }
            }
            return APIResponse.json("{\"results\":[\(items.joined(separator: ","))]}")
        case "send":
            try await application.send(
                toUser: try body.requiredString("user"), data: try body.requiredJSON("data"), on: loop
            ).get()
            return APIResponse.json("{}")
        case "subscribe":
            try await application.subscribe(
                user: try body.requiredString("user"), to: try body.requiredString("channel"), on: loop
            )
            .get()
            return APIResponse.json("{}")
        case "unsubscribe":
            try await application.unsubscribe(
                user: try body.requiredString("user"), from: try body.requiredString("channel"), on: loop
            ).get()
            return APIResponse.json("{}")
        case "disconnect":
            return try await disconnect(body)
        case "refresh":
            // Required, null included: a typo must not lift every connection's expiry.
            guard body.has("expires_at") else { throw ProtocolError.badRequest("missing expires_at") }
            if let expiresAt = try body.number("expires_at", nullable: true), !(0...1e11).contains(expiresAt) {
                throw ProtocolError.badRequest("expires_at must be Unix seconds")
            }
            let count = try await application.refresh(
                user: try body.requiredString("user"), expiresAt: try body.number("expires_at", nullable: true),
                on: loop
            ).get()
            return APIResponse.json("{\"connections\":\(count)}")
        case "presence", "presence_stats":
            let channel = try body.requiredString("channel")
            let snapshot =
                try await endpoint == "presence"
                ? application.presence(channel: channel, on: loop).get()
                : application.presenceCounts(channel: channel, on: loop).get()
            var json = "{\"connections\":\(snapshot.connections),\"users\":\(snapshot.users)"
            if endpoint == "presence" {
                json += ",\"members\":[" + snapshot.members.map(\.json).joined(separator: ",") + "]"
            }
            return APIResponse.json(json + "}")
        case "history":
            let limit = try body.integer("limit") ?? 100
            let page = try await application.history(
                channel: try body.requiredString("channel"), limit: limit, since: try body.integer("since"),
                reverse: try body.bool("reverse") ?? false, on: loop
            ).get()
            let publications = page.publications.map {
                ServerMessage.publicationJSON($0, channel: nil, showUser: true, push: false)
            }
            return APIResponse.json(
                "{\"epoch\":\(APIResponse.quote(page.epoch)),\"offset\":\(page.offset),"
                    + "\"publications\":[\(publications.joined(separator: ","))]}")
        case "history_remove":
            try await application.removeHistory(channel: try body.requiredString("channel"), on: loop).get()
            return APIResponse.json("{}")
        case "channels":
            let channels = try await application.channels(matching: try body.string("pattern"), on: loop).get()
            let items = channels.map {
                "{\"channel\":\(APIResponse.quote($0.channel)),\"subscribers\":\($0.subscribers)}"
            }
            return APIResponse.json("{\"channels\":[\(items.joined(separator: ","))]}")
        default:
            let statistics = try await application.statistics(on: loop).get()
            let nodes = try await application.nodes(on: loop).get().map { node in
                "{\"id\":\(APIResponse.quote(node.id)),\"name\":\(APIResponse.quote(node.name)),"
                    + "\"connections\":\(node.connections),\"users\":\(node.users),\"channels\":\(node.channels),"
                    + "\"subscriptions\":\(node.subscriptions),\"uptime_seconds\":\(node.uptimeSeconds)}"
            }
            return APIResponse.json(
                "{\"node\":\(APIResponse.quote(nodeName)),\"version\":\"\(APIServer.version)\","
                    + "\"uptime_seconds\":\(Int(Date().timeIntervalSince(started))),"
                    + "\"connections\":\(statistics.connections),\"users\":\(statistics.users),"
                    + "\"channels\":\(statistics.channels),\"subscriptions\":\(statistics.subscriptions),"
                    + "\"nodes\":[\(nodes.joined(separator: ","))]}")
        }
    }

    private func disconnect(_ body: JSONObject) async throws -> Response {
        let user = try body.string("user")
        let client = try body.string("client")
        let code = try body.integer("code") ?? Int(CloseCode.disconnected.rawValue)
        guard (3000...4999).contains(code) else { throw ProtocolError.badRequest("code must be 3000–4999") }
        let reason = try body.string("reason") ?? "disconnected by server"
        guard reason.count <= 123, reason.utf8.count <= 123 else {
            throw ProtocolError.badRequest("reason must be at most 123 bytes")
        }
        let reconnect = try body.bool("reconnect") ?? true
        let closeCode = CloseCode(UInt16(code))
        switch (user, client) {
        case (let user?, nil):
            let count = try await application.disconnect(
                user: user, code: closeCode, reason: reason, reconnect: reconnect, on: loop
            ).get()
            return APIResponse.json("{\"disconnected\":\(count)}")
        case (nil, let client?):
            let closed = try await application.disconnect(
                client: client, code: closeCode, reason: reason, reconnect: reconnect, on: loop
            ).get()
            return APIResponse.json("{\"disconnected\":\(closed ? 1 : 0)}")
        default:
            throw ProtocolError.badRequest("give either user or client")
        }
    }
}
