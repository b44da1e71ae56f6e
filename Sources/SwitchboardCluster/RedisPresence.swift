import Logging
import NIOConcurrencyHelpers
import NIOCore
import SwitchboardCore
import SwitchboardRedis
import SwitchboardServer

/// Presence shared by every node through Redis: per channel, a hash of members, a sorted set of their
/// expiry times and a hash of connection counts per user (`LuaScripts`). Each node refreshes its own
/// members every third of `presenceTTL`; the members of a node that died expire within the TTL, and
/// every call removes expired members first. Counts are read in O(1) (two `HLEN`s).
public final class RedisPresence: PresenceManager {
    private let broker: RedisBroker
    private let logger: Logger
    /// This node's members per channel (client id → encoded member), what the timer refreshes.
    // Lock: guards the local member table, and is held while a change's command is handed to the client
    // (which only queues it, on the channel's one connection): so a refresh's re-add is sent wholly
    // before or after a remove, never resurrecting a member that left. Never held across waiting for I/O.
    private let local = NIOLockedValueBox<[String: [String: String]]>([:])
    private let timer: NIOLockedValueBox<RepeatedTask?> = NIOLockedValueBox(nil)

    /// Uses the broker's Redis instances and hashing, so a channel's presence lives beside its stream.
    public init(broker: RedisBroker, logger: Logger) {
        self.broker = broker
        self.logger = logger
    }

    private var ttl: TimeAmount { broker.configuration.presenceTTL }
    private var ttlMilliseconds: Int { max(1, Int(ttl.nanoseconds / 1_000_000)) }

    /// Starts refreshing this node's members.
    public func start(on eventLoop: any EventLoop) {
        let every = TimeAmount.nanoseconds(max(ttl.nanoseconds / 3, 100_000_000))
        let task = eventLoop.scheduleRepeatedAsyncTask(initialDelay: every, delay: every) { _ in
            self.refresh(on: eventLoop)
        }
        timer.withLockedValue { $0 = task }
    }

    /// Stops refreshing this node's members, which then expire from Redis within `presenceTTL`.
    public func stop() {
        timer.withLockedValue { $0?.cancel() }
    }

    private func keys(_ channel: String) -> [String] {
        let prefix = broker.configuration.prefix
        return [
            "\(prefix).presence.\(channel)", "\(prefix).presence-expiry.\(channel)",
            "\(prefix).presence-users.\(channel)",
        ]
    }

    private func client(for channel: String) -> RedisClient { broker.client(for: channel) }

    /// Adds the member on the channel's instance and remembers it for the periodic refresh.
    public func add(_ member: PresenceMember, to channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<Int> {
        let encoded = ClusterWire.member(member)
        return local.withLockedValue { table in
            table[channel, default: [:]][member.clientID] = encoded
            return client(for: channel).run(
                LuaScripts.presenceAdd, keys: keys(channel),
                arguments: [RESPArgument(ttlMilliseconds), .string(member.clientID), .string(encoded)])
        }.flatMapThrowing { reply in
            guard let count = reply.int else { throw RedisError.protocolViolation("unexpected presence reply") }
            return Int(count)
        }
    }

    /// Forgets the member here and removes it in Redis; nil when Redis did not have it.
    public func remove(_ member: PresenceMember, from channel: String, on eventLoop: any EventLoop)
        -> EventLoopFuture<Int?>
    {
        local.withLockedValue { table in
            table[channel]?[member.clientID] = nil
            if table[channel]?.isEmpty == true { table[channel] = nil }
            return client(for: channel).run(
                LuaScripts.presenceRemove, keys: keys(channel), arguments: [.string(member.clientID)])
        }.flatMapThrowing { reply in
            guard let count = reply.int else { throw RedisError.protocolViolation("unexpected presence reply") }
            return count < 0 ? nil : Int(count)
        }
    }

    /// Every unexpired member on any node, sorted by client id, with the counts.
    public func presence(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        read(channel, members: true)
    }

    /// The counts only, without transferring the member list.
    public func presenceCounts(channel: String, on eventLoop: any EventLoop) -> EventLoopFuture<PresenceSnapshot> {
        read(channel, members: false)
    }

    private func read(_ channel: String, members: Bool) -> EventLoopFuture<PresenceSnapshot> {
        client(for: channel).run(LuaScripts.presenceRead, keys: keys(channel), arguments: [members ? "1" : "0"])
            .flatMapThrowing { reply in
                guard let parts = reply.elements, parts.count == 3, let connections = parts[0].int,
                    let users = parts[1].int
                else { throw RedisError.protocolViolation("unexpected presence reply") }
                let list = (parts[2].elements ?? []).compactMap { value -> PresenceMember? in
                    guard case .bulkString(let bytes) = value else { return nil }
                    return ClusterWire.member(Array(bytes.readableBytesView)[...])
                }
                return PresenceSnapshot(
                    members: list.sorted { $0.clientID < $1.clientID }, connections: Int(connections),
                    users: Int(users))
            }
    }

    /// Re-adds every member of this node, one script call per channel (in slices of 100 members), so
    /// they outlive the TTL for as long as the node does; a member missing after a Redis restart comes back.
    private func refresh(on eventLoop: any EventLoop) -> EventLoopFuture<Void> {
        let calls = local.withLockedValue { table -> [EventLoopFuture<Void>] in
            var calls: [EventLoopFuture<Void>] = []
            for (channel, members) in table {
                let pairs = members.flatMap { [RESPArgument.string($0.key), .string($0.value)] }
                for start in stride(from: 0, to: pairs.count, by: 200) {
                    let slice = pairs[start..<min(start + 200, pairs.count)]
                    calls.append(
                        client(for: channel).run(
                            LuaScripts.presenceAdd, keys: keys(channel),
                            arguments: [RESPArgument(ttlMilliseconds)] + slice
                        ).map { _ in })
                }
            }
            return calls
        }
        return EventLoopFuture.whenAllComplete(calls, on: eventLoop).map { [logger] results in
            let failed = results.filter { if case .failure = $0 { true } else { false } }.count
            if failed > 0 { logger.warning("presence refresh failed", metadata: ["channels": "\(failed)"]) }
        }
    }
}
