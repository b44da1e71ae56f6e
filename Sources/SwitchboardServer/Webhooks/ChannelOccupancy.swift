import NIOConcurrencyHelpers
import NIOCore

/// Whether a channel has subscribers anywhere (in a cluster: on any node), for the `occupied` and
/// `vacated` events. A node reports its own first subscriber (`join`) and its last one leaving (`leave`);
/// `settle`, after the vacated delay, decides whether the channel is still empty everywhere. Each change
/// is reported once for the whole cluster: by the node whose call made it.
///
/// Futures may complete on any loop, late or never; callers bound them.
public protocol ChannelOccupancy: Sendable {
    /// This node gained its first subscriber to `channel`. True: the channel had been reported vacant (or
    /// never reported), and is occupied now; report it.
    func join(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool>
    /// This node lost its last subscriber to `channel`.
    func leave(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void>
    /// True: `channel` has had no subscriber anywhere since it was left and had been reported occupied;
    /// report it vacated. False for every later call until it is occupied again.
    func settle(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool>
}

/// Occupancy on a single node.
public final class LocalOccupancy: ChannelOccupancy {
    private struct State {
        var here = false
        var reported = false
    }

    // Lock: guards each channel's state, changed from every event loop.
    private let channels = NIOLockedValueBox<[String: State]>([:])

    /// Nothing occupied yet.
    public init() {}

    /// Occupied now; reported unless it was reported and not vacated since.
    public func join(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        let report = channels.withLockedValue { channels -> Bool in
            let wasReported = channels[channel]?.reported ?? false
            channels[channel] = State(here: true, reported: true)
            return !wasReported
        }
        return eventLoop.makeSucceededFuture(report)
    }

    /// Empty here (and so everywhere).
    public func leave(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        channels.withLockedValue { $0[channel]?.here = false }
        return eventLoop.makeSucceededVoidFuture()
    }

    /// Still empty: reported vacated once, and forgotten.
    public func settle(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        let report = channels.withLockedValue { channels -> Bool in
            guard let state = channels[channel], !state.here else { return false }
            channels[channel] = nil
            return state.reported
        }
        return eventLoop.makeSucceededFuture(report)
    }
}
