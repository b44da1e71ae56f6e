import Logging
import NIOCore
import SwitchboardCore

/// One open WebSocket: the channel handler that feeds inbound bytes through the `MessageAssembler`,
/// drives the `ConnectionStateMachine`, and owns the connection's outbound queue and heartbeat state.
/// It lives on one event loop and is referenced from that loop's `LoopShard` only, so nothing in it
/// is locked. Inbound handling is here; delivery and closing are in the extensions beside this file.
final class WebSocketConnection: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    // What a fan-out write reads comes first, in a few adjacent cache lines: the receiver is cold by then.
    let shard: LoopShard
    var context: ChannelHandlerContext?
    var machine = ConnectionStateMachine()
    /// Where each outbound frame goes, when to flush, what the queue holds (`OutboundStateMachine`).
    var outbound: OutboundStateMachine
    /// The socket, for direct writes while `outbound` allows them (plain TCP); see `DirectSocket`.
    let directSocket: DirectSocket?
    /// The shard's inbox batch in which this connection was last flushed at once (`LoopShard.flushesAtOnce`).
    var flushedInBatch: UInt64 = 0
    /// What permessage-deflate negotiation agreed to; nil: messages go uncompressed both ways.
    let deflate: DeflateParameters?

    let id: ConnectionID
    /// How the client reached the hub: a WebSocket, or a stream.
    let transport: Transport
    /// A stream's writer: it turns the frames this connection writes into the stream's events. Nil for a
    /// WebSocket.
    let streamWriter: EventStreamWriter?
    /// Set at the upgrade, or later by the application (`identify`) when the client authenticates in-band.
    private(set) var userID: String?
    let subprotocol: String?
    private(set) var info: String?
    var attachment: (any Sendable)?
    /// Counted against the per-address limit (released when the connection goes).
    private(set) var clientAddress: String?
    /// The client is on this host and no proxy forwarded its request.
    let isLocal: Bool
    /// Counted against the per-user limit: the upgrade's user, or the one `identify` admitted.
    private(set) var countedUser: String?
    /// Inbound message and byte rates, when `AbuseLimits` bounds them (taken at the upgrade); a reference, so
    /// connections without limits carry one word rather than both buckets.
    private let inbound: InboundLimiter?
    let hub: Hub
    var assembler: MessageAssembler
    var heartbeat: HeartbeatState
    /// The start of a frame header split across reads (at most 13 bytes); payload is never held here.
    private var partialInput: ByteBuffer?
    /// Set after a protocol failure: the byte stream can no longer be parsed, so input is discarded.
    var discardingInput = false
    var closeTimer: Scheduled<Void>?
    /// When the connection's credentials expire (the upgrade decision's `expiresAt`, or `expire(at:)`).
    private(set) var expiresAt: NIODeadline?
    /// The application's own per-connection state (`LocalConnection.applicationState`).
    var applicationState: AnyObject?
    /// When the application is told they soon will (`SwitchboardApplication.credentialsExpiring`).
    var expiryWarningAt: NIODeadline?
    /// The deadline of this connection's live entry in the shard's wheel; other entries are stale.
    var wheelCheckAt = Int64.max

    init(
        id: ConnectionID, userID: String?, subprotocol: String?, info: String?, expiresAt: NIODeadline? = nil,
        attachment: (any Sendable)? = nil, deflate: DeflateParameters? = nil, clientAddress: String? = nil,
        countedUser: String? = nil, isLocal: Bool = false, directSocket: DirectSocket? = nil,
        transport: Transport = .webSocket, streamWriter: EventStreamWriter? = nil, hub: Hub, shard: LoopShard
    ) {
        self.transport = transport
        self.streamWriter = streamWriter
        self.isLocal = isLocal
        self.directSocket = directSocket
        self.clientAddress = clientAddress
        self.countedUser = countedUser
        // A one-way stream receives nothing to limit (one whose client writes is ended: `channelRead`).
        self.inbound =
            transport == .eventStream
            ? nil : InboundLimiter(hub.abuseLimits, maxMessageSize: hub.configuration.maxMessageSize)
        self.attachment = attachment
        self.deflate = deflate
        self.id = id
        self.userID = userID
        self.subprotocol = subprotocol
        self.info = info
        self.expiresAt = expiresAt
        self.hub = hub
        self.shard = shard
        let configuration = hub.configuration
        assembler = MessageAssembler(
            maxMessageSize: configuration.maxMessageSize, inflaters: deflate == nil ? nil : shard.inflaters,
            contextTakeover: deflate?.clientContextTakeover ?? false)
        outbound = OutboundStateMachine(
            direct: directSocket != nil,
            queue: OutboundQueue(
                maxBytes: configuration.queueMaxBytes, maxMessages: configuration.queueMaxMessages,
                policy: configuration.slowConsumerPolicy),
            heldBytesLimit: configuration.writeBufferHighWaterMark)
        heartbeat = shard.newHeartbeat()
    }

    var handle: ConnectionHandle {
        ConnectionHandle(id: id, userID: userID, subprotocol: subprotocol, info: info, hub: hub)
    }

    /// Logs with the connection's id (and user) in the metadata. The level is checked first: building a
    /// logger with metadata costs more than the rest of opening a connection when nothing is logged.
    func log(
        _ level: Logger.Level, _ message: @autoclosure () -> Logger.Message,
        metadata: @autoclosure () -> Logger.Metadata = [:]
    ) {
        guard hub.logger.logLevel <= level else { return }
        var logger = hub.logger
        logger[metadataKey: "connection"] = "\(id)"
        if let userID { logger[metadataKey: "user"] = "\(userID)" }
        logger.log(level: level, message(), metadata: metadata())
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        _ = outbound.writabilityChanged(context.channel.isWritable)
    }

    /// Called by the handshake once the HTTP handlers are gone, so that writes reach the socket as is.
    func start() {
        guard let context, context.channel.isActive, machine.upgraded() == .register else { return abandon() }
        shard.register(self)
        hub.connectionOpened(transport)
        log(.debug, "connection opened")
        hub.application.connectionOpened(self)
        // Upgraded after the drain passed this loop (its verdict came just before the drain began): the drain
        // will not see it, so it leaves now, as the drain would have it leave.
        if hub.isShuttingDown, machine.state == .open {
            close(.shutdown, message: "server shutting down", reconnectAfter: nil)
        }
        // The upgrade's expiry (or the one `connectionOpened` set, with its warning) goes on the wheel now
        // that the connection is registered; the warning is kept.
        if let expiresAt, machine.state == .open {
            shard.scheduleCheck(self, at: Self.earliest(Int64(expiresAt.uptimeNanoseconds), expiryWarningAt))
        }
    }

    /// Gives back the places under the limits of a connection that never opened (the channel closed first,
    /// or the pipeline could not take it).
    func abandon() {
        hub.releaseConnectionSlot()
        releaseLimitCounts()
    }

    /// Names the connection's user and info after the upgrade, and re-indexes it by user.
    @discardableResult
    func identify(userID: String?, info: String?) -> Bool {
        if userID != countedUser {
            if let countedUser { hub.releaseUser(countedUser) }
            countedUser = nil
            if let userID, let log = hub.admitUser(userID, limits: hub.abuseLimits) {
                if log {
                    self.log(
                        .warning, "abuse limit: too many connections for a user", metadata: ["to_user": "\(userID)"])
                }
                close(.tooManyUserConnections)
                return false
            }
            countedUser = userID
        }
        shard.reindex(self, from: self.userID, to: userID)
        self.userID = userID
        self.info = info
        return true
    }

    /// Closes the connection with 4001 at `deadline` (replacing any earlier deadline), telling the
    /// application at `warnAt` first; nil: never. Checked on the shard's heartbeat wheel, not by timers of
    /// their own: an authenticated connection costs a few bytes more than an anonymous one, not two tasks.
    func expire(at deadline: NIODeadline?, warnAt: NIODeadline?) {
        expiresAt = deadline
        expiryWarningAt = deadline == nil ? nil : warnAt
        guard let deadline, machine.state == .open else { return }
        shard.scheduleCheck(self, at: Self.earliest(Int64(deadline.uptimeNanoseconds), expiryWarningAt))
    }

    /// The earlier of `time` and `deadline`.
    static func earliest(_ time: Int64, _ deadline: NIODeadline?) -> Int64 {
        guard let deadline else { return time }
        return min(time, Int64(deadline.uptimeNanoseconds))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !discardingInput else { return }
        var buffer = unwrapInboundIn(data)
        // A stream's client sends nothing after its request (its commands, if any, come by POST): blank
        // lines are let pass, anything else ends the stream.
        if streamWriter != nil {
            if buffer.readableBytesView.contains(where: { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }) {
                context.close(promise: nil)
            }
            return
        }
        shard.counters.bytesIn += buffer.readableBytes
        if let inbound, machine.state == .open, !inbound.admitBytes(buffer.readableBytes) {
            return inboundLimitExceeded("bytes")
        }
        if var partial = partialInput {
            partialInput = nil
            partial.writeBuffer(&buffer)
            buffer = partial
        }
        do {
            while !discardingInput, machine.state != .closed, let message = try assembler.next(from: &buffer) {
                handle(message, context: context)
            }
        } catch {
            return fail(error)
        }
        if let inbound, machine.state == .open, !inbound.admitFrames(assembler.takeFrameCount()) {
            return inboundLimitExceeded("frames")
        }
        if buffer.readableBytes > 0, !discardingInput {
            // Copy the few leftover header bytes so the whole read buffer is not kept alive.
            var rest = context.channel.allocator.buffer(capacity: buffer.readableBytes)
            rest.writeBuffer(&buffer)
            partialInput = rest
        }
    }

    private func handle(_ message: InboundMessage, context: ChannelHandlerContext) {
        if case .pong = message { heartbeat.pongReceived() }
        switch machine.received(message) {
        case .deliver:
            switch message {
            case .text(let payload): deliver(.text(payload))
            case .binary(let payload): deliver(.binary(payload))
            default: break
            }
        case .sendPong:
            if case .ping(let payload) = message {
                writeControl(FrameEncoder.encode(.pong, payload: payload, allocator: context.channel.allocator))
            }
        case .replyCloseAndDisconnect(let code):
            beginClosing(.sendWritten, context: context)  // replies written in this read go before the close reply
            let frame = FrameEncoder.encodeClose(code, reason: "", allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
                context.close(promise: nil)
            }
            // A peer that stopped reading keeps that write pending for ever: the close timer ends it.
            startCloseTimer()
        case .disconnect:
            context.close(promise: nil)
        default:
            break
        }
    }

    /// A message that reached this connection another way (a `POST` of the HTTP transport): counted and
    /// limited like one read from the socket, then handed to the application. Call on the connection's loop.
    func receive(_ message: DataMessage) {
        shard.eventLoop.assertInEventLoop()
        guard machine.state == .open else { return }
        let size: Int
        switch message {
        case .text(let payload), .binary(let payload): size = payload.readableBytes
        }
        shard.counters.bytesIn += size
        if let inbound, !inbound.admitBytes(size) { return inboundLimitExceeded("bytes") }
        deliver(message)
    }

    /// A whole data message, however it came: within the message rate, counted, and handed to the application.
    private func deliver(_ message: DataMessage) {
        if let inbound, !inbound.admitMessage() { return inboundLimitExceeded("messages") }
        shard.counters.messagesIn += 1
        heartbeat.dataReceived(now: LoopShard.now())
        hub.application.connection(self, received: message)
    }

    /// Gives back this connection's places under the per-address and per-user limits (once: both are cleared).
    func releaseLimitCounts() {
        if let clientAddress { hub.releaseAddress(clientAddress) }
        clientAddress = nil
        if let countedUser { hub.releaseUser(countedUser) }
        countedUser = nil
    }

    /// Sustained abuse: the bucket stayed in debt. The close handshake says why; data after it is ignored.
    private func inboundLimitExceeded(_ what: String) {
        guard machine.state == .open else { return }
        log(
            .warning, "abuse limit: inbound \(what) per second exceeded",
            metadata: ["client": "\(clientAddress ?? "?")"])
        close(.inboundRateLimited)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if outbound.writabilityChanged(context.channel.isWritable) { drainQueue() }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        // NIO has closed the descriptor (its number may already be another socket's): nothing more is written.
        shard.queuedMessages -= outbound.transportClosed()
        assembler.release()
        if case .unregister(let reason) = machine.transportClosed() {
            unregister(reason)
        }
        context.fireChannelInactive()
    }

    /// The server that accepted this connection is shutting down gracefully (Hummingbird's quiescing, say):
    /// the hub drains every connection the way `WebSocketServer.shutdown` does.
    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if event is ChannelShouldQuiesceEvent {
            _ = hub.shutdown()
        } else if let event = event as? ChannelEvent, event == .inputClosed {
            // A server that allows half-closure (Hummingbird's) tells us the peer sent FIN: it cannot answer
            // a close handshake any more, so the connection is over, as with our own sockets.
            context.close(promise: nil)
        } else {
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Resets and other socket errors end the connection; `channelInactive` does the bookkeeping.
        log(.debug, "connection error", metadata: ["error": "\(error)"])
        context.close(promise: nil)
    }
}

/// A connection's inbound rate limits: two seconds' worth of burst (a client catching up after a stall is
/// not cut off); the byte bucket may go into debt by one message, so a large message arriving over several
/// reads passes. Only connections with limits configured have one.
final class InboundLimiter {
    private var messages: TokenBucket?
    private var bytes: TokenBucket?
    private var frames: TokenBucket?
    private let maxDebt: Double

    init?(_ limits: AbuseLimits, maxMessageSize: Int) {
        guard
            limits.inboundMessagesPerSecond > 0 || limits.inboundBytesPerSecond > 0
                || limits.inboundFramesPerSecond > 0
        else { return nil }
        let now = LoopShard.now()
        if limits.inboundMessagesPerSecond > 0 {
            let rate = limits.inboundMessagesPerSecond
            messages = TokenBucket(rate: rate, burst: 2 * rate, now: now)
        }
        if limits.inboundBytesPerSecond > 0 {
            let rate = limits.inboundBytesPerSecond
            bytes = TokenBucket(rate: rate, burst: 2 * rate, now: now)
        }
        if limits.inboundFramesPerSecond > 0 {
            let rate = limits.inboundFramesPerSecond
            frames = TokenBucket(rate: rate, burst: 2 * rate, now: now)
        }
        maxDebt = Double(maxMessageSize)
    }

    /// The frames of one read, counted after it: a read holds at most a few thousand, so the bucket goes
    /// into debt by at most that much before the connection is closed.
    func admitFrames(_ count: Int) -> Bool {
        guard count > 0 else { return true }
        return frames?.takeAllowingDebt(Double(count), upTo: 0, now: LoopShard.now()) ?? true
    }

    func admitBytes(_ count: Int) -> Bool {
        bytes?.takeAllowingDebt(Double(count), upTo: maxDebt, now: LoopShard.now()) ?? true
    }

    func admitMessage() -> Bool {
        messages?.takeAllowingDebt(1, upTo: 0, now: LoopShard.now()) ?? true
    }
}
