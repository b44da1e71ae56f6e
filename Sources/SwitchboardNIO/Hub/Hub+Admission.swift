import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore

/// The one way into the hub. Whoever accepted the TCP connection and parsed the upgrade request (our
/// `WebSocketServer`, a Hummingbird app, NIO's typed upgrader) asks `admit` for the verdict, answers it,
/// and on 101 hands the channel to `adopt`: from then on the connection has the same lifecycle, registry
/// shard, heartbeats, queues, limits, metrics and hooks whoever accepted it.
extension Hub {
    /// Decides an upgrade request: RFC 6455 checks, origin, shutdown, the loop's upgrade rate, per-address
    /// limits, `maxConnections`, then the application's `shouldUpgrade` (bounded by `handshakeTimeout`),
    /// then the per-user limit and the credentials' expiry. Refusals are counted and logged here.
    ///
    /// - Parameters:
    ///   - request: the upgrade request's head.
    ///   - remoteAddress: the TCP peer (with `X-Forwarded-For`/`Forwarded` from trusted proxies, the client).
    ///   - path: the path the request must have; nil when the embedding server's router has matched it.
    ///   - eventLoop: the connection's event loop, one of the hub's; call on it.
    /// - Returns: a future on `eventLoop`; it never fails (a failed or late decision is a refusal).
    public func admit(
        _ request: HTTPRequestHead, remoteAddress: SocketAddress?, path: String? = nil, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeVerdict> {
        admit(
            request, remoteAddress: remoteAddress, path: path, on: eventLoop, deciding: configuration.handshakeTimeout,
            countsTimeout: true)
    }

    /// `admit` with the application's decision bounded by `deciding`. `countsTimeout` false: the caller
    /// counts and logs the timeout itself (our handshake's timer closes the connection at the same deadline).
    func admit(
        _ request: HTTPRequestHead, remoteAddress: SocketAddress?, path: String?, on eventLoop: any EventLoop,
        deciding: TimeAmount, countsTimeout: Bool, transport: Transport = .webSocket
    ) -> EventLoopFuture<UpgradeVerdict> {
        let started = NIODeadline.now()
        guard let shard = shard(for: eventLoop) else {
            logger.error(
                "an upgrade arrived on an event loop that is not the hub's; make the hub with the server's group")
            return refuse(
                .init(status: .internalServerError, reason: "server misconfigured", kind: .rejectedByApplication),
                on: eventLoop)
        }
        eventLoop.preconditionInEventLoop()
        let accept: String
        let checked =
            transport.isStream
            ? HandshakeValidator.validateStream(request, origins: originPolicy, ownHosts: ownHostNames)
            : HandshakeValidator.validate(request, path: path, origins: originPolicy, ownHosts: ownHostNames)
        switch checked {
        case .failure(let refusal): return refuse(refusal, on: eventLoop)
        case .success(let value): accept = value
        }
        guard !isShuttingDown else { return refuse(Self.shuttingDownRefusal, on: eventLoop) }
        guard shard.admission.admitUpgrade(now: LoopShard.now()) else {
            return refuse(
                .init(
                    status: .serviceUnavailable, reason: "too many new connections; retry later", kind: .rateLimited,
                    extraHeaders: [("Retry-After", "1")]), on: eventLoop)
        }
        let limits = abuseLimits
        let peer = remoteAddress?.ipAddress
        let forwardedFor = request.headers["X-Forwarded-For"]
        let forwarded = request.headers["Forwarded"]
        let client = ClientAddress.resolve(
            peer: peer, forwardedFor: forwardedFor, forwarded: forwarded, trusted: limits.trustedRanges)
        let isLocal = ClientAddress.isLocal(
            peer: peer, forwardedFor: forwardedFor, forwarded: forwarded, trusted: limits.trustedRanges)
        var countedAddress: String?
        let addressVerdict = admitAddress(client, limits: limits)
        switch addressVerdict {
        case .admitted: break
        case .counted: countedAddress = client
        case .tooMany, .tooFast: return refuse(Self.refusal(client, addressVerdict, logger: logger), on: eventLoop)
        }
        guard reserveConnectionSlot() else {
            if let countedAddress { releaseAddress(countedAddress) }
            return refuse(
                .init(
                    status: .serviceUnavailable, reason: "too many connections", kind: .tooManyConnections,
                    extraHeaders: [("Retry-After", "5")]), on: eventLoop)
        }
        // From here the slot and the address count are held: every way out gives them back.
        let held = Held(
            address: countedAddress, isLocal: isLocal, accept: accept, started: started, transport: transport)
        // The decision is the application's (a database, an HTTP call for keys...): it may complete on any
        // event loop, late or never. Hop it here and bound it with the handshake timeout.
        // Whichever of the decision and the deadline comes first decides, once; the places are given back
        // either way, whatever becomes of the connection meanwhile.
        let decision = eventLoop.makePromise(of: UpgradeDecision.self)
        let timer = eventLoop.scheduleTask(in: deciding) { decision.fail(UpgradeDecisionTimedOut()) }
        let asked =
            transport.isStream
            ? application.shouldOpenStream(request, transport: transport, from: remoteAddress, on: eventLoop)
            : application.shouldUpgrade(request, from: remoteAddress, on: eventLoop)
        asked.hop(to: eventLoop).whenComplete {
            timer.cancel()
            decision.completeWith($0)
        }
        let verdict = eventLoop.makePromise(of: UpgradeVerdict.self)
        decision.futureResult.whenComplete {
            verdict.succeed(self.decided($0, request: request, held: held, countsTimeout: countsTimeout))
        }
        return verdict.futureResult
    }

    /// Hands an upgraded channel to the hub: sets the hub's socket options on it and adds the connection
    /// handler at the end of its pipeline, which must by now carry raw bytes (the HTTP handlers removed,
    /// TLS below it if any). Call on the channel's event loop once the 101 answer is written.
    ///
    /// - Throws: `AdoptionError` when the admission was used already or the channel is not on a hub loop
    ///   (the admission's places are given back; close the channel).
    public func adopt(_ channel: any Channel, admission: UpgradeAdmission) throws {
        try adopt(channel, admission: admission, directSocket: nil)
    }

    /// `adopt`, with the socket to write directly when the hub's own listener accepted the channel.
    package func adopt(_ channel: any Channel, admission: UpgradeAdmission, directSocket: DirectSocket?) throws {
        channel.eventLoop.preconditionInEventLoop()
        let connection = try connection(for: admission, on: channel.eventLoop, directSocket: directSocket)
        if let options = channel.syncOptions {
            try? options.setOption(.socketOption(.tcp_nodelay), value: 1)
            try? options.setOption(.recvAllocator, value: Self.receiveAllocator)
            try? options.setOption(
                .writeBufferWaterMark,
                value: .init(
                    low: configuration.writeBufferLowWaterMark, high: configuration.writeBufferHighWaterMark))
        }
        do {
            try channel.pipeline.syncOperations.addHandler(connection)
        } catch {
            connection.abandon()
            throw error
        }
        connection.start()
    }

    /// Each channel keeps its receive buffer between reads: start small so an idle connection holds 512
    /// bytes, not NIO's default 2 KiB; the allocator grows it for busy ones.
    public static var receiveAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65536)
    }

    /// The connection for an admitted upgrade, owning the admission's places; not yet in a pipeline.
    func connection(
        for admission: UpgradeAdmission, on eventLoop: any EventLoop, directSocket: DirectSocket?,
        streamWriter: EventStreamWriter? = nil
    ) throws -> WebSocketConnection {
        guard admission.take() else { throw AdoptionError.admissionUsed }
        guard let shard = shard(for: eventLoop) else {
            admission.release()
            throw AdoptionError.foreignEventLoop
        }
        metrics.handshakeDuration.recordNanoseconds((NIODeadline.now() - admission.started).nanoseconds)
        return WebSocketConnection(
            id: shard.nextConnectionID(), userID: admission.userID, subprotocol: admission.subprotocol,
            info: admission.info, expiresAt: admission.expiresAt, attachment: admission.attachment,
            deflate: admission.deflate, clientAddress: admission.clientAddress, countedUser: admission.countedUser,
            isLocal: admission.isLocal, directSocket: admission.transport.isStream ? nil : directSocket,
            transport: admission.transport, streamWriter: streamWriter, hub: self, shard: shard)
    }

    /// What `admit` holds while the application decides.
    private struct Held {
        let address: String?
        let isLocal: Bool
        let accept: String
        let started: NIODeadline
        let transport: Transport
    }

    private func decided(
        _ result: Result<UpgradeDecision, any Error>, request: HTTPRequestHead, held: Held, countsTimeout: Bool
    ) -> UpgradeVerdict {
        let giveBack = {
            self.releaseConnectionSlot()
            if let address = held.address { self.releaseAddress(address) }
        }
        switch result {
        case .success(.accept(let userID, let subprotocol, let info, let expiresAt, let attachment)):
            if let userID, let log = admitUser(userID, limits: abuseLimits) {
                giveBack()
                if log {
                    logger.warning("abuse limit: too many connections for a user", metadata: ["user": "\(userID)"])
                }
                return refused(
                    .init(
                        status: .tooManyRequests, reason: "too many connections for this user", kind: .tooManyForUser))
            }
            let release = {
                giveBack()
                if let userID { self.releaseUser(userID) }
            }
            if let expiresAt, expiresAt <= .now() {
                release()
                return refused(
                    .init(status: .unauthorized, reason: "credentials expired", kind: .rejectedByApplication))
            }
            guard !isShuttingDown else {
                // Drain started while the application decided: the drain would not see this connection.
                release()
                return refused(Self.shuttingDownRefusal)
            }
            if held.transport.isStream {
                return .admitted(
                    UpgradeAdmission(
                        responseHeaders: Self.streamHeaders(request), userID: userID, subprotocol: nil, info: info,
                        expiresAt: expiresAt, attachment: attachment, deflate: nil, clientAddress: held.address,
                        countedUser: userID, isLocal: held.isLocal, started: held.started, transport: held.transport,
                        gzip: configuration.deflate != nil && Self.acceptsGzip(request), hub: self))
            }
            var headers = HTTPHeaders([("Sec-WebSocket-Accept", held.accept)])
            if let subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
            let deflate = configuration.deflate.flatMap {
                DeflateNegotiation.negotiate(request.headers["Sec-WebSocket-Extensions"], options: $0)
            }
            if let deflate { headers.add(name: "Sec-WebSocket-Extensions", value: deflate.response) }
            return .admitted(
                UpgradeAdmission(
                    responseHeaders: headers, userID: userID, subprotocol: subprotocol, info: info,
                    expiresAt: expiresAt, attachment: attachment, deflate: deflate, clientAddress: held.address,
                    countedUser: userID, isLocal: held.isLocal, started: held.started, hub: self))
        case .success(.reject(let status, let reason)):
            giveBack()
            return refused(.init(status: status, reason: reason, kind: .rejectedByApplication))
        case .failure(let error):
            giveBack()
            if error is UpgradeDecisionTimedOut {
                let refusal = UpgradeRefusal(
                    status: .serviceUnavailable, reason: "upgrade decision timed out", kind: .timeout)
                return countsTimeout ? refused(refusal) : .refused(refusal)
            }
            logger.error("upgrade decision failed", metadata: ["error": "\(error)"])
            return refused(
                .init(status: .internalServerError, reason: "upgrade failed", kind: .rejectedByApplication))
        }
    }

    /// A stream's own headers: CORS for a cross-origin page the origin policy admitted (the request passed it).
    static func streamHeaders(_ request: HTTPRequestHead) -> HTTPHeaders {
        guard let origin = request.headers.first(name: "Origin") else { return HTTPHeaders() }
        return HTTPHeaders([
            ("Access-Control-Allow-Origin", origin), ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin"),
        ])
    }

    /// `Accept-Encoding` names gzip (with a weight above zero).
    static func acceptsGzip(_ request: HTTPRequestHead) -> Bool {
        request.headers["Accept-Encoding"].contains { value in
            value.split(separator: ",").contains { item in
                let parts = item.split(separator: ";").map { $0.filter { $0 != " " && $0 != "\t" }.lowercased() }
                guard parts.first == "gzip" else { return false }
                return !parts.dropFirst().contains {
                    $0.hasPrefix("q=0") && !$0.dropFirst(3).contains { $0 != "." && $0 != "0" }
                }
            }
        }
    }

    private func refuse(_ refusal: UpgradeRefusal, on eventLoop: any EventLoop) -> EventLoopFuture<UpgradeVerdict> {
        eventLoop.makeSucceededFuture(refused(refusal))
    }

    /// Counts and logs a refusal (the application logs its own: bad tokens are throttled per address, or a
    /// bot floods the log): for refusals the embedding server finds itself, so they count with the hub's.
    public func refused(_ refusal: UpgradeRefusal) -> UpgradeVerdict {
        metrics.rejected(refusal.kind)
        logger.log(
            level: refusal.kind == .rejectedByApplication ? .debug : .info, "handshake rejected",
            metadata: ["status": "\(refusal.status.code)", "reason": "\(refusal.reason)"])
        return .refused(refusal)
    }

    static let shuttingDownRefusal = UpgradeRefusal(
        status: .serviceUnavailable, reason: "server shutting down", kind: .shuttingDown)

    /// 503 for an address over its limits, with a jittered Retry-After so refused clients do not return together.
    private static func refusal(_ client: String, _ verdict: AddressTable.Verdict, logger: Logger) -> UpgradeRefusal {
        let kind: SwitchboardMetrics.HandshakeRejection
        let reason: String
        let retryAfter: Int
        let log: Bool
        switch verdict {
        case .admitted, .counted, .tooMany:
            let shouldLog: Bool
            if case .tooMany(let value) = verdict { shouldLog = value } else { shouldLog = false }
            (kind, reason, retryAfter, log) = (
                .tooManyFromAddress, "too many connections from your address", Int.random(in: 5...10), shouldLog
            )
        case .tooFast(let shouldLog):
            (kind, reason, retryAfter, log) = (
                .addressRateLimited, "too many new connections from your address; retry later", Int.random(in: 1...3),
                shouldLog
            )
        }
        if log { logger.warning("abuse limit: \(reason)", metadata: ["client": "\(client)"]) }
        return .init(
            status: .serviceUnavailable, reason: reason, kind: kind, extraHeaders: [("Retry-After", "\(retryAfter)")])
    }
}

/// The application's upgrade decision did not arrive within the handshake timeout.
struct UpgradeDecisionTimedOut: Error {}
