import NIOCore
import Testing

@testable import SwitchboardCore

@Suite("Outbound queue", .timeLimit(.minutes(5)))
struct OutboundQueueTests {
    private func frame(_ size: Int) -> ByteBuffer { ByteBuffer(repeating: 1, count: size) }

    @Test func keepsOrderWithinBounds() {
        var queue = OutboundQueue(maxBytes: 100, maxMessages: 10, policy: .disconnect)
        for size in 1...4 { #expect(queue.enqueue(frame(size)) == .queued) }
        #expect(queue.byteCount == 10)
        #expect((1...4).map { _ in queue.popFirst()?.frame.readableBytes } == [1, 2, 3, 4])
        #expect(queue.isEmpty && queue.byteCount == 0)
    }

    @Test func disconnectPolicyOverflowsOnBytesOrCount() {
        var queue = OutboundQueue(maxBytes: 100, maxMessages: 3, policy: .disconnect)
        #expect(queue.enqueue(frame(60)) == .queued)
        #expect(queue.enqueue(frame(50)) == .overflow)
        #expect(queue.enqueue(frame(10)) == .queued)
        #expect(queue.enqueue(frame(10)) == .queued)
        #expect(queue.enqueue(frame(1)) == .overflow)
        #expect(queue.count == 3)
    }

    @Test func dropOldestMakesRoom() {
        var queue = OutboundQueue(maxBytes: 100, maxMessages: 3, policy: .dropOldest)
        for size in [40, 30, 20] { _ = queue.enqueue(frame(size)) }
        #expect(queue.enqueue(frame(50)) == .queuedAfterDropping(1))
        #expect(queue.count == 3)
        #expect(queue.byteCount == 100)
        #expect(queue.enqueue(frame(5)) == .queuedAfterDropping(1))  // now the message count binds
        #expect(queue.popFirst()?.frame.readableBytes == 20)
        #expect(queue.removeAll() == 2)
        #expect(queue.byteCount == 0)
    }
}

@Suite("Outbound queue lanes", .timeLimit(.minutes(5)))
struct OutboundQueueLaneTests {
    private func frame(_ size: Int) -> ByteBuffer { ByteBuffer(repeating: 1, count: size) }

    @Test func latestKeepsOnlyTheNewestPendingMessagePerLane() {
        var queue = OutboundQueue(maxBytes: 1000, maxMessages: 100, policy: .disconnect)
        let prices = DeliveryLane(name: "prices", policy: .latest)
        let chat = DeliveryLane(name: "chat", policy: .disconnect)
        #expect(queue.enqueue(frame(1), as: .lane(prices)) == .queued)
        #expect(queue.enqueue(frame(2), as: .lane(chat)) == .queued)
        #expect(queue.enqueue(frame(3), as: .lane(prices)) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(4), as: .lane(prices)) == .queuedAfterDropping(1))
        #expect(queue.count == 2)
        #expect(queue.takeGap(for: prices) == 2)
        #expect(queue.takeGap(for: chat) == nil)
        #expect(queue.popFirst()?.frame.readableBytes == 2)
        #expect(queue.popFirst()?.frame.readableBytes == 4)
    }

    @Test func laneDropsAreRecordedAsGapsAndDisconnectLanesOverflow() {
        var queue = OutboundQueue(maxBytes: 10, maxMessages: 100, policy: .disconnect)
        let feed = DeliveryLane(name: "feed", policy: .dropOldest)
        let strict = DeliveryLane(name: "strict", policy: .disconnect)
        for _ in 0..<5 { _ = queue.enqueue(frame(2), as: .lane(feed)) }
        #expect(queue.enqueue(frame(4), as: .lane(feed)) == .queuedAfterDropping(2))
        #expect(queue.enqueue(frame(1), as: .lane(strict)) == .overflow)
        #expect(queue.takeAllGaps() == [feed: 2])
        #expect(!queue.hasGaps)
    }

    /// Before: a dropping lane's overflow dropped from the head whatever it was, replies included.
    @Test func overflowOfADroppingLaneNeverDropsReliableOrDisconnectLaneMessages() {
        var queue = OutboundQueue(maxBytes: 1000, maxMessages: 6, policy: .disconnect)
        let feed = DeliveryLane(name: "feed", policy: .dropOldest)
        let strict = DeliveryLane(name: "strict", policy: .disconnect)
        #expect(queue.enqueue(frame(1), as: .reliable) == .queued)
        #expect(queue.enqueue(frame(2), as: .lane(strict)) == .queued)
        #expect(queue.enqueue(frame(3), as: .lane(feed)) == .queued)
        #expect(queue.enqueue(frame(4), as: .reliable) == .queued)
        #expect(queue.enqueue(frame(5), as: .lane(feed)) == .queued)
        #expect(queue.enqueue(frame(6), as: .reliable) == .queued)
        // Full: each newcomer takes the place of the oldest feed message, never of the others.
        #expect(queue.enqueue(frame(7), as: .lane(feed)) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(8), as: .reliable) == .queuedAfterDropping(1))
        #expect(queue.takeGap(for: feed) == 2)
        // Only what may not be dropped is left (7 is the last feed message): the connection must close.
        #expect(queue.enqueue(frame(9), as: .lane(feed)) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(10), as: .reliable) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(11), as: .reliable) == .overflow)
        #expect(queue.enqueue(frame(12), as: .lane(feed)) == .overflow)
        var sizes: [Int] = []
        while let entry = queue.popFirst() { sizes.append(entry.frame.readableBytes) }
        #expect(sizes == [1, 2, 4, 6, 8, 10], "in order, with every reliable and disconnect-lane message")
    }

    @Test func latestSupersedesInPlaceAndStaysBounded() {
        var queue = OutboundQueue(maxBytes: 1 << 20, maxMessages: 100, policy: .disconnect)
        let prices = DeliveryLane(name: "prices", policy: .latest)
        let cursor = DeliveryLane(name: "cursor", policy: .latest)
        #expect(queue.enqueue(frame(1), as: .reliable) == .queued)
        for index in 0..<10_000 {
            _ = queue.enqueue(frame(2), as: .lane(index.isMultiple(of: 2) ? prices : cursor))
        }
        #expect(queue.enqueue(frame(3), as: .reliable) == .queued)
        #expect(queue.count == 4)
        #expect(queue.byteCount == 8)
        #expect(queue.takeAllGaps() == [prices: 4999, cursor: 4999])
        let lanes = (0..<4).map { _ in queue.popFirst()?.lane?.name }
        #expect(lanes == [nil, "prices", "cursor", nil])
        #expect(queue.isEmpty)
    }

    @Test func standardMessagesFollowTheConnectionPolicy() {
        var queue = OutboundQueue(maxBytes: 1000, maxMessages: 2, policy: .dropOldest)
        #expect(queue.enqueue(frame(1), as: .reliable) == .queued)
        #expect(queue.enqueue(frame(2)) == .queued)
        #expect(queue.enqueue(frame(3)) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(4), as: .reliable) == .queuedAfterDropping(1))
        #expect(queue.enqueue(frame(5)) == .overflow)
        #expect(queue.popFirst()?.frame.readableBytes == 1)
        #expect(queue.popFirst()?.frame.readableBytes == 4)
    }
}

@Suite("Timing wheel and heartbeats", .timeLimit(.minutes(5)))
struct TimingTests {
    @Test func wheelReturnsOnlyExpiredEntries() {
        var wheel = TimingWheel<Int>(tick: 10, slotCount: 8, now: 0)
        wheel.schedule(1, at: 15)
        wheel.schedule(2, at: 35)
        wheel.schedule(3, at: 35 + 80 * 3)  // several rounds away: same slot as 2
        wheel.schedule(4, at: 5)
        var expired: [Int] = []
        wheel.advance(to: 20, into: &expired)
        #expect(expired.sorted() == [1, 4])
        expired.removeAll()
        wheel.advance(to: 40, into: &expired)
        #expect(expired == [2])
        expired.removeAll()
        wheel.advance(to: 270, into: &expired)
        #expect(expired.isEmpty)
        wheel.advance(to: 280, into: &expired)
        #expect(expired == [3])
        #expect(wheel.count == 0)
    }

    @Test func pastDeadlinesFireOnTheNextAdvance() {
        var wheel = TimingWheel<Int>(tick: 10, slotCount: 4, now: 100)
        wheel.schedule(7, at: 50)
        var expired: [Int] = []
        wheel.advance(to: 100, into: &expired)
        #expect(expired == [7])
    }

    @Test func heartbeatPingsThenTimesOutWithoutPong() {
        var state = HeartbeatState(now: 0, firstPingAt: 100, pongTimeout: 50, idleTimeout: 0)
        #expect(state.evaluate(now: 10, nextInterval: 100) == .wait(until: 100))
        #expect(state.evaluate(now: 100, nextInterval: 100) == .ping(thenCheckAt: 150))
        #expect(state.evaluate(now: 120, nextInterval: 100) == .wait(until: 150))
        #expect(state.evaluate(now: 150, nextInterval: 100) == .pongTimeout)
    }

    @Test func pongResetsTheCycle() {
        var state = HeartbeatState(now: 0, firstPingAt: 100, pongTimeout: 50, idleTimeout: 0)
        _ = state.evaluate(now: 100, nextInterval: 100)
        state.pongReceived()
        #expect(state.evaluate(now: 150, nextInterval: 100) == .wait(until: 200))
        #expect(state.evaluate(now: 200, nextInterval: 100) == .ping(thenCheckAt: 250))
    }

    @Test func idleTimeoutCountsOnlyData() {
        var state = HeartbeatState(now: 0, firstPingAt: 100, pongTimeout: 50, idleTimeout: 300)
        _ = state.evaluate(now: 100, nextInterval: 100)
        state.pongReceived()
        state.dataReceived(now: 250)
        #expect(state.evaluate(now: 300, nextInterval: 100) == .ping(thenCheckAt: 350))
        state.pongReceived()
        #expect(state.evaluate(now: 549, nextInterval: 100) == .ping(thenCheckAt: 549 + 1))
        #expect(state.evaluate(now: 550, nextInterval: 100) == .idleTimeout)
    }
}

@Suite("Registry shard", .timeLimit(.minutes(5)))
struct RegistryShardTests {
    @Test func indexesByIdAndUser() {
        var shard = RegistryShard<String>()
        let a = ConnectionID(shard: 3, sequence: 1)
        let b = ConnectionID(shard: 3, sequence: 2)
        let c = ConnectionID(shard: 3, sequence: 3)
        shard.insert("a", id: a, user: "ada")
        shard.insert("b", id: b, user: "ada")
        shard.insert("c", id: c, user: nil)
        #expect(a.shard == 3)
        #expect(shard[b] == "b")
        #expect(shard.connections(ofUser: "ada") == [a, b])
        #expect(shard.remove(a, user: "ada") == "a")
        #expect(shard.remove(a, user: "ada") == nil)
        #expect(shard.connections(ofUser: "ada") == [b])
        shard.remove(b, user: "ada")
        #expect(shard.userCount == 0)
        #expect(shard.count == 1)
    }
}
