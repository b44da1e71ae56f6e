import NIOCore
import Testing

@testable import SwitchboardCore

/// The outbound state machine driven the way the connection drives it, against a model of NIO (its
/// buffer, flushes, water marks) and of a socket that takes only so many bytes at a time. Random walks
/// reach the states; in every state reached, every event is applied to a copy and the invariants are
/// checked: nothing overtakes anything, nothing written directly while NIO holds bytes, no flush lost,
/// nothing after the close frame, and at the end every message that was not dropped by policy arrived.
@Suite("Outbound state machine against a model of NIO and a socket", .timeLimit(.minutes(5)))
struct OutboundModelTests {
    @Test(arguments: [SlowConsumerPolicy.disconnect, .dropOldest, .latest])
    func everyEventInEveryReachedStateKeepsTheRules(policy: SlowConsumerPolicy) throws {
        var generator = SplitMix(seed: 0x5EED + UInt64(SlowConsumerPolicy.allCases.firstIndex(of: policy) ?? 0))
        var reached = Set<String>()
        for walk in 0..<90 {
            let direct = walk % 3 != 0
            var model = Model(direct: direct, policy: policy, room: Int(generator.next() % (direct ? 64 : 8)))
            for _ in 0..<100 {
                for event in Event.allCases {
                    var branch = model  // copies share the wire's storage until one writes
                    branch.apply(event, &generator)
                    try branch.checkInvariants()
                }
                model.apply(Event.allCases[Int(generator.next() % UInt64(Event.allCases.count))], &generator)
                try model.checkInvariants()
                reached.insert(model.stateKey)
            }
            model.settle()
            try model.checkFinal()
        }
        // The walks reach the states the rules are about: frames held for the flush, NIO holding bytes on
        // the direct path, the queue in use on either path, a close with its backlog in NIO, a closed transport.
        let expected = [
            "direct open writable pending held", "direct open writable pending nio",
            "direct open unwritable queued nio", "nio open writable pending nio", "nio open unwritable queued nio",
            "nio closing pending nio", "nio closed nio",
        ]
        #expect(Set(expected).subtracting(reached).isEmpty, "reached only \(reached.sorted())")
    }

    enum Event: CaseIterable {
        case deliver, deliverReliable, deliverLane, batch, single, control, drain, drainAll, shardFlush, close,
            transportClosed
    }

    /// What reached the peer, and NIO's buffer in front of the socket.
    struct Transport {
        var room: Int
        var unflushed: [ByteBuffer] = []
        var flushed: [ByteBuffer] = []
        var wire: [UInt8] = []
        var writable = true
        var open = true
        /// Bytes NIO holds (written, flushed or not, and not yet taken by the socket).
        var buffered = 0
        static let high = 40
        static let low = 12

        mutating func take(_ bytes: ByteBufferView) -> Int {
            guard open else { return 0 }
            let count = min(room, bytes.count)
            wire += bytes.prefix(count)
            room -= count
            return count
        }

        mutating func write(_ frame: ByteBuffer) {
            guard open else { return }
            unflushed.append(frame)
            buffered += frame.readableBytes
        }

        mutating func flush() {
            flushed += unflushed
            unflushed = []
            pump()
        }

        mutating func pump() {
            while open, room > 0, !flushed.isEmpty {
                let written = take(flushed[0].readableBytesView)
                buffered -= written
                flushed[0].moveReaderIndex(forwardBy: written)
                if flushed[0].readableBytes == 0 { flushed.removeFirst() }
            }
        }
    }

    struct Failure: Error, CustomStringConvertible { let description: String }

    struct Model {
        var machine: OutboundStateMachine
        var transport: Transport
        var scheduled = false
        var nextID: UInt16 = 1
        var delivered: [UInt16] = []
        var droppedByPolicy = false
        var closed = false
        var violation: String?
        /// The wire as checked so far.
        var arrived: [UInt16] = []
        var checkedBytes = 0
        var closeSeen = false
        let lane: DeliveryLane

        init(direct: Bool, policy: SlowConsumerPolicy, room: Int) {
            machine = OutboundStateMachine(
                direct: direct, queue: OutboundQueue(maxBytes: 1 << 20, maxMessages: 6, policy: policy),
                heldBytesLimit: 30)
            transport = Transport(room: room)
            lane = DeliveryLane(name: "lane", policy: policy)
        }

        var stateKey: String {
            [
                machine.path == .direct ? "direct" : "nio",
                !transport.open ? "closed" : (machine.isAcceptingData ? "open" : "closing"),
                machine.isAcceptingData ? (machine.writable ? "writable" : "unwritable") : "",
                machine.queue.isEmpty ? "" : "queued",
                machine.flushPending ? "pending" : "",
                machine.heldCount > 0 ? "held" : "",
                transport.buffered > 0 ? "nio" : "",
            ].filter { !$0.isEmpty }.joined(separator: " ")
        }

        // Frames: a kind byte (D data, C control, E close) and a 16-bit id, padded to 4 bytes.
        static func frame(_ kind: UInt8, _ id: UInt16) -> ByteBuffer {
            ByteBuffer(bytes: [kind, UInt8(id >> 8), UInt8(id & 0xFF), 0])
        }

        mutating func apply(_ event: Event, _ generator: inout SplitMix) {
            switch event {
            case .deliver: deliver(.standard)
            case .deliverReliable: deliver(.reliable)
            case .deliverLane: deliver(.lane(lane))
            case .batch:
                machine.beginFlushScope(single: false)
                for _ in 0..<(1 + Int(generator.next() % 3)) { deliver(.standard) }
                if machine.endFlushScope() { flushNow() }
            case .single:
                machine.beginFlushScope(single: true)
                deliver(.standard)
                if machine.endFlushScope() { flushNow() }
            case .control:
                control(Self.frame(0x43, 0))
            case .drain:
                transport.room += Int(generator.next() % 9)
                transport.pump()
                writabilityCheck()
            case .drainAll:
                guard generator.next() % 4 == 0 else { return }  // rarer, so that backlogs build up
                transport.room += 1 << 16
                transport.pump()
                writabilityCheck()
            case .shardFlush:
                if scheduled {
                    scheduled = false
                    if machine.flushPending { flushNow() }
                }
            case .close:
                guard machine.isAcceptingData, generator.next() % 4 == 0 else { return }
                let backlogs: [OutboundStateMachine.Backlog] = [.send, .sendWritten, .drop]
                close(backlogs[Int(generator.next() % 3)])
            case .transportClosed:
                guard generator.next() % 8 == 0, transport.open else { return }
                transport.open = false
                _ = machine.transportClosed()
                scheduled = false
            }
        }

        mutating func deliver(_ kind: OutboundClass) {
            let id = nextID
            nextID += 1
            let frame = Self.frame(0x44, id)
            switch machine.deliver(frame, as: kind) {
            case .discard:
                return
            case .write(let reportGaps):
                delivered.append(id)
                if reportGaps { reportAllGaps() }
                write(frame)
            case .queued(_, let dropped):
                delivered.append(id)
                if dropped > 0 { droppedByPolicy = true }
            case .overflow:
                droppedByPolicy = true
                close(.drop)
            }
        }

        mutating func reportAllGaps() {
            for _ in machine.takeAllGaps() { control(Self.frame(0x43, 1)) }
        }

        mutating func write(_ frame: ByteBuffer) {
            let action = machine.write(frame) { transport.buffered }
            perform(action, frame)
        }

        mutating func control(_ frame: ByteBuffer) {
            perform(machine.writeControl(), frame)
        }

        mutating func perform(_ action: OutboundStateMachine.Write, _ frame: ByteBuffer) {
            switch action {
            case .send:
                directWriteCheck()
                var frame = frame
                frame.moveReaderIndex(forwardBy: transport.take(frame.readableBytesView))
                if frame.readableBytes > 0 {
                    if machine.sentPartly() { scheduled = true }
                    nioWrite(frame)
                }
            case .hold(let scheduleFlush, let flushNow):
                if scheduleFlush { scheduled = true }
                if flushNow { self.flushNow() }
            case .throughNIO(let first, let scheduleFlush):
                for frame in first { nioWrite(frame) }
                nioWrite(frame)
                if scheduleFlush { scheduled = true }
            case .drop:
                break
            }
        }

        mutating func flushNow() {
            switch machine.flush() {
            case .none: break
            case .flushNIO: nioFlush()
            case .writev(let frames):
                directWriteCheck()
                var written = 0
                for frame in frames.prefix(OutboundStateMachine.framesPerWrite) {
                    let took = transport.take(frame.readableBytesView)
                    written += took
                    if took < frame.readableBytes { break }
                }
                let handover = machine.wrote(written)
                for frame in handover.rest { nioWrite(frame) }
                if handover.flushNIO { nioFlush() }
            }
        }

        mutating func nioWrite(_ frame: ByteBuffer) {
            transport.write(frame)
            writabilityCheck()
        }

        mutating func nioFlush() {
            transport.flush()
            writabilityCheck()
        }

        /// NIO's water marks: unwritable above the high mark, writable again below the low one.
        mutating func writabilityCheck() {
            guard transport.open else { return }
            if transport.writable, transport.buffered > Transport.high {
                transport.writable = false
                _ = machine.writabilityChanged(false)
            } else if !transport.writable, transport.buffered < Transport.low {
                transport.writable = true
                if machine.writabilityChanged(true) { drainQueue() }
            }
        }

        mutating func drainQueue() {
            while let entry = machine.nextQueued() {
                if let lane = entry.lane, machine.takeGap(for: lane) != nil { control(Self.frame(0x43, 1)) }
                write(entry.frame)
            }
            reportAllGaps()
        }

        mutating func close(_ backlog: OutboundStateMachine.Backlog) {
            closed = true
            let closing = machine.close(backlog)
            if backlog == .drop || !closing.queued.isEmpty || closing.dropped > 0 { droppedByPolicy = true }
            for frame in closing.written + closing.queued { nioWrite(frame) }
            nioWrite(Self.frame(0x45, 0))
            nioFlush()
        }

        mutating func directWriteCheck() {
            if !transport.open { violation = violation ?? "a direct write after the transport closed" }
            if transport.buffered > 0 {
                violation = violation ?? "a direct write while NIO held \(transport.buffered) bytes"
            }
            if closed { violation = violation ?? "a direct write after the close began" }
        }

        mutating func checkInvariants() throws {
            if let violation { throw Failure(description: violation) }
            if machine.heldCount > OutboundStateMachine.framesPerWrite {
                throw Failure(description: "\(machine.heldCount) frames held")
            }
            if machine.heldCount > 0, transport.buffered > 0 {
                throw Failure(description: "frames held while NIO holds bytes: they would overtake them")
            }
            if machine.flushPending, !scheduled, transport.open {
                throw Failure(description: "a flush is pending that nobody will do")
            }
            try checkNewBytes()
        }

        /// Every data frame on the wire is in delivery order, whole; nothing follows the close frame.
        mutating func checkNewBytes() throws {
            let wire = transport.wire
            while checkedBytes + 4 <= wire.count {
                let kind = wire[checkedBytes]
                let id = UInt16(wire[checkedBytes + 1]) << 8 | UInt16(wire[checkedBytes + 2])
                if closeSeen { throw Failure(description: "bytes after the close frame") }
                switch kind {
                case 0x44:
                    if let last = arrived.last, id <= last {
                        throw Failure(description: "\(id) arrived after \(last): out of order or repeated")
                    }
                    arrived.append(id)
                case 0x45: closeSeen = true
                case 0x43: break
                default: throw Failure(description: "a frame torn or interleaved at byte \(checkedBytes)")
                }
                checkedBytes += 4
            }
        }

        /// The reader reads everything and the shard flushes: whatever is left must arrive.
        mutating func settle() {
            for _ in 0..<4 {
                transport.room += 1 << 20
                if scheduled {
                    scheduled = false
                    if machine.flushPending { flushNow() }
                }
                transport.pump()
                writabilityCheck()
            }
        }

        mutating func checkFinal() throws {
            try checkInvariants()
            if !droppedByPolicy, transport.open, arrived != delivered {
                throw Failure(description: "lost: delivered \(delivered), arrived \(arrived)")
            }
            if transport.open, !closed, machine.heldCount > 0 || transport.buffered > 0 || !machine.queue.isEmpty {
                throw Failure(description: "left behind after settling: \(stateKey)")
            }
        }
    }
}

/// A small deterministic generator, so a failing walk can be replayed.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
