import Atomics
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The events the webhook reports, as JSON objects: `type`, `time` (Unix milliseconds), `node`, and the
/// ids that apply (docs/API.md, "Event webhooks").
final class LifecycleEvents: Sendable {
    let sender: WebhookSender
    private let node: String
    private let occupancy: any ChannelOccupancy
    // Lock: guards each channel's latest leave on this node: only the settle it scheduled may report the
    // channel vacated, so a channel emptied, filled and emptied again waits the full delay after the last.
    private let leaves = NIOLockedValueBox<[String: UInt64]>([:])
    private let nextLeave = ManagedAtomic<UInt64>(0)
    /// An occupancy call (Redis, in a cluster) not answered within this is given up: no event.
    static let occupancyTimeout = TimeAmount.seconds(10)

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
        emit("connect", Self.who(session) + ",\"transport\":\"\(session.connection.transport.rawValue)\"")
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
        occupancy.join(channel: channel, on: eventLoop).hop(to: eventLoop).bounded(by: Self.occupancyTimeout)
            .whenSuccess { [self] occupied in
                if occupied { emit("occupied", ",\"channel\":\(ServerMessage.quote(channel))") }
            }
    }

    /// This node's last subscriber to `channel` left: `vacated` if it is still empty everywhere after the
    /// vacated delay (a client reconnecting meanwhile makes no vacated/occupied pair).
    func nodeLeft(_ channel: String, on eventLoop: any EventLoop) {
        let delay = sender.configuration.vacatedDelay
        let leave = nextLeave.wrappingIncrementThenLoad(ordering: .relaxed)
        leaves.withLockedValue { $0[channel] = leave }
        occupancy.leave(channel: channel, on: eventLoop).hop(to: eventLoop).bounded(by: Self.occupancyTimeout)
            .whenComplete { [self] _ in
                eventLoop.scheduleTask(in: delay) {
                    let latest = self.leaves.withLockedValue { leaves -> Bool in
                        guard leaves[channel] == leave else { return false }
                        leaves[channel] = nil
                        return true
                    }
                    guard latest else { return }
                    self.occupancy.settle(channel: channel, on: eventLoop).hop(to: eventLoop)
                        .bounded(by: Self.occupancyTimeout)
                        .whenSuccess { vacated in
                            if vacated { self.emit("vacated", ",\"channel\":\(ServerMessage.quote(channel))") }
                        }
                }
            }
    }

    /// Sends what is queued now and waits (at most `timeout`) for the endpoint to take it: a clean
    /// shutdown loses no event the endpoint would take.
    func flush(within timeout: TimeAmount) async {
        await sender.flush(within: timeout)
    }
}
