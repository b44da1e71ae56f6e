import Atomics
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// Something that happened in a channel, on its way from the broker to each event loop's subscribers:
/// one object for all the loops, queued in each loop's inbox (the same ordered stream as everything
/// else the loop is sent), so a join never overtakes an earlier publication. The frame is encoded once,
/// by the first loop that has a subscriber for it, outside every lock.
final class ChannelEvent: LoopTask {
    enum Kind {
        case publication(Publication)
        case join(PresenceMember)
        case leave(PresenceMember)
        /// The node may have missed events before this one: subscribers recover (`handleResynchronize`).
        case resynchronize
    }

    let channel: String
    let kind: Kind
    private let loops: ChannelsLoops
    private let encoded = ManagedAtomicLazyReference<EncodedFrame>()

    init(channel: String, kind: Kind, loops: ChannelsLoops) {
        self.channel = channel
        self.kind = kind
        self.loops = loops
    }

    /// A publication's offset; nil for join and leave.
    var offset: Int? {
        if case .publication(let publication) = kind { return publication.offset }
        return nil
    }

    /// A publication's epoch, when its broker gives one.
    var epoch: String? {
        if case .publication(let publication) = kind { return publication.epoch }
        return nil
    }

    func run(on shard: LoopShard, alone: Bool) {
        loops.loops[shard.index].deliver(self, alone: alone)
    }

    /// The push for every subscriber (the namespace's options decide whether the publisher is shown).
    func frame(options: NamespaceOptions) -> ByteBuffer {
        if let frame = encoded.load() { return frame.bytes }
        let bytes: ByteBuffer
        switch kind {
        case .publication(let publication):
            bytes = ServerMessage.publication(publication, channel: channel, showUser: options.showPublisher)
        case .join(let member):
            bytes = ServerMessage.membership("join", channel: channel, member: member)
        case .leave(let member):
            bytes = ServerMessage.membership("leave", channel: channel, member: member)
        case .resynchronize:
            bytes = ByteBuffer()
        }
        return encoded.storeIfNilThenLoad(EncodedFrame(bytes)).bytes
    }
}

extension ChannelEvent {
    /// A publication as a positioned event for one-way streams (`EventStreamMessages`), its `id:` in the
    /// subscriber's `epoch` when the broker does not stamp one; anything else as for every subscriber.
    /// Not kept on the event: a loop encodes it once per delivery when it has a stream subscriber, so an
    /// event costs nothing more where none has.
    func eventStreamFrame(options: NamespaceOptions, epoch: String) -> ByteBuffer {
        guard case .publication(let publication) = kind else { return frame(options: options) }
        return EventStreamMessages.publication(publication, channel: channel, epoch: epoch, options: options)
    }
}

final class EncodedFrame: Sendable {
    let bytes: ByteBuffer
    init(_ bytes: ByteBuffer) { self.bytes = bytes }
}
