import NIOCore
import Testing

@testable import SwitchboardCore

/// Each event of the outbound state machine, in the states where its answer differs.
@Suite("Outbound state machine", .timeLimit(.minutes(5)))
struct OutboundStateMachineTests {
    static func machine(direct: Bool = true, maxMessages: Int = 4, policy: SlowConsumerPolicy = .disconnect)
        -> OutboundStateMachine
    {
        OutboundStateMachine(
            direct: direct, queue: OutboundQueue(maxBytes: 1 << 20, maxMessages: maxMessages, policy: policy),
            heldBytesLimit: 1000)
    }

    static func frame(_ byte: UInt8, count: Int = 4) -> ByteBuffer {
        ByteBuffer(bytes: [UInt8](repeating: byte, count: count))
    }

    /// A counter of how often NIO's buffer was asked about, with a fixed answer.
    final class NIOBuffer {
        var bytes: Int
        var asked = 0
        init(_ bytes: Int) { self.bytes = bytes }
        func ask() -> Int {
            asked += 1
            return bytes
        }
    }

    @Test func aFreshDirectConnectionAsksNIOOnceThenHoldsFramesForTheFlush() {
        var machine = Self.machine()
        let nio = NIOBuffer(0)
        #expect(machine.write(Self.frame(1), nioBufferedBytes: nio.ask) == .hold(scheduleFlush: true, flushNow: false))
        #expect(machine.write(Self.frame(2), nioBufferedBytes: nio.ask) == .hold(scheduleFlush: false, flushNow: false))
        #expect(nio.asked == 1, "the 101 response may still be in NIO: asked once, then believed empty")
        #expect(machine.flush() == .writev([Self.frame(1), Self.frame(2)]))
        #expect(machine.wrote(8) == .init(rest: [], flushNIO: false))
        #expect(machine.heldCount == 0 && !machine.flushPending)
    }

    @Test func whileNIOHoldsBytesEverythingGoesThroughIt() {
        var machine = Self.machine()
        let nio = NIOBuffer(10)
        #expect(machine.write(Self.frame(1), nioBufferedBytes: nio.ask) == .throughNIO(first: [], scheduleFlush: true))
        #expect(machine.write(Self.frame(2), nioBufferedBytes: nio.ask) == .throughNIO(first: [], scheduleFlush: false))
        #expect(machine.flush() == .flushNIO)
        nio.bytes = 0
        #expect(machine.write(Self.frame(3), nioBufferedBytes: nio.ask) == .hold(scheduleFlush: true, flushNow: false))
        #expect(nio.asked == 3)
    }

    @Test func theNIOPathNeverAsksNorWritesDirectly() {
        var machine = Self.machine(direct: false)
        let nio = NIOBuffer(0)
        machine.beginFlushScope(single: true)
        #expect(machine.write(Self.frame(1), nioBufferedBytes: nio.ask) == .throughNIO(first: [], scheduleFlush: false))
        let callerMustFlush = machine.endFlushScope()
        #expect(callerMustFlush)
        #expect(machine.flush() == .flushNIO)
        #expect(nio.asked == 0)
    }

    @Test func aLoneFrameFlushedByItsCallerGoesAtOnceAndARefusedRestGoesThroughNIO() {
        var machine = Self.machine()
        let nio = NIOBuffer(0)
        machine.beginFlushScope(single: true)
        #expect(machine.write(Self.frame(1), nioBufferedBytes: nio.ask) == .send)
        #expect(machine.sentPartly() == false, "the caller flushes: the shard need not")
        let callerMustFlush = machine.endFlushScope()
        #expect(callerMustFlush)
        #expect(machine.flush() == .flushNIO)
        // NIO may still hold the rest: the next write asks.
        nio.bytes = 2
        #expect(machine.write(Self.frame(2), nioBufferedBytes: nio.ask) == .throughNIO(first: [], scheduleFlush: true))
    }

    @Test func aSecondFrameInACallersScopeWaitsForItsFlush() {
        var machine = Self.machine()
        let nio = NIOBuffer(0)
        machine.beginFlushScope(single: false)
        #expect(machine.write(Self.frame(1), nioBufferedBytes: nio.ask) == .hold(scheduleFlush: false, flushNow: false))
        machine.beginFlushScope(single: true)
        #expect(machine.write(Self.frame(2), nioBufferedBytes: nio.ask) == .hold(scheduleFlush: false, flushNow: false))
        let callerMustFlush = machine.endFlushScope()
        #expect(callerMustFlush)
        #expect(machine.flush() == .writev([Self.frame(1), Self.frame(2)]))
    }

    @Test func heldFramesAreBoundedByCountAndBytes() {
        var machine = Self.machine()
        for index in 1..<OutboundStateMachine.framesPerWrite {
            #expect(
                machine.write(Self.frame(1), nioBufferedBytes: { 0 })
                    == .hold(scheduleFlush: index == 1, flushNow: false))
        }
        #expect(machine.write(Self.frame(1), nioBufferedBytes: { 0 }) == .hold(scheduleFlush: false, flushNow: true))
        _ = machine.flush()
        _ = machine.wrote(1 << 20)
        #expect(
            machine.write(Self.frame(1, count: 999), nioBufferedBytes: { 0 })
                == .hold(scheduleFlush: true, flushNow: false))
        #expect(machine.write(Self.frame(1), nioBufferedBytes: { 0 }) == .hold(scheduleFlush: false, flushNow: true))
    }

    @Test func whatAWritevLeavesGoesThroughNIOFromTheFirstUnwrittenByte() {
        var machine = Self.machine()
        for byte: UInt8 in 1...3 { _ = machine.write(Self.frame(byte), nioBufferedBytes: { 0 }) }
        _ = machine.flush()
        var second = Self.frame(2)
        second.moveReaderIndex(forwardBy: 1)
        #expect(machine.wrote(5) == .init(rest: [second, Self.frame(3)], flushNIO: true))
        #expect(machine.write(Self.frame(4), nioBufferedBytes: { 1 }) == .throughNIO(first: [], scheduleFlush: true))
    }

    @Test func aControlFrameTakesTheHeldFramesAheadOfIt() {
        var machine = Self.machine()
        _ = machine.write(Self.frame(1), nioBufferedBytes: { 0 })
        #expect(machine.writeControl() == .throughNIO(first: [Self.frame(1)], scheduleFlush: false))
        #expect(machine.heldCount == 0)
        #expect(machine.flush() == .flushNIO)
    }

    @Test func dataWaitsInTheQueueWhileUnwritableAndLeavesInOrder() {
        var machine = Self.machine()
        #expect(machine.deliver(Self.frame(0), as: .standard) == .write(reportGaps: false))
        #expect(machine.writabilityChanged(false) == false)
        #expect(machine.nextQueued() == nil)
        for byte: UInt8 in 1...3 {
            #expect(machine.deliver(Self.frame(byte), as: .standard) == .queued(countChange: 1, dropped: 0))
        }
        let mustDrain = machine.writabilityChanged(true)
        #expect(mustDrain)
        #expect(
            machine.deliver(Self.frame(9), as: .standard) == .queued(countChange: 1, dropped: 0), "behind the queue")
        var drained: [ByteBuffer] = []
        while let entry = machine.nextQueued() { drained.append(entry.frame) }
        #expect(drained == [1, 2, 3, 9].map { Self.frame($0) })
    }

    @Test func aFullQueueOverflowsOrDropsByPolicyAndReportsGaps() {
        var disconnecting = Self.machine(maxMessages: 2)
        _ = disconnecting.writabilityChanged(false)
        _ = disconnecting.deliver(Self.frame(1), as: .standard)
        _ = disconnecting.deliver(Self.frame(2), as: .standard)
        #expect(disconnecting.deliver(Self.frame(3), as: .standard) == .overflow)

        let lane = DeliveryLane(name: "c", policy: .dropOldest)
        var dropping = Self.machine(maxMessages: 2)
        _ = dropping.writabilityChanged(false)
        _ = dropping.deliver(Self.frame(1), as: .lane(lane))
        _ = dropping.deliver(Self.frame(2), as: .lane(lane))
        #expect(dropping.deliver(Self.frame(3), as: .lane(lane)) == .queued(countChange: 0, dropped: 1))
        _ = dropping.writabilityChanged(true)
        let first = dropping.nextQueued()
        #expect(first?.frame == Self.frame(2))
        #expect(dropping.takeGap(for: lane) == 1)
        #expect(dropping.takeAllGaps().isEmpty)
    }

    @Test func gapsAreReportedBeforeTheNextDirectWriteOnceTheQueueIsEmpty() {
        let lane = DeliveryLane(name: "c", policy: .dropOldest)
        var machine = Self.machine(maxMessages: 1)
        _ = machine.writabilityChanged(false)
        _ = machine.deliver(Self.frame(1), as: .lane(lane))
        _ = machine.deliver(Self.frame(2), as: .lane(lane))
        _ = machine.writabilityChanged(true)
        _ = machine.nextQueued()
        #expect(machine.deliver(Self.frame(3), as: .standard) == .write(reportGaps: true))
        #expect(machine.takeAllGaps() == [lane: 1])
    }

    @Test(arguments: [OutboundStateMachine.Backlog.send, .sendWritten, .drop])
    func closingHandsOnWhatTheBacklogKeepsAndRefusesData(backlog: OutboundStateMachine.Backlog) {
        var machine = Self.machine()
        _ = machine.write(Self.frame(1), nioBufferedBytes: { 0 })
        _ = machine.writabilityChanged(false)
        _ = machine.deliver(Self.frame(2), as: .standard)
        _ = machine.deliver(Self.frame(3), as: .standard)
        let closing = machine.close(backlog)
        switch backlog {
        case .send:
            #expect(closing == .init(written: [Self.frame(1)], queued: [Self.frame(2), Self.frame(3)], dropped: 0))
        case .sendWritten: #expect(closing == .init(written: [Self.frame(1)], queued: [], dropped: 2))
        case .drop: #expect(closing == .init(written: [], queued: [], dropped: 2))
        }
        #expect(machine.path == .nio && machine.heldCount == 0 && machine.queue.isEmpty)
        #expect(machine.deliver(Self.frame(4), as: .reliable) == .discard)
        #expect(machine.writabilityChanged(true) == false)
        #expect(machine.writeControl() == .drop, "nothing follows the close frame")
        #expect(machine.write(Self.frame(5), nioBufferedBytes: { 0 }) == .drop)
    }

    @Test func afterTheTransportIsGoneNothingIsWrittenOrQueued() {
        var machine = Self.machine()
        _ = machine.write(Self.frame(1), nioBufferedBytes: { 0 })
        _ = machine.writabilityChanged(false)
        _ = machine.deliver(Self.frame(2), as: .standard)
        #expect(machine.transportClosed() == 1)
        #expect(machine.deliver(Self.frame(3), as: .reliable) == .discard)
        #expect(machine.heldCount == 0 && !machine.flushPending && machine.path == .nio)
        #expect(machine.flush() == .flushNIO)
    }
}
