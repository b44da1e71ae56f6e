import NIOCore

/// Matches replies to commands in order; one per connection, on its loop.
///
/// Commands sent in one burst (one pass of the loop's tasks) leave in one flush. Each command has its own
/// deadline, but one timer serves them all: deadlines come in send order, so the timer is armed for the
/// oldest command still inside its first timeout (or, once that passed, its second) and re-armed when it
/// fires; a command answered in time costs no timer of its own.
final class RedisHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A command waiting for its reply. (Un)subscribe commands are answered by one confirmation per channel
    /// (pushes in RESP3, arrays in RESP2), gathered into one array reply.
    private struct Pending {
        var promise: EventLoopPromise<RESPValue>
        /// When it times out; after that (its promise failed, its reply still awaited to keep replies in
        /// order), when the link is given up as stuck.
        var deadline: NIODeadline
        var timedOut = false
        var confirmations = 0
        var confirmed: [RESPValue] = []
        /// A PING on a subscribed RESP2 connection: a message arriving before its reply is not the reply.
        var isPing = false
    }

    private static let subscriptionCommands: Set<String> = [
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
    ]
    private static let confirmationKinds: Set<String> = [
        "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "ssubscribe", "sunsubscribe",
    ]

    private var decoder = RESPDecoder()
    private var pending = CircularBuffer<Pending>()
    private var timer: Scheduled<Void>?
    private var flushScheduled = false
    private var context: ChannelHandlerContext?
    private var input: ByteBuffer?
    private let timeout: TimeAmount
    private let onPush: @Sendable (RESPValue) -> Void

    init(timeout: TimeAmount, onPush: @escaping @Sendable (RESPValue) -> Void) {
        self.timeout = timeout
        self.onPush = onPush
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func send(_ arguments: [RESPArgument], promise: EventLoopPromise<RESPValue>) {
        guard let context, context.channel.isActive else { return promise.fail(RedisError.connectionLost) }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        RESPEncoder.encode(arguments, into: &buffer)
        var entry = Pending(promise: promise, deadline: context.eventLoop.now + timeout)
        if case .string(let name) = arguments.first, Self.subscriptionCommands.contains(name.uppercased()) {
            // Each named channel is confirmed; without names (unsubscribe from all) one confirmation is awaited.
            entry.confirmations = max(arguments.count - 1, 1)
        }
        if case .string(let name) = arguments.first, name.uppercased() == "PING" { entry.isPing = true }
        pending.append(entry)
        // Deadlines only grow in send order (a timed-out command's second one, sent + 2T, comes before any
        // later command's first): the armed timer is never later than this one's, unless none is armed.
        if timer == nil { arm(at: entry.deadline, context: context) }
        context.write(wrapOutboundOut(buffer), promise: nil)
        guard !flushScheduled else { return }
        flushScheduled = true
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.execute {
            let (handler, context) = loopBound.value
            handler.flushScheduled = false
            context.flush()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if var buffered = input {
            input = nil
            buffered.writeBuffer(&bytes)
            bytes = buffered
        }
        do {
            while let value = try decoder.next(from: &bytes) { received(value) }
        } catch {
            failAll(RedisError.protocolViolation(error.description))
            context.close(promise: nil)
            return
        }
        if bytes.readableBytes > 0 {
            // Only the unfinished scalar is left (the decoder keeps finished elements): drop what was read.
            bytes.discardReadBytes()
            input = bytes
        }
    }

    private func received(_ value: RESPValue) {
        if var head = pending.first, head.confirmations > 0, let kind = value.elements?.first?.string,
            Self.confirmationKinds.contains(kind.lowercased())
        {
            head.confirmed.append(value)
            guard head.confirmed.count == head.confirmations else {
                pending[pending.startIndex] = head
                return
            }
            pending.removeFirst()
            if !head.timedOut { head.promise.succeed(.array(head.confirmed)) }
            return
        }
        if case .push = value { return onPush(value) }
        // RESP2: a message for a channel already subscribed, arriving while another (un)subscribe waits.
        if let head = pending.first, head.confirmations > 0 || head.isPing,
            let kind = value.elements?.first?.string, ["message", "pmessage", "smessage"].contains(kind)
        {
            return onPush(value)
        }
        guard let head = pending.popFirst() else {
            // A RESP2 pub/sub message arrives as a plain array with no command waiting for it.
            return onPush(value)
        }
        if case .error(let message) = value {
            // A primary demoted to replica (a failover): this connection must find the new primary.
            if message.contains("READONLY") { context?.close(promise: nil) }
            // A reply that came after its promise failed (it timed out) is matched and dropped.
            if !head.timedOut { head.promise.fail(RedisError.server(message)) }
        } else if !head.timedOut {
            head.promise.succeed(value)
        }
    }

    /// Each command times out on its own: the one that is slow fails, and those behind it keep their own
    /// deadlines (one slow read must not fail a pipeline of publishes that ran). Its reply, when it comes,
    /// is matched and dropped. Still unanswered after a second timeout, the link is stuck or dead: closed.
    private func arm(at deadline: NIODeadline, context: ChannelHandlerContext) {
        timer?.cancel()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) { loopBound.value.deadlinePassed() }
    }

    private func deadlinePassed() {
        timer = nil
        guard let context else { return }
        let now = context.eventLoop.now  // the loop's clock: a test's EmbeddedEventLoop moves it
        var expired: [EventLoopPromise<RESPValue>] = []
        var next: NIODeadline?
        for index in pending.indices {
            if pending[index].deadline > now {
                next = min(next ?? pending[index].deadline, pending[index].deadline)
                // Deadlines of commands not yet timed out rise in send order: none further is due.
                if !pending[index].timedOut { break }
                continue
            }
            guard !pending[index].timedOut else {
                // Its second timeout: closed first, so nothing a failure callback sends goes to the dead link.
                context.close(promise: nil)
                failAll(RedisError.replyLost)
                for promise in expired { promise.fail(RedisError.timeout) }
                return
            }
            pending[index].timedOut = true
            pending[index].deadline = pending[index].deadline + timeout
            next = min(next ?? pending[index].deadline, pending[index].deadline)
            expired.append(pending[index].promise)
        }
        if let next { arm(at: next, context: context) }
        // Last: their callbacks run now and may send, fail or close (changing `pending`). A later completion
        // of a failed promise, when the reply comes, never happens: the reply is dropped.
        for promise in expired { promise.fail(RedisError.timeout) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.replyLost)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        timer?.cancel()
        timer = nil
        while let entry = pending.popFirst() {
            if !entry.timedOut { entry.promise.fail(error) }
        }
    }
}
