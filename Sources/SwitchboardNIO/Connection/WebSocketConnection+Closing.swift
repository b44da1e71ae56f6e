import Logging
import NIOCore
import SwitchboardCore

/// Every way out of a connection ends here: the server-initiated close handshake, the failure path,
/// and `unregister`, which runs exactly once, when TCP is gone, and removes the connection from every table.
extension WebSocketConnection {
    /// Starts the close handshake. Data already queued goes out before the close frame (so a drain on
    /// shutdown delivers it), except for a slow consumer, whose backlog is the problem.
    func close(
        _ reason: DisconnectReason, code: CloseCode? = nil, message: String? = nil, reconnectAfter: TimeAmount? = nil
    ) {
        guard case .sendClose(let code, let message) = machine.close(reason, code: code, message: message) else {
            return
        }
        guard let context else { return }
        // From the close frame on, everything goes through NIO; a slow consumer's backlog is the problem.
        beginClosing(reason == .slowConsumer ? .drop : .send, context: context)
        if let notice = hub.application.disconnectNotice(
            reason: reason, code: code, message: message, reconnectAfter: reconnectAfter)
        {
            output(notice, context: context)
        }
        output(FrameEncoder.encodeClose(code, reason: message, allocator: context.channel.allocator), context: context)
        flushOutput(context)
        startCloseTimer()
    }

    /// The peer broke the protocol: send the close frame, stop reading the now unparseable stream,
    /// and half-close so the peer sees our close frame followed by EOF (closing outright could turn
    /// into a reset that destroys the close frame in flight).
    func fail(_ failure: WebSocketFailure) {
        guard case .sendClose(let code, let message) = machine.fail(failure), let context else { return }
        log(.info, "closing on protocol failure", metadata: ["code": "\(code)", "reason": "\(message)"])
        beginClosing(.sendWritten, context: context)
        discardingInput = true
        // The client needs the notice most here: it says not to reconnect and repeat the error.
        if let notice = hub.application.disconnectNotice(
            reason: DisconnectReason(failure: failure), code: code, message: message, reconnectAfter: nil)
        {
            context.write(wrapOutboundOut(notice), promise: nil)
        }
        let frame = FrameEncoder.encodeClose(code, reason: message, allocator: context.channel.allocator)
        context.writeAndFlush(wrapOutboundOut(frame)).assumeIsolated().whenComplete { _ in
            context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        }
        startCloseTimer()
    }

    /// Every closing path starts it: whatever the peer does (reads nothing, never answers), TCP is gone
    /// within the close timeout.
    func startCloseTimer() {
        guard closeTimer == nil, let context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        closeTimer = context.eventLoop.scheduleTask(in: hub.configuration.closeTimeout) {
            let connection = loopBound.value
            if connection.machine.closeTimedOut() == .disconnect {
                connection.context?.close(promise: nil)
            }
        }
    }

    /// Leaves every table and frees every buffer. Runs once, from `channelInactive`.
    func unregister(_ reason: DisconnectReason) {
        streamWriter?.failPending()
        closeTimer?.cancel()
        closeTimer = nil
        releaseLimitCounts()
        shard.unregister(self)
        hub.connectionClosed(reason, transport: transport)
        log(.debug, "connection closed", metadata: ["reason": "\(reason.rawValue)"])
        hub.application.connectionClosed(self, reason: reason)
        applicationState = nil
        context = nil
    }
}
