import Foundation
import Logging
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The events the webhook reports, as JSON objects: `type`, `time` (Unix milliseconds), `node`, and the
/// ids that apply (docs/API.md, "Event webhooks").
final class LifecycleEvents: Sendable {
    let sender: WebhookSender
    private let node: String
    private let occupancy: any ChannelOccupancy

    init(sender: WebhookSender, node: String, occupancy: any ChannelOccupancy) {
        self.sender = sender
        self.node = node
        self.occupancy = occupancy
    }

    private func emit(_ type: String, _ fields: String) {
        let time = Int(Date().timeIntervalSince1970 * 1000)
        sender.enqueue("{\"type\":\"\(type)\",\"time\":\(time),\"node\":\(ServerMessage.quote(node))\(fields)}")
    }

    private static func who(_ session: ClientSession) -> String {
        who(client: session.member.clientID, user: session.connection.userID)
    }

    private static func who(client: String, user: String?) -> String {
        let user = user.map { ",\"user\":\(ServerMessage.quote($0))" } ?? ""
        return ",\"client\":\(ServerMessage.quote(client))\(user)"
    }

    func connected(_ session: ClientSession) {
        emit("connect", Self.who(session) + ",\"transport\":\"websocket\"")
    }

    func disconnected(_ session: ClientSession, code: UInt16, reason: String) {
        emit("disconnect", Self.who(session) + ",\"code\":\(code),\"reason\":\(ServerMessage.quote(reason))")
    }

    func subscribed(_ session: ClientSession, to channel: String) {
        emit("subscribe", Self.who(session) + ",\"channel\":\(ServerMessage.quote(channel))")
    }

    func unsubscribed(_ session: ClientSession, from channel: String) {
        emit("unsubscribe", Self.who(session) + ",\"channel\":\(ServerMessage.quote(channel))")
    }

    func published(_ publication: Publication, to channel: String, client: String, user: String?) {
        emit(
            "publication",
            Self.who(client: client, user: user)
                + ",\"channel\":\(ServerMessage.quote(channel)),\"offset\":\(publication.offset),\"data\":\(publication.data)"
        )
    }

    /// This node's first subscriber to `channel`: `occupied` if that made it occupied cluster-wide.
    func nodeJoined(_ channel: String, on eventLoop: any EventLoop) {
        occupancy.join(channel: channel, on: eventLoop).whenSuccess { [self] occupied in
            if occupied { emit("occupied", ",\"channel\":\(ServerMessage.quote(channel))") }
        }
    }

    /// This node's last subscriber to `channel` left: `vacated` if it is still empty everywhere after the
    /// vacated delay (a client reconnecting meanwhile makes no vacated/occupied pair).
    func nodeLeft(_ channel: String, on eventLoop: any EventLoop) {
        let delay = sender.configuration.vacatedDelay
        occupancy.leave(channel: channel, on: eventLoop).whenComplete { [self] _ in
            eventLoop.scheduleTask(in: delay) {
                self.occupancy.settle(channel: channel, on: eventLoop).whenSuccess { vacated in
                    if vacated { self.emit("vacated", ",\"channel\":\(ServerMessage.quote(channel))") }
                }
            }
        }
    }
}
