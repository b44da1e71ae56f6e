import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// One connection's channel-layer state, owned by its event loop's `ChannelsShard`.
final class ClientSession {
    enum SubscriptionState {
        /// Waiting for the broker's snapshot; live publications wait here, in order.
        case recovering([(Publication, ByteBuffer, DeliveryLane)])
        /// Delivering; publications at or below `lastOffset` are duplicates of the snapshot.
        case live(lastOffset: Int)
    }

    let handle: ConnectionHandle
    var subscriptions: [String: SubscriptionState] = [:]
    var bucket: TokenBucket
    var rejectedPublishes = 0

    /// The connection's info as presence shows it: only if it is JSON, since it is sent as is.
    let presenceData: String?

    init(handle: ConnectionHandle, bucket: TokenBucket, presenceData: String?) {
        self.handle = handle
        self.bucket = bucket
        self.presenceData = presenceData
    }

    var member: PresenceMember { PresenceMember(client: handle.id, user: handle.userID, data: presenceData) }

    /// Replies, errors and notices: never dropped.
    func send(_ frame: ByteBuffer) { handle.send(frame: frame, as: .reliable) }

    func send(_ frame: ByteBuffer, lane: DeliveryLane) { handle.send(frame: frame, as: .lane(lane)) }
}
