import NIOCore

/// Matches replies to commands in order; one per connection, on its loop.
final class RedisHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// A command waiting for its reply. (Un)subscribe commands are answered by one confirmation per channel
    /// (pushes in RESP3, arrays in RESP2), gathered into one array reply.
    private struct Pending {
        var id: UInt64
        var promise: EventLoopPromise<RESPValue>
        var timer: Scheduled<Void>
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
    private var nextID: UInt64 = 0
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
        nextID &+= 1
        let id = nextID
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let timer = context.eventLoop.scheduleTask(in: timeout) { loopBound.value.0.timedOut(id) }
        var entry = Pending(id: id, promise: promise, timer: timer)
        if case .string(let name) = arguments.first, Self.subscriptionCommands.contains(name.uppercased()) {
            // Each named channel is confirmed; without names (unsubscribe from all) one confirmation is awaited.
            entry.confirmations = max(arguments.count - 1, 1)
        }
        if case .string(let name) = arguments.first, name.uppercased() == "PING" { entry.isPing = true }
        pending.append(entry)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
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
            head.timer.cancel()
            return head.promise.succeed(.array(head.confirmed))
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
        head.timer.cancel()
        if case .error(let message) = value {
            head.promise.fail(RedisError.server(message))
            // A primary demoted to replica (a failover): this connection must find the new primary.
            if message.contains("READONLY") { context?.close(promise: nil) }
        } else {
            head.promise.succeed(value)
        }
    }

    /// Each command times out on its own: the one that is slow fails, and those behind it keep their own
    /// deadlines (one slow read must not fail a pipeline of publishes that ran). Its reply, when it comes,
    /// is matched and dropped. Still unanswered after a second timeout, the link is stuck or dead: closed.
    private func timedOut(_ id: UInt64) {
        guard let index = pending.firstIndex(where: { $0.id == id }), let context else { return }
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        let promise = pending[index].promise
        pending[index].timer = context.eventLoop.scheduleTask(in: timeout) {
            let (handler, context) = loopBound.value
            guard handler.pending.contains(where: { $0.id == id }) else { return }
            // Closed first, so nothing a failure callback sends goes to the dead link.
            context.close(promise: nil)
            handler.failAll(RedisError.replyLost)
        }
        // Last: its callbacks run now and may send, fail or close (changing `pending`). A later completion
        // of the failed promise, when the reply comes, is ignored.
        promise.fail(RedisError.timeout)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(RedisError.replyLost)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func failAll(_ error: RedisError) {
        while let entry = pending.popFirst() {
            entry.timer.cancel()
            entry.promise.fail(error)
        }
    }
}
