import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardRedis
import SwitchboardServer

/// Occupancy shared by every node through Redis (`LuaScripts.occupancyJoin`, `occupancySettle`), beside
/// each channel's stream: the occupied and vacated events are reported once for the cluster, by the node
/// whose script made the change. Each node refreshes its entries every third of `presenceTTL`, so the
/// entries of a node that died expire and no longer keep its channels occupied. Not reported: a channel
/// whose last subscribers were on a node that died (nobody leaves it; it reads vacant once they expire).
public final class RedisOccupancy: ChannelOccupancy {
    private let broker: RedisBroker
    private let logger: Logger
    // Lock: guards the channels this node holds, what the refresh re-adds; held while a join or leave is
    // handed to the client (which only queues it), so a refresh never re-adds a channel after its leave.
    private let held = NIOLockedValueBox<Set<String>>([])
    // Lock: guards the refresh task, started and stopped from any thread.
    private let timer = NIOLockedValueBox<RepeatedTask?>(nil)

    /// Uses the broker's Redis instances, hashing and prefix.
    public init(broker: RedisBroker, logger: Logger) {
        self.broker = broker
        self.logger = logger
    }

    private var ttl: TimeAmount { broker.configuration.presenceTTL }
    private var ttlMilliseconds: Int { max(1, Int(ttl.nanoseconds / 1_000_000)) }
    /// The reported flag must outlive the vacated delay after the last leave (however short
    /// `presenceTTL`), or the settle would find it gone and the next subscriber report a second
    /// `occupied`; it lasts a minute past the last refresh.
    private var flagMilliseconds: Int { max(ttlMilliseconds, 60_000) }
    private var node: String { broker.configuration.nodeID }

    private func keys(_ channel: String) -> [String] {
        let prefix = broker.configuration.prefix
        return ["\(prefix).occupancy.\(channel)", "\(prefix).occupied.\(channel)"]
    }

    /// Starts refreshing this node's entries.
    public func start(on eventLoop: any EventLoop) {
        let every = TimeAmount.nanoseconds(max(ttl.nanoseconds / 3, 100_000_000))
        let task = eventLoop.scheduleRepeatedAsyncTask(initialDelay: every, delay: every) { _ in
            self.refresh(on: eventLoop)
        }
        timer.withLockedValue { $0 = task }
    }

    /// Stops refreshing; this node's entries expire within `presenceTTL`.
    public func stop() {
        timer.withLockedValue { $0?.cancel() }
    }

    /// Adds this node; true when that made the channel occupied.
    public func join(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        held.withLockedValue { held in
            held.insert(channel)
            return broker.client(for: channel).run(
                LuaScripts.occupancyJoin, keys: keys(channel),
                arguments: [.string(node), RESPArgument(ttlMilliseconds), RESPArgument(flagMilliseconds)])
        }.map { reply -> Bool in (reply.int ?? 0) == 1 }
    }

    /// Removes this node.
    public func leave(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        held.withLockedValue { held in
            held.remove(channel)
            return broker.client(for: channel).send(
                ["ZREM", .string(keys(channel)[0]), .string(node)], route: keys(channel)[0])
        }.map { _ in }
    }

    /// True when no node has subscribers and the channel was reported occupied (now cleared).
    public func settle(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Bool> {
        broker.client(for: channel).run(LuaScripts.occupancySettle, keys: keys(channel), arguments: [])
            .map { reply -> Bool in (reply.int ?? 0) == 1 }
    }

    private func refresh(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let calls = held.withLockedValue { held in
            held.map { channel in
                broker.client(for: channel).run(
                    LuaScripts.occupancyJoin, keys: keys(channel),
                    arguments: [.string(node), RESPArgument(ttlMilliseconds), RESPArgument(flagMilliseconds)]
                ).map { _ in }
            }
        }
        return EventLoopFuture.whenAllComplete(calls, on: eventLoop).map { [logger] results in
            let failed = results.filter { if case .failure = $0 { true } else { false } }.count
            if failed > 0 { logger.warning("occupancy refresh failed", metadata: ["channels": "\(failed)"]) }
        }
    }
}
