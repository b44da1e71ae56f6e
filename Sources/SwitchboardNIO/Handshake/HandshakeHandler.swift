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
    /// Holds one of `maxConnections` from the reservation until the connection takes it over; released
    /// when the handler goes (the client left, the handshake timed out, the pipeline could not change).
    private var holdsSlot = false
    /// The client's address once counted against the per-address limits; released like the slot.
    private var countedAddress: String?
    /// The client is on this host and nothing forwarded the request (`ClientAddress.isLocal`).
    private var isLocal = false
    /// The user counted against the per-user limit at the upgrade; handed to the connection like the slot.
    private var countedUser: String?
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
        // A decision that completes after this finds the handshake over and does nothing.
        state = .done
        releaseSlot()
    }

    private func releaseSlot() {
        if let countedAddress { hub.releaseAddress(countedAddress) }
        countedAddress = nil
        if let countedUser { hub.releaseUser(countedUser) }
        countedUser = nil
        guard holdsSlot else { return }
        holdsSlot = false
        hub.releaseConnectionSlot()
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
        let accept: String
        switch HandshakeValidator.validate(
            head, path: hub.configuration.path, origins: hub.originPolicy, ownHosts: hub.ownHostNames)
        {
        case .failure(let rejection):
            state = .done
            return reject(rejection, context: context)
        case .success(let value):
            accept = value
        }
        guard !hub.isShuttingDown else {
            state = .done
            return reject(
                .init(status: .serviceUnavailable, reason: "server shutting down", kind: .shuttingDown),
                context: context)
        }
        guard shard.admission.admitUpgrade(now: LoopShard.now()) else {
            state = .done
            return reject(
                .init(
                    status: .serviceUnavailable, reason: "too many new connections; retry later", kind: .rateLimited,
                    extraHeaders: [("Retry-After", "1")]), context: context)
        }
        let limits = hub.abuseLimits
        let peer = context.channel.remoteAddress?.ipAddress
        let forwardedFor = head.headers["X-Forwarded-For"]
        let forwarded = head.headers["Forwarded"]
        let client = ClientAddress.resolve(
            peer: peer, forwardedFor: forwardedFor, forwarded: forwarded, trusted: limits.trustedRanges)
        isLocal = ClientAddress.isLocal(
            peer: peer, forwardedFor: forwardedFor, forwarded: forwarded, trusted: limits.trustedRanges)
        let verdict = hub.admitAddress(client, limits: limits)
        switch verdict {
        case .admitted: break
        case .counted: countedAddress = client
        case .tooMany, .tooFast:
            state = .done
            return reject(client, verdict, context: context)
        }
        guard hub.reserveConnectionSlot() else {
            state = .done
            return reject(
                .init(
                    status: .serviceUnavailable, reason: "too many connections", kind: .tooManyConnections,
                    extraHeaders: [("Retry-After", "5")]), context: context)
        }
        holdsSlot = true
        // The decision is the application's (a database, an HTTP call for keys...): it may complete on any
        // event loop, late or never. Hop to this channel's loop before touching it; the handshake timeout,
        // still running, bounds the wait. Always continue on a fresh stack: the decision may arrive while
        // the HTTP decoder is mid-read.
        let loop = context.eventLoop
        hub.application.shouldUpgrade(head, from: context.channel.remoteAddress, on: loop).hop(to: loop)
            .assumeIsolated().whenComplete { result in
                loop.assumeIsolated().execute { self.decided(result, head: head, accept: accept, context: context) }
            }
    }

    private func decided(
        _ result: Result<UpgradeDecision, any Error>, head: HTTPRequestHead, accept: String,
        context: ChannelHandlerContext
    ) {
        // The client left or the handshake timed out while the application was deciding.
        guard case .deciding = state, context.channel.isActive else { return }
        state = .done
        switch result {
        case .success(.accept(let userID, let subprotocol, let info, let expiresAt, let attachment)):
            if let userID, let log = hub.admitUser(userID, limits: hub.abuseLimits) {
                releaseSlot()
                if log {
                    hub.logger.warning("abuse limit: too many connections for a user", metadata: ["user": "\(userID)"])
                }
                return reject(
                    .init(
                        status: .tooManyRequests, reason: "too many connections for this user", kind: .tooManyForUser),
                    context: context)
            }
            countedUser = userID
            if let expiresAt, expiresAt <= .now() {
                releaseSlot()
                return reject(
                    .init(status: .unauthorized, reason: "credentials expired", kind: .rejectedByApplication),
                    context: context)
            }
            guard !hub.isShuttingDown else {
                // Drain started while the application decided: the drain will not see this connection.
                releaseSlot()
                return reject(
                    .init(status: .serviceUnavailable, reason: "server shutting down", kind: .shuttingDown),
                    context: context)
            }
            upgrade(
                head, accept: accept,
                identity: .init(
                    userID: userID, subprotocol: subprotocol, info: info, expiresAt: expiresAt, attachment: attachment),
                context: context)
        case .success(.reject(let status, let reason)):
            releaseSlot()
            reject(.init(status: status, reason: reason, kind: .rejectedByApplication), context: context)
        case .failure(let error):
            releaseSlot()
            hub.logger.error("upgrade decision failed", metadata: ["error": "\(error)"])
            reject(
                .init(status: .internalServerError, reason: "upgrade failed", kind: .rejectedByApplication),
                context: context)
        }
    }

    struct Identity {
        let userID: String?
        let subprotocol: String?
        let info: String?
        let expiresAt: NIODeadline?
        let attachment: (any Sendable)?
    }

    private func upgrade(_ head: HTTPRequestHead, accept: String, identity: Identity, context: ChannelHandlerContext) {
        var headers = HTTPHeaders([
            ("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Accept", accept),
        ])
        if let subprotocol = identity.subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
        let deflate = hub.configuration.deflate.flatMap {
            DeflateNegotiation.negotiate(head.headers["Sec-WebSocket-Extensions"], options: $0)
        }
        if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.response) }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .switchingProtocols, headers: headers))),
            promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        hub.metrics.handshakeDuration.recordNanoseconds((NIODeadline.now() - started).nanoseconds)

        let connection = WebSocketConnection(
            id: shard.nextConnectionID(), userID: identity.userID, subprotocol: identity.subprotocol,
            info: identity.info, expiresAt: identity.expiresAt, attachment: identity.attachment, deflate: deflate,
            clientAddress: countedAddress, countedUser: countedUser, isLocal: isLocal,
            directSocket: directSocket,
            hub: hub,
            shard: shard)
        do {
            let pipeline = context.pipeline.syncOperations
            try pipeline.addHandler(connection, position: .after(self))
            holdsSlot = false  // the connection owns it now, and releases it when it closes
            countedAddress = nil  // likewise the address and user counts
            countedUser = nil
            pipeline.removeHandler(context: context, promise: nil)
            pipeline.removeHandler(encoder, promise: nil)
            connection.start()
            // Removing the decoder forwards the bytes that followed the request (the first frames) to the
            // connection, which now sits right behind it.
            pipeline.removeHandler(decoder, promise: nil)
        } catch {
            // Still holding the slot: closing removes this handler, which releases it.
            hub.logger.error("pipeline reconfiguration failed", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// 503 for an address over its limits, with a jittered Retry-After so refused clients do not return together.
    private func reject(_ client: String, _ verdict: AddressTable.Verdict, context: ChannelHandlerContext) {
        let kind: SwitchboardMetrics.HandshakeRejection
        let reason: String
        let retryAfter: Int
        let log: Bool
        switch verdict {
        case .admitted, .counted: return
        case .tooMany(let shouldLog):
            (kind, reason, retryAfter, log) = (
                .tooManyFromAddress, "too many connections from your address", Int.random(in: 5...10), shouldLog
            )
        case .tooFast(let shouldLog):
            (kind, reason, retryAfter, log) = (
                .addressRateLimited, "too many new connections from your address; retry later", Int.random(in: 1...3),
                shouldLog
            )
        }
        if log { hub.logger.warning("abuse limit: \(reason)", metadata: ["client": "\(client)"]) }
        reject(
            .init(
                status: .serviceUnavailable, reason: reason, kind: kind,
                extraHeaders: [("Retry-After", "\(retryAfter)")]),
            context: context)
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

    private func reject(_ rejection: HandshakeValidator.Rejection, context: ChannelHandlerContext) {
        hub.metrics.rejected(rejection.kind)
        // The application logs its own refusals (bad tokens: throttled per address, or a bot floods the log).
        hub.logger.log(
            level: rejection.kind == .rejectedByApplication ? .debug : .info,
            "handshake rejected",
            metadata: ["status": "\(rejection.status.code)", "reason": "\(rejection.reason)"])
        var body = context.channel.allocator.buffer(capacity: rejection.reason.utf8.count + 1)
        body.writeString(rejection.reason + "\n")
        var headers = HTTPHeaders([
            ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", "\(body.readableBytes)"),
            ("Connection", "close"),
        ])
        headers.add(contentsOf: rejection.extraHeaders)
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: rejection.status, headers: headers))),
            promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}
