import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// One connection's channel-layer state, owned by its event loop's `ChannelsLoop`.
final class ClientSession {
    let connection: any LocalConnection
    /// The connection as presence shows it (its info only if it is JSON, since it is sent as is).
    let member: PresenceMember
    var subscriptions: [String: Subscription] = [:]
    /// Channels with a subscribe in flight at the broker, each with the subscribe and unsubscribe
    /// commands that arrived meanwhile: they run in order once it completes, so every command gets
    /// exactly one reply, in order per channel, and the last command decides the final state.
    var waiting: [String: [ClientCommand]] = [:]
    var nextGeneration: UInt64 = 0
    var bucket: TokenBucket
    var rejectedPublishes = 0
    /// The connection closed: answers that arrive later are dropped.
    var isClosed = false

    init(connection: any LocalConnection, bucket: TokenBucket, presenceData: String?) {
        self.connection = connection
        self.bucket = bucket
        self.member = PresenceMember(client: connection.id, user: connection.userID, data: presenceData)
    }

    var id: ConnectionID { connection.id }

    /// Replies, errors and notices: never dropped, flushed with the rest of the loop's batch.
    func reply(_ frame: ByteBuffer) { connection.send(frame, as: .reliable, flush: false) }
}
