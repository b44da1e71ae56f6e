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
        /// A `POST` of the HTTP transport, its body so far (bounded by the message size limit).
        case awaitingBody(HTTPRequestHead, ByteBuffer)
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
    /// What the request asked for: a WebSocket, or a stream (refusals are JSON then).
    private var transport = Transport.webSocket
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
            if head.method == .POST, let path = hub.configuration.httpStreamPath, Self.path(of: head) == path {
                transport = .httpStream
                // Refused before a byte of the body is held: a POST names a session and fits a message.
                if let refusal = Self.refusal(ofPost: head, hub: hub) {
                    state = .done
                    return reject(refusal, context: context)
                }
                state = .awaitingBody(head, context.channel.allocator.buffer(capacity: 0))
                // curl and others wait (up to a second) for this before sending a body past 1 KiB.
                if head.headers["Expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                    let proceed = HTTPResponseHead(version: .http1_1, status: .continue)
                    context.writeAndFlush(wrapOutboundOut(.head(proceed)), promise: nil)
                }
            } else {
                state = .awaitingEnd(head)
            }
        case (.awaitingEnd(let head), .end):
            state = .deciding
            decide(head, context: context)
        case (.awaitingBody(let head, var body), .body(var part)):
            guard body.readableBytes + part.readableBytes <= hub.configuration.maxMessageSize else {
                state = .done
                transport = .httpStream
                return reject(
                    .init(status: .payloadTooLarge, reason: "body too large", kind: .badRequest), context: context)
            }
            body.writeBuffer(&part)
            state = .awaitingBody(head, body)
        case (.awaitingBody(let head, let body), .end):
            state = .deciding
            post(head, body: body, context: context)
        case (.awaitingEnd, .body), (.deciding, _), (.done, _):
            break  // a body on an upgrade request is ignored; nothing else can arrive before we answer
        case (.awaitingHead, _), (.awaitingEnd, .head), (.awaitingBody, .head):
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

    private static func path(of head: HTTPRequestHead) -> Substring { head.uri.prefix { $0 != "?" } }

    /// Why a `POST` of the HTTP transport is refused from its head alone, if it is.
    private static func refusal(ofPost head: HTTPRequestHead, hub: Hub) -> UpgradeRefusal? {
        if hub.isShuttingDown { return Hub.shuttingDownRefusal }
        if let length = head.headers.first(name: "Content-Length").flatMap(Int.init),
            length > hub.configuration.maxMessageSize
        {
            return .init(status: .payloadTooLarge, reason: "body too large", kind: .badRequest)
        }
        guard QueryParameters(head.uri).first("session")?.isEmpty == false else {
            return .bad("session is required")
        }
        return nil
    }

    /// What a request at one of the stream paths asks for; nil: not a stream.
    private func streamTransport(_ head: HTTPRequestHead) -> Transport? {
        let path = Self.path(of: head)
        if let sse = hub.configuration.eventStreamPath, path == sse { return .eventStream }
        if let http = hub.configuration.httpStreamPath, path == http { return .httpStream }
        return nil
    }

    private func decide(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        if let transport = streamTransport(head) {
            self.transport = transport
            if head.method == .OPTIONS { return preflight(head, context: context) }
            guard head.method == .GET else {
                state = .done
                return reject(
                    .init(
                        status: .methodNotAllowed, reason: "use GET (or POST commands to a session)", kind: .badRequest),
                    context: context)
            }
        }
        if transport == .webSocket, let site = hub.site,
            !head.headers["Upgrade"].contains(where: { $0.lowercased().contains("websocket") }),
            Self.path(of: head) != hub.configuration.path.map { Substring($0) }
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
            deciding: hub.configuration.handshakeTimeout - (.now() - started), countsTimeout: false,
            transport: transport
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
        if admission.transport.isStream { return openStream(admission, context: context) }
        var headers = HTTPHeaders([("Upgrade", "websocket"), ("Connection", "Upgrade")])
        headers.add(contentsOf: admission.responseHeaders)
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        do {
            let connection = try hub.connection(for: admission, on: context.eventLoop, directSocket: directSocket)
            let pipeline = try add(connection, context: context)
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

    /// Puts the connection right behind this handler; one that cannot be added gives its places back.
    private func add(
        _ connection: WebSocketConnection, context: ChannelHandlerContext
    ) throws -> ChannelPipeline.SynchronousOperations {
        let pipeline = context.pipeline.syncOperations
        do {
            try pipeline.addHandler(connection, position: .after(self))
        } catch {
            connection.abandon()
            throw error
        }
        return pipeline
    }

    /// A stream: the connection with its `EventStreamWriter`, which writes the 200 head and turns its
    /// frames into events. TCP's user timeout finds a silent client, which cannot answer pings.
    private func openStream(_ admission: UpgradeAdmission, context: ChannelHandlerContext) {
        let configuration = hub.configuration
        let streams = admission.attachment as? any StreamAttachment
        let writer = EventStreamWriter.make(
            transport: admission.transport, streams: streams?.streamNames ?? [],
            positions: streams?.streamPositions ?? [], gzip: admission.gzip)
        var head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        head += "Cache-Control: no-cache, no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n"
        if writer.compresses { head += "Content-Encoding: gzip\r\n" }
        for (name, value) in admission.responseHeaders { head += "\(name): \(value)\r\n" }
        head += "\r\n"
        do {
            let connection = try hub.connection(
                for: admission, on: context.eventLoop, directSocket: nil, streamWriter: writer)
            let pipeline = try add(connection, context: context)
            #if os(Linux)
                if configuration.pingInterval > .zero {
                    let timeout = configuration.pingInterval + configuration.pongTimeout
                    try? context.channel.syncOptions?.setOption(
                        .tcpOption(.init(rawValue: Self.tcpUserTimeout)), value: Int(timeout.nanoseconds / 1_000_000))
                }
            #endif
            pipeline.removeHandler(context: context, promise: nil)
            pipeline.removeHandler(encoder, promise: nil)
            pipeline.removeHandler(decoder, promise: nil)
            writer.start(head: ByteBuffer(string: head), context: try pipeline.context(handler: connection))
            connection.start()
        } catch {
            hub.logger.error("pipeline reconfiguration failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// Linux's `TCP_USER_TIMEOUT` (at the TCP level): how long sent data may stay unacknowledged before
    /// the kernel ends the connection. A stream's client cannot answer pings; this is how a silent one ends.
    static let tcpUserTimeout: Int32 = 18

    /// A `POST` of the HTTP transport: the application routes its commands to the session; the answer is
    /// JSON. Bounded by what is left of the handshake timeout (the timer closes the connection at it).
    private func post(_ head: HTTPRequestHead, body: ByteBuffer, context: ChannelHandlerContext) {
        transport = .httpStream
        let checked = HandshakeValidator.validateStream(head, origins: hub.originPolicy, ownHosts: hub.ownHostNames)
        if case .failure(let refusal) = checked {
            state = .done
            return reject(refusal, context: context)
        }
        let session = QueryParameters(head.uri).first("session") ?? ""
        let loop = context.eventLoop
        let post = StreamPost(
            session: session, body: String(decoding: body.readableBytesView, as: UTF8.self),
            origin: head.headers.first(name: "Origin"))
        // On a fresh stack (an answer ready at once would otherwise run inside the decoder's read).
        hub.application.received(post, on: loop).hop(to: loop).whenComplete { result in
            loop.assumeIsolated().execute { self.answered(result, head: head, context: context) }
        }
    }

    private func answered(
        _ result: Result<StreamPostAnswer, any Error>, head: HTTPRequestHead, context: ChannelHandlerContext
    ) {
        guard context.channel.isActive, case .deciding = state else { return }
        state = .done
        switch result {
        case .success(let answer): self.answer(answer, head: head, context: context)
        case .failure:
            self.answer(.error(.internalServerError, code: 500, "internal error"), head: head, context: context)
        }
    }

    /// A CORS preflight for a cross-origin page the origin policy admits (the HTTP transport's `POST` with
    /// a JSON content type); refused like the request itself otherwise.
    private func preflight(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        state = .done
        let checked = HandshakeValidator.validateStream(head, origins: hub.originPolicy, ownHosts: hub.ownHostNames)
        if case .failure(let refusal) = checked { return reject(refusal, context: context) }
        guard let origin = head.headers.first(name: "Origin") else {
            return reject(.bad("a preflight names its Origin"), context: context)
        }
        let headers = HTTPHeaders([
            ("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Allow-Methods", "GET, POST"),
            ("Access-Control-Allow-Headers", "Content-Type, Authorization, Last-Event-ID"),
            ("Access-Control-Max-Age", "600"), ("Vary", "Origin"), ("Content-Length", "0"), ("Connection", "close"),
        ])
        respond(.noContent, headers, body: nil, context: context)
    }

    /// The JSON answer to a `POST`, with CORS for an admitted cross-origin page.
    private func answer(_ answer: StreamPostAnswer, head: HTTPRequestHead, context: ChannelHandlerContext) {
        var body = context.channel.allocator.buffer(capacity: answer.body.utf8.count + 1)
        body.writeString(answer.body + "\n")
        var headers = Hub.streamHeaders(head)
        headers.add(contentsOf: [
            ("Content-Type", "application/json"), ("Content-Length", "\(body.readableBytes)"), ("Connection", "close"),
            ("Cache-Control", "no-store"),
        ])
        respond(answer.status, headers, body: body, context: context)
    }

    /// A refusal to try again later, as an `EventSource` takes it: any answer but 200 `text/event-stream`
    /// makes it give up for good, so a restart or a reconnect storm would end every page's stream. This is
    /// a stream that says when to come back (`retry:`, from `Retry-After` or 1–3 s, jittered) and why
    /// (`event: error` with the JSON error), then ends.
    private func answerRetry(_ refusal: UpgradeRefusal, context: ChannelHandlerContext) {
        let seconds = refusal.extraHeaders.first { $0.0 == "Retry-After" }.flatMap { Int($0.1) }
        let milliseconds = (seconds ?? 1) * 1000 + Int.random(in: 0...2000)
        let error = #"{"error":{"code":\#(refusal.status.code),"message":\#(JSONText.quote(refusal.reason))}}"#
        var body = context.channel.allocator.buffer(capacity: error.utf8.count + 48)
        body.writeString("retry: \(milliseconds)\nevent: error\ndata: \(error)\n\n")
        let headers = HTTPHeaders([
            ("Content-Type", "text/event-stream; charset=utf-8"), ("Content-Length", "\(body.readableBytes)"),
            ("Cache-Control", "no-store"), ("Connection", "close"),
        ])
        respond(.ok, headers, body: body, context: context)
    }

    /// A page of the static site; the connection closes after it, like every answer that is not a 101.
    private func serve(_ response: StaticSite.Response, context: ChannelHandlerContext) {
        var headers = response.headers
        headers.add(name: "Content-Length", value: "\(response.headLength ?? response.contentLength)")
        headers.add(name: "Connection", value: "close")
        respond(response.status, headers, body: response.body, context: context)
    }

    /// Writes a whole answer, then ends the connection: closed, or half-closed (`halfClose`) when the client
    /// may still be sending a body we did not read — closing with it unread would reset the connection and
    /// could destroy the answer in flight (RFC 9112 §9.6); the handshake timer ends it.
    private func respond(
        _ status: HTTPResponseStatus, _ headers: HTTPHeaders, body: ByteBuffer?, context: ChannelHandlerContext,
        halfClose: Bool = false
    ) {
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        if let body { context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil) }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            guard halfClose else { return context.close(promise: nil) }
            context.close(mode: .output).assumeIsolated().whenFailure { _ in context.close(promise: nil) }
        }
    }

    /// Refusals found here (malformed HTTP) are counted like the hub's own.
    private func reject(_ refusal: UpgradeRefusal, context: ChannelHandlerContext) {
        _ = hub.refused(refusal)
        answer(refusal, context: context)
    }

    private func answer(_ refusal: UpgradeRefusal, context: ChannelHandlerContext) {
        if transport == .eventStream, refusal.status == .serviceUnavailable || refusal.status == .tooManyRequests {
            return answerRetry(refusal, context: context)
        }
        let (head, text) = refusal.response(json: transport.isStream)
        // A POST may be refused before its body was read.
        respond(
            head.status, head.headers, body: ByteBuffer(string: text), context: context,
            halfClose: transport == .httpStream)
    }
}
