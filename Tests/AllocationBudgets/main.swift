import Logging
import MallocInterposerSwift
import NIOCore
import NIOEmbedded
import NIOHTTP1
import SwitchboardCore

@testable import SwitchboardNIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

// Allocation budgets for the hot paths. Allocation counts are deterministic where times are not, so a
// change that adds an allocation to a hot path fails here. Each scenario runs on the main thread with
// embedded event loops (no other thread allocates), warms up, then counts the heap allocations of
// `rounds` repetitions with malloc-interposer and divides. Direct writes go to real socket pairs.
//
// Linked against the interposer's library, which comes before libc in the lookup order, so malloc is
// interposed without LD_PRELOAD (a control scenario proves counting works). The budgets are for an
// optimised build: unoptimised code allocates per `for … in` step, which says nothing about the design.
// scripts/test.sh runs it:
//   swift build -c release --scratch-path .build/allocation-budgets \
//     --product switchboard-allocation-budgets -Xswiftc -enable-testing
//   .build/allocation-budgets/release/switchboard-allocation-budgets

struct Budget {
    let name: String
    /// Allocations per operation the current design stays under, with a small margin.
    let limit: Double
    let rounds: Int
    let setUp: () throws -> () throws -> Void
}

/// Counts the allocations of `operation` run `rounds` times, after a warm-up.
func allocations(rounds: Int, _ operation: () throws -> Void) rethrows -> Double {
    for _ in 0..<max(rounds / 10, 10) { try operation() }
    MallocInterposerSwift.reset()
    MallocInterposerSwift.hook()
    for _ in 0..<rounds { try operation() }
    MallocInterposerSwift.unhook()
    return Double(MallocInterposerSwift.getStatistics().mallocCount) / Double(rounds)
}

#if canImport(Darwin)
    let streamType = SOCK_STREAM
#else
    let streamType = CInt(SOCK_STREAM.rawValue)
#endif

/// A hub on one embedded loop, and connections on it whose direct writes go to socket pairs.
final class Bench {
    let loop = EmbeddedEventLoop()
    let hub: Hub
    let shard: LoopShard
    var connections: [(channel: EmbeddedChannel, connection: WebSocketConnection, peer: CInt, local: CInt)] = []
    /// Where peers' bytes are read to and dropped (a raw buffer: an array passed inout may be copied).
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: 1 << 16, alignment: 16)

    init() {
        var configuration = SwitchboardConfiguration()
        configuration.pingInterval = .seconds(30)
        configuration.idleTimeout = .zero  // the heartbeat scenario moves its own clock by hours
        // Thousands of pongs a second would trip the inbound rate limits (real time, unlike the clock above).
        configuration.abuseLimits.inboundFramesPerSecond = 0
        configuration.abuseLimits.inboundBytesPerSecond = 0
        var logger = Logger(label: "allocation-budgets")
        logger.logLevel = .critical
        hub = Hub(
            configuration: configuration, application: EchoApplication(broadcast: false),
            metrics: SwitchboardMetrics(), logger: logger, eventLoops: [loop])
        shard = hub.shards[0]
    }

    /// An open connection, as the handshake leaves it.
    @discardableResult
    func open(direct: Bool = true) throws -> WebSocketConnection {
        var pair: [CInt] = [-1, -1]
        guard socketpair(AF_UNIX, streamType, 0, &pair) == 0 else {
            throw IOError(errnoCode: errno, reason: "socketpair")
        }
        for end in pair { _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK) }
        let channel = EmbeddedChannel(loop: loop)
        let connection = WebSocketConnection(
            id: shard.nextConnectionID(), userID: nil, subprotocol: nil, info: nil,
            directSocket: direct ? DirectSocket(descriptor: pair[0], channel: channel) : nil, hub: hub, shard: shard)
        try channel.pipeline.syncOperations.addHandler(connection)
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        connection.start()
        connections.append((channel, connection, pair[1], pair[0]))
        return connection
    }

    /// Reads what every peer got and what NIO wrote, so that nothing piles up between rounds. (Indexes,
    /// not `for … in`: the harness itself must not allocate.)
    func drainPeers() {
        var index = 0
        while index < connections.count {
            while recv(connections[index].peer, scratch, 1 << 16, CInt(MSG_DONTWAIT)) > 0 {}
            index += 1
        }
    }

    /// Reading an embedded channel's output allocates even when there is none: only the scenario
    /// through NIO does it.
    func drainNIO() {
        var index = 0
        while index < connections.count {
            while (try? connections[index].channel.readOutbound(as: ByteBuffer.self)) != nil {}
            index += 1
        }
    }
}

let frame = FrameEncoder.encode(.text, payload: ByteBuffer(string: "{\"n\":1,\"text\":\"hello\"}"), allocator: .init())
// A client's empty pong: FIN and opcode 0xA, masked, no payload, a masking key.
let pong = ByteBuffer(bytes: [0x8A, 0x80, 1, 2, 3, 4])
let upgrade = """
    GET /ws HTTP/1.1\r
    Host: 127.0.0.1\r
    Upgrade: websocket\r
    Connection: Upgrade\r
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r
    Sec-WebSocket-Version: 13\r
    \r

    """

let budgets: [Budget] = [
    Budget(name: "one delivery of an encoded frame to an open connection (direct write)", limit: 0.5, rounds: 2000) {
        let bench = Bench()
        let connection = try bench.open()
        return {
            connection.enqueueAndFlush(frame, as: .standard)
            bench.drainPeers()
        }
    },
    Budget(name: "one delivery of an encoded frame to an open connection (through NIO)", limit: 0.5, rounds: 2000) {
        let bench = Bench()
        let connection = try bench.open(direct: false)
        return {
            connection.enqueueAndFlush(frame, as: .standard)
            bench.drainNIO()
        }
    },
    Budget(name: "one broadcast fanned out to 100 connections on a loop (the whole pass)", limit: 8, rounds: 200) {
        let bench = Bench()
        for _ in 0..<100 { try bench.open() }
        return {
            bench.shard.submitBroadcast(frame)
            bench.loop.run()
            bench.drainPeers()
        }
    },
    Budget(name: "one idle connection's heartbeat cycle (ping out, pong in, next check)", limit: 9, rounds: 1000) {
        let bench = Bench()
        let connection = try bench.open()
        let channel = bench.connections[0].channel
        let interval: Int64 = 30_000_000_000
        // Past the latest first ping (30 s + 10% jitter from the open), so every round's first check pings.
        var clock = LoopShard.now() + 3_000_000_000
        return {
            clock += interval + 1_000_000_000
            guard case .some = connection.heartbeatDue(now: clock, nextInterval: interval) else {
                throw Unexpected(what: "the connection closed instead of pinging")
            }
            bench.loop.run()  // the ping's flush
            try channel.writeInbound(pong)
            guard !connection.heartbeat.awaitingPong else { throw Unexpected(what: "the pong was not taken") }
            _ = connection.heartbeatDue(now: clock + 1_000_000_000, nextInterval: interval)
            bench.drainNIO()
        }
    },
    // 115 since `Hub.admit` (issue 23): 102 before, plus the verdict's promise, the decision's deadline (which
    // gives back the places of a decision that never comes) and the admission that carries them.
    Budget(name: "one accepted connection up to open (HTTP upgrade, registration)", limit: 120, rounds: 300) {
        let bench = Bench()
        let request = ByteBuffer(string: upgrade)
        return {
            let channel = EmbeddedChannel(loop: bench.loop)
            let encoder = HTTPResponseEncoder()
            let decoder = ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .forwardBytes))
            let sync = channel.pipeline.syncOperations
            try sync.addHandler(encoder)
            try sync.addHandler(decoder)
            try sync.addHandler(
                HandshakeHandler(
                    hub: bench.hub, shard: bench.shard, encoder: encoder, decoder: decoder, directSocket: nil))
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            try channel.writeInbound(request)
            bench.loop.run()
            guard bench.hub.connectionCount == 1 else { throw Unexpected(what: "the connection did not open") }
            _ = try channel.finish()
            bench.loop.run()
        }
    },
]

struct Unexpected: Error { let what: String }

MallocInterposerSwift.initialize()
var failed = false
for budget in budgets {
    let operation = try budget.setUp()
    let perOperation = try allocations(rounds: budget.rounds, operation)
    let verdict = perOperation <= budget.limit ? "ok" : "OVER BUDGET"
    print("\(verdict): \(budget.name): \(perOperation) allocations (budget \(budget.limit))")
    if perOperation > budget.limit { failed = true }
}
// Proof that counting works at all: a scenario that cannot be free must not read zero.
let control = allocations(rounds: 100) { _ = [Int](repeating: 0, count: 1000) }
if control < 1 {
    print("the interposer counted nothing: run with LD_PRELOAD of libMallocInterposerSwift.so")
    failed = true
}
exit(failed ? 1 : 0)
