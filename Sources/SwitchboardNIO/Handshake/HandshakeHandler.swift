import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// Owns a new TCP connection until it is a WebSocket: enforces the handshake timeout, validates the
/// upgrade request, applies the connection limit and the application's decision, answers 101 or an
/// error status with a reason, then swaps the HTTP handlers for a `WebSocketConnection`.
final class HandshakeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case awaitingHead
        case awaitingEnd(HTTPRequestHead)
        /// Waiting for the application's decision; further input waits in the HTTP decoder.
        case deciding
        case done
    }

    private let hub: Hub
    private let shard: LoopShard
    private let encoder: HTTPResponseEncoder
    private let decoder: ByteToMessageHandler<HTTPRequestDecoder>
    private var state = State.awaitingHead
    private var timeout: Scheduled<Void>?
    /// When the handshake began (at accept): the decision gets what is left of the handshake timeout.
    private let started = NIODeadline.now()
    /// Plain TCP and allowed by the configuration: the connection may write its socket directly.
    private let directSocket: DirectSocket?

    init(
        hub: Hub, shard: LoopShard, encoder: HTTPResponseEncoder, decoder: ByteToMessageHandler<HTTPRequestDecoder>,
        directSocket: DirectSocket?
    ) {
        self.directSocket = directSocket
        self.hub = hub
        self.shard = shard
        self.encoder = encoder
        self.decoder = decoder
    }

    func handlerAdded(context: ChannelHandlerContext) {
        shard.admission.handshakeStarted()
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        timeout = context.eventLoop.scheduleTask(in: hub.configuration.handshakeTimeout) {
            let (handler, context) = loopBound.value
            handler.timedOut(context: context)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        shard.admission.handshakeEnded()
        timeout?.cancel()
        // A verdict that arrives after this finds the handshake over and gives its admission back.
        state = .done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch (state, unwrapInboundIn(data)) {
        case (.awaitingHead, .head(let head)):
            state = .awaitingEnd(head)
        case (.awaitingEnd(let head), .end):
            state = .deciding
            decide(head, context: context)
        case (.awaitingEnd, .body), (.deciding, _), (.done, _):
            break  // a body on an upgrade request is ignored; nothing else can arrive before we answer
        case (.awaitingHead, _), (.awaitingEnd, .head):
            state = .done
            reject(.bad("malformed HTTP request"), context: context)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard case .done = state else {
            state = .done
            reject(.bad("malformed HTTP request"), context: context)
            return
        }
        context.close(promise: nil)
    }

    /// Whatever the state: a request still here at the deadline never upgraded, and a client that does not
    /// read its answer (a page, a refusal) must not keep its place among the handshakes in progress.
    private func timedOut(context: ChannelHandlerContext) {
        if case .done = state {} else { hub.metrics.rejected(.timeout) }
        state = .done
        hub.logger.debug(
            "handshake timeout", metadata: ["remote": "\(context.remoteAddress.map { "\($0)" } ?? "?")"])
        context.close(promise: nil)
    }

    private func decide(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        if let site = hub.site, !head.headers["Upgrade"].contains(where: { $0.lowercased().contains("websocket") }),
            String(head.uri.prefix { $0 != "?" }) != hub.configuration.path
        {
            state = .done
            return serve(site.respond(to: head), context: context)
        }
        // Always continue on a fresh stack: the verdict may be ready at once, while the HTTP decoder is
        // mid-read. The handshake timeout, still running, bounds the wait.
        let loop = context.eventLoop
        // The decision's deadline is the handshake's: at it this handler closes the connection and counts the
        // timeout, and the hub gives back the places held for it.
        hub.admit(
            head, remoteAddress: context.channel.remoteAddress, path: hub.configuration.path, on: loop,
            deciding: hub.configuration.handshakeTimeout - (.now() - started), countsTimeout: false
        )
        .assumeIsolated().whenSuccess { verdict in
            loop.assumeIsolated().execute { self.decided(verdict, context: context) }
        }
    }

    private func decided(_ verdict: UpgradeVerdict, context: ChannelHandlerContext) {
        // The client left or the handshake timed out while the application was deciding.
        guard case .deciding = state, context.channel.isActive else {
            if case .admitted(let admission) = verdict { admission.cancel() }
            return
        }
        state = .done
        switch verdict {
        case .refused(let refusal): answer(refusal, context: context)
        case .admitted(let admission): upgrade(admission, context: context)
        }
    }

    private func upgrade(_ admission: UpgradeAdmission, context: ChannelHandlerContext) {
        var headers = HTTPHeaders([("Upgrade", "websocket"), ("Connection", "Upgrade")])
        headers.add(contentsOf: admission.responseHeaders)
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        do {
            let connection = try hub.connection(for: admission, on: context.eventLoop, directSocket: directSocket)
            let pipeline = context.pipeline.syncOperations
            do {
                try pipeline.addHandler(connection, position: .after(self))
            } catch {
                connection.abandon()
                throw error
            }
            pipeline.removeHandler(context: context, promise: nil)
            pipeline.removeHandler(encoder, promise: nil)
            connection.start()
            // Removing the decoder forwards the bytes that followed the request (the first frames) to the
            // connection, which now sits right behind it.
            pipeline.removeHandler(decoder, promise: nil)
        } catch {
            hub.logger.error("pipeline reconfiguration failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// A page of the static site; the connection closes after it, like every answer that is not a 101.
    private func serve(_ response: StaticSite.Response, context: ChannelHandlerContext) {
        var headers = response.headers
        headers.add(name: "Content-Length", value: "\(response.headLength ?? response.contentLength)")
        headers.add(name: "Connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: response.status, headers: headers))),
            promise: nil)
        if let body = response.body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }

    /// Refusals found here (malformed HTTP) are counted like the hub's own.
    private func reject(_ refusal: UpgradeRefusal, context: ChannelHandlerContext) {
        _ = hub.refused(refusal)
        answer(refusal, context: context)
    }

    private func answer(_ refusal: UpgradeRefusal, context: ChannelHandlerContext) {
        let (head, text) = refusal.response
        var body = context.channel.allocator.buffer(capacity: text.utf8.count)
        body.writeString(text)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
