import Atomics
import Foundation
import Logging
import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The listening socket, accepted on a thread of its own; each connection's descriptor is handed to an
/// event loop with `ClientBootstrap.withConnectedSocket`.
///
/// Why not `ServerBootstrap`: NIO keeps an accepted channel's descriptor private, and direct writes
/// (`DirectSocket`) need it. Accepting ourselves, we know every descriptor from the start, through public
/// API only and on every platform. The accept thread drains the listen queue in one go and hands each
/// loop its share in one task, so a connection storm costs each loop one wake-up per batch, not one per
/// connection. At the descriptor limit (EMFILE and kin) it pauses for a moment instead of spinning, and
/// says so once when the trouble starts and once when it ends.
final class Acceptor: Sendable {
    /// The address actually bound (the real port when 0 was asked for).
    let address: SocketAddress
    private let listening: CInt
    /// Written once by `stop` to wake the thread out of `poll`.
    private let wake: (read: CInt, write: CInt)
    private let finished: EventLoopPromise<Void>
    /// Descriptors handed to the loops and not yet taken up by them. Accepting stops above `maxWaiting`,
    /// so that under overload connections wait in the kernel's listen queue (bounded by the backlog), not
    /// as open descriptors in the loops' task queues.
    private let waiting = ManagedAtomic(0)
    private let maxWaiting: Int

    /// Binds and listens; `start` begins accepting.
    init(host: String, port: Int, backlog: CInt, maxWaiting: Int, finishedOn loop: any EventLoop) throws {
        self.maxWaiting = max(maxWaiting, 1)
        let requested = try SocketAddress.makeAddressResolvingHost(host, port: port)
        let listening = try Self.makeListeningSocket(on: requested, backlog: backlog)
        do {
            address = try Self.boundAddress(of: listening)
            wake = try Self.makePipe()
        } catch {
            close(listening)
            throw error
        }
        self.listening = listening
        finished = loop.makePromise()
    }

    /// Starts the accept thread. New connections are dealt round robin to `loops` shares; `handOff` runs
    /// on the acceptor's thread with a loop's index and its share of a batch, which it owns from then on.
    func start(
        loops: Int, metrics: SwitchboardMetrics?, logger: Logger,
        handOff: @escaping @Sendable (Int, [CInt]) -> Void
    ) {
        let thread = Thread { [self] in
            acceptUntilStopped(loops: max(loops, 1), metrics: metrics, logger: logger, handOff: handOff)
            close(listening)
            close(wake.read)
            finished.succeed()
        }
        thread.name = "switchboard-accept"
        thread.start()
    }

    /// A loop has taken up `count` of the descriptors handed to it.
    func taken(_ count: Int) {
        waiting.wrappingDecrement(by: count, ordering: .relaxed)
    }

    /// Stops accepting and closes the listening socket; completes when the thread has let go of it.
    /// Call it before the event loops stop: a batch handed to a stopped loop is lost with its descriptors.
    func stop() -> EventLoopFuture<Void> {
        var byte: UInt8 = 1
        _ = write(wake.write, &byte, 1)
        close(wake.write)
        return finished.futureResult
    }

    /// The most connections taken from the listen queue before they are handed on: bounds how long the
    /// first of a storm waits for the last.
    private static let batchLimit = 256
    private static let resourceErrors: Set<CInt> = [EMFILE, ENFILE, ENOBUFS, ENOMEM]
    private static let pause: Int32 = 100  // milliseconds
    private static let gatherMicroseconds: UInt32 = 1000

    private func acceptUntilStopped(
        loops: Int, metrics: SwitchboardMetrics?, logger: Logger, handOff: @Sendable (Int, [CInt]) -> Void
    ) {
        var pausesInARow = 0
        var batch: [CInt] = []
        batch.reserveCapacity(Self.batchLimit)
        var nextLoop = 0
        func handOffBatch() {
            waiting.wrappingIncrement(by: batch.count, ordering: .relaxed)
            for offset in 0..<min(loops, batch.count) {
                let loop = (nextLoop + offset) % loops
                handOff(loop, stride(from: offset, to: batch.count, by: loops).map { batch[$0] })
            }
            nextLoop = (nextLoop + batch.count) % loops
            batch.removeAll(keepingCapacity: true)
        }
        var waitMilliseconds: Int32 = -1
        while waitForConnections(milliseconds: waitMilliseconds, logger: logger) {
            waitMilliseconds = -1
            accepting: while true {
                guard waiting.load(ordering: .relaxed) < maxWaiting else {
                    waitMilliseconds = 1  // the loops are behind: let them catch up
                    break accepting
                }
                let descriptor = Self.acceptOne(listening)
                if descriptor >= 0 {
                    if pausesInARow > 0 {
                        logger.info("accepting connections again", metadata: ["pauses": "\(pausesInARow)"])
                        pausesInARow = 0
                    }
                    batch.append(descriptor)
                    if batch.count == Self.batchLimit {
                        handOffBatch()
                        break accepting  // back to poll, which notices `stop`
                    }
                    continue
                }
                switch errno {
                case EAGAIN, EWOULDBLOCK:
                    break accepting
                case EINTR, ECONNABORTED, EPROTO, EPERM, ENETDOWN, ENETUNREACH, EHOSTDOWN, EHOSTUNREACH,
                    EOPNOTSUPP, ENOPROTOOPT, ETIMEDOUT:
                    continue  // that connection is gone (accept(2) says to retry); the next may be fine
                case let error where Self.resourceErrors.contains(error):
                    metrics?.acceptPaused.increment()
                    if pausesInARow == 0 {
                        logger.warning(
                            "cannot accept connections; retrying every \(Self.pause) ms",
                            metadata: ["error": "\(String(cString: strerror(error)))"])
                    }
                    pausesInARow += 1
                    waitMilliseconds = Self.pause
                    break accepting
                default:
                    logger.error("accept failed", metadata: ["error": "\(String(cString: strerror(errno)))"])
                    waitMilliseconds = Self.pause
                    break accepting
                }
            }
            if !batch.isEmpty {
                handOffBatch()
                // Under a connection storm, let the next connections gather before waking for them: each
                // wake-up of this thread and of the loops is a context switch on a busy core. A lone
                // connection is still taken at once; only the one after it may wait this long.
                usleep(Self.gatherMicroseconds)
            }
        }
    }

    /// Waits until the listening socket is readable (or, while paused, for `milliseconds` regardless);
    /// false once `stop` was called.
    private func waitForConnections(milliseconds: Int32, logger: Logger) -> Bool {
        var fds = [
            pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0),
            // While paused only the wake-up is watched: the queue is full of connections we cannot take yet.
            pollfd(fd: milliseconds < 0 ? listening : -1, events: Int16(POLLIN), revents: 0),
        ]
        while true {
            let ready = poll(&fds, nfds_t(fds.count), milliseconds)
            if ready < 0 && errno == EINTR { continue }
            if ready < 0 {
                logger.critical(
                    "no longer accepting connections", metadata: ["error": "\(String(cString: strerror(errno)))"])
            }
            return ready >= 0 && fds[0].revents == 0
        }
    }

    /// `accept4` would save the `fcntl`, but neither Glibc's module nor Darwin offers it.
    private static func acceptOne(_ listening: CInt) -> CInt {
        let descriptor = accept(listening, nil, nil)
        if descriptor >= 0 { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
        return descriptor
    }

    private static func makeListeningSocket(on address: SocketAddress, backlog: CInt) throws -> CInt {
        let family = CInt(address.protocol.rawValue)
        #if canImport(Darwin)
            let descriptor = socket(family, SOCK_STREAM, 0)
        #else
            let descriptor = socket(family, CInt(SOCK_STREAM.rawValue), 0)
        #endif
        guard descriptor >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        do {
            var one: CInt = 1
            guard setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<CInt>.size)) == 0
            else { throw IOError(errnoCode: errno, reason: "setsockopt(SO_REUSEADDR)") }
            guard address.withSockAddr({ bind(descriptor, $0, socklen_t($1)) }) == 0 else {
                throw IOError(errnoCode: errno, reason: "bind(\(address))")
            }
            guard listen(descriptor, backlog) == 0 else { throw IOError(errnoCode: errno, reason: "listen") }
            let flags = fcntl(descriptor, F_GETFL)
            guard flags >= 0, fcntl(descriptor, F_SETFL, flags | O_NONBLOCK) == 0,
                fcntl(descriptor, F_SETFD, FD_CLOEXEC) == 0
            else { throw IOError(errnoCode: errno, reason: "fcntl") }
        } catch {
            close(descriptor)
            throw error
        }
        return descriptor
    }

    private static func boundAddress(of descriptor: CInt) throws -> SocketAddress {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        guard result == 0 else { throw IOError(errnoCode: errno, reason: "getsockname") }
        switch CInt(storage.ss_family) {
        case AF_INET:
            return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in.self)) }
        case AF_INET6:
            return withUnsafeBytes(of: storage) { SocketAddress($0.load(as: sockaddr_in6.self)) }
        default:
            throw IOError(errnoCode: EAFNOSUPPORT, reason: "getsockname")
        }
    }

    private static func makePipe() throws -> (read: CInt, write: CInt) {
        var ends: [CInt] = [-1, -1]
        guard pipe(&ends) == 0 else { throw IOError(errnoCode: errno, reason: "pipe") }
        for end in ends { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        return (ends[0], ends[1])
    }
}
