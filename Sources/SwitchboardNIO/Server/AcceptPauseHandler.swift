import Logging
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Stops accepting for a moment when accept(2) fails for lack of descriptors or memory (at the
/// process's open-file limit, say), so the server keeps serving the connections it has instead of
/// spinning. NIO's `AcceptBackoffHandler` cannot do this on its own: when the first accept of a read
/// cycle fails, NIO keeps the listening socket registered without asking the pipeline to read again,
/// so the handler's delayed read never matters and the loop spins on accept4 → EMFILE (measured: 100%
/// of a core, 10,000 failed accepts a second, with NIO 2.101). Turning `autoRead` off deregisters the
/// listening socket; turning it on after the pause tries again.
package final class AcceptPauseHandler: ChannelInboundHandler {
    package typealias InboundIn = any Channel
    private static let resourceErrors: Set<CInt> = [EMFILE, ENFILE, ENOBUFS, ENOMEM]

    private let pause: TimeAmount
    private let metrics: SwitchboardMetrics?
    private let logger: Logger
    private var resume: Scheduled<Void>?
    /// Pauses since the last accepted connection: the log says when the trouble starts and ends, not
    /// every 100 ms in between.
    private var pausesInARow = 0

    package init(pause: TimeAmount, metrics: SwitchboardMetrics?, logger: Logger) {
        self.pause = pause
        self.metrics = metrics
        self.logger = logger
    }

    package func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard let ioError = error as? IOError, Self.resourceErrors.contains(ioError.errnoCode) else {
            context.fireErrorCaught(error)
            return
        }
        metrics?.acceptPaused.increment()
        guard resume == nil, let options = context.channel.syncOptions else { return }
        if pausesInARow == 0 {
            logger.warning(
                "cannot accept connections; retrying every \(pause.nanoseconds / 1_000_000) ms",
                metadata: ["error": "\(ioError)"])
        }
        pausesInARow += 1
        try? options.setOption(.autoRead, value: false)
        resume = context.eventLoop.assumeIsolated().scheduleTask(in: pause) {
            self.resume = nil
            try? options.setOption(.autoRead, value: true)
        }
    }

    package func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if pausesInARow > 0 {
            logger.info("accepting connections again", metadata: ["pauses": "\(pausesInARow)"])
            pausesInARow = 0
        }
        context.fireChannelRead(data)
    }

    package func channelInactive(context: ChannelHandlerContext) {
        resume?.cancel()
        resume = nil
        context.fireChannelInactive()
    }
}
