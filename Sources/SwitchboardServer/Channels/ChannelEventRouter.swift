import Atomics

/// Where the broker's events enter the hub: each event becomes one `ChannelEvent` object queued in the
/// ordered inbox of each loop that has subscribers to its channel, nothing encoded here (this may run under
/// the broker's lock). Each loop then fans it out to its subscribers (`ChannelsLoop`).
final class ChannelEventRouter: BrokerEventHandler {
    /// The loops' channel tables, once the hub is made (`ChannelsApplication.attached(to:)`).
    let attachment: ManagedAtomicLazyReference<ChannelsLoops>
    private let nodeSubscriptions: NodeSubscriptions

    init(attachment: ManagedAtomicLazyReference<ChannelsLoops>, nodeSubscriptions: NodeSubscriptions) {
        self.attachment = attachment
        self.nodeSubscriptions = nodeSubscriptions
    }

    func handlePublication(_ publication: Publication, channel: String) { submit(channel, .publication(publication)) }

    func handleJoin(_ member: PresenceMember, channel: String) { submit(channel, .join(member)) }

    func handleLeave(_ member: PresenceMember, channel: String) { submit(channel, .leave(member)) }

    func handleResynchronize(channel: String) { submit(channel, .resynchronize) }

    private func submit(_ channel: String, _ kind: ChannelEvent.Kind) {
        guard let loops = attachment.load() else { return }
        let receiving = nodeSubscriptions.loops(receiving: channel)
        guard !receiving.isEmpty else { return }
        let event = ChannelEvent(channel: channel, kind: kind, loops: loops)
        let shards = loops.hub.loopShards
        for index in receiving where shards.indices.contains(index) { shards[index].submit(event) }
    }
}
