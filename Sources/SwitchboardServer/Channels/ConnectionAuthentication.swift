import Foundation
import Logging
import NIOCore
import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// Authentication on the connection (docs/PROTOCOL.md, "Authentication"): the `connect` command, the
/// connect deadline, token expiry with its `refresh` push and command, and subscription tokens.
/// The upgrade's own bearer token is checked by `ChannelsApplication.shouldUpgrade`.
struct ConnectionAuthentication {
    let application: ChannelsApplication

    private var configuration: ChannelsConfiguration { application.configuration }
    private var verifier: TokenVerifier? { application.verifier }
    private var anonymousAllowed: Bool { application.anonymousAllowed }
    private var logger: Logger { application.logger }
    private var subscriptions: SubscriptionLifecycle { SubscriptionLifecycle(application: application) }

    /// A new session is connected already when the upgrade named its user (a bearer token, or the
    /// embedder's authenticator); otherwise it waits for `connect`, for a limited time unless anonymous
    /// connections are allowed anyway.
    func startAuthentication(_ session: ClientSession, loop: ChannelsLoop) {
        let connection = session.connection
        let grant = connection.upgradeContext?.grant
        if connection.userID != nil || connection.tokenClaims != nil || grant != nil {
            let claims = connection.tokenClaims
            connected(session, expiresAt: claims?.expiresAt ?? grant?.expireAt, loop: loop)
            for channel in claims?.channels ?? grant?.channels ?? [] {
                subscriptions.subscribeOnServer(channel, recover: nil, session: session, loop: loop)
            }
            return
        }
        guard !anonymousAllowed, let timeout = verifier?.configuration.connectTimeout else { return }
        session.connectTimer = loop.eventLoop.assumeIsolated().scheduleTask(in: timeout) {
            guard session.authState != .connected, !session.isClosed else { return }
            session.connection.close(.authenticationTimeout, message: nil)
        }
    }

    /// Whether `command` may run now; if not, it has been held or answered.
    func admits(_ command: ClientCommand, session: ClientSession) -> Bool {
        switch command.kind {
        case .connect, .ping: return true
        default: break
        }
        switch session.authState {
        case .connected:
            return true
        case .connecting:
            guard session.held.count < ClientCommands.maxWaitingCommands else {
                session.reply(ServerMessage.error(id: command.id, .tooManyWaitingCommands))
                return false
            }
            session.held.append(command)
            return false
        case .awaitingConnect:
            // After a `connect` that could not be checked, nothing becomes anonymous by accident.
            guard anonymousAllowed, !session.connectAttempted else {
                session.reply(ServerMessage.error(id: command.id, .notAuthenticated))
                return false
            }
            // A client that never sends connect (protocol v1's) is anonymous where that is allowed.
            connected(session, expiresAt: nil, loop: nil)
            return true
        }
    }

    func connect(
        id: Int, token: String?, recover: [String: StreamPosition], session: ClientSession, loop: ChannelsLoop
    ) {
        guard session.authState == .awaitingConnect else {
            guard session.authState == .connected, token == nil else {
                return session.reply(ServerMessage.error(id: id, .alreadyConnected))
            }
            return session.reply(ServerMessage.reply(id: id, result: connectResult(session)))
        }
        guard let token else {
            guard anonymousAllowed else { return session.reply(ServerMessage.error(id: id, .notAuthenticated)) }
            connected(session, expiresAt: nil, loop: loop)
            return session.reply(ServerMessage.reply(id: id, result: connectResult(session)))
        }
        guard let verifier else {
            return session.reply(ServerMessage.error(id: id, .badRequest("this server takes no tokens")))
        }
        session.authState = .connecting
        session.connectAttempted = true
        let anonymousAllowed = self.anonymousAllowed
        verifier.verifyConnectionToken(token, on: loop.eventLoop)
            .flatMapThrowing { claims -> TokenClaims in
                guard !claims.subject.isEmpty || anonymousAllowed else { throw TokenFailure.anonymousNotAllowed }
                return claims
            }
            .arriving(on: loop.eventLoop, within: configuration.brokerTimeout)
            .assumeIsolated()
            .whenComplete { result in
                guard !session.isClosed else { return }
                switch result {
                case .success(let claims):
                    let user = claims.subject.isEmpty ? nil : claims.subject
                    guard session.connection.identify(userID: user, info: claims.info) else { return }
                    session.member = PresenceMember(
                        client: session.id, user: user, data: claims.info, node: session.member.node)
                    self.connected(session, expiresAt: claims.expiresAt, loop: loop)
                    session.reply(ServerMessage.reply(id: id, result: self.connectResult(session)))
                    for channel in claims.channels {
                        self.subscriptions.subscribeOnServer(
                            channel, recover: recover[channel], session: session, loop: loop)
                    }
                case .failure(let failure as TokenFailure):
                    self.refused(failure, address: session.connection.remoteAddress, during: "connect")
                    session.reply(ServerMessage.error(id: id, .refused(failure)))
                    session.held = []
                    session.connection.close(
                        failure == .expired ? .tokenExpired : .invalidToken, message: failure.message)
                    return
                case .failure(let error):
                    // The keys could not be fetched in time: the client may try `connect` again; what it
                    // sent meanwhile is answered, not run anonymously.
                    self.logger.warning("token check failed", metadata: ["error": "\(error)"])
                    session.authState = .awaitingConnect
                    session.reply(ServerMessage.error(id: id, .unavailable))
                    for command in session.held { session.reply(ServerMessage.error(id: command.id, .unavailable)) }
                    session.held = []
                }
                let held = session.held
                session.held = []
                let commands = ClientCommands(application: self.application)
                for command in held where !session.isClosed { commands.handle(command, session: session, loop: loop) }
            }
    }

    /// The session is authenticated: start its expiry, if its token has one.
    func connected(_ session: ClientSession, expiresAt: Double?, loop: ChannelsLoop?) {
        session.authState = .connected
        session.connectTimer?.cancel()
        session.connectTimer = nil
        if !session.announced, let lifecycle = application.lifecycle {
            session.announced = true
            lifecycle.connected(session)
        }
        guard let expiresAt, let loop else { return }
        setExpiry(expiresAt, session: session, loop: loop)
    }

    /// Closes the connection with 4001 at `expiresAt`, after a `refresh` push `refreshNotice` before
    /// (`credentialsExpiring`); both on the loop's heartbeat wheel, not timers of their own.
    func setExpiry(_ expiresAt: Double?, session: ClientSession, loop: ChannelsLoop) {
        session.expiresAt = expiresAt
        guard let expiresAt else { return session.connection.expire(at: nil) }
        let deadline =
            verifier?.deadline(expiresAt) ?? TokenVerifier.deadline(expiresAt, now: Date().timeIntervalSince1970)
        session.connection.expire(at: deadline, warnAt: deadline - refreshNotice)
    }

    /// How long before expiry the client (or the refresh proxy) is asked for fresh credentials.
    private var refreshNotice: TimeAmount {
        verifier?.configuration.refreshNotice ?? application.proxy?.configuration.refreshNotice
            ?? AuthConfiguration().refreshNotice
    }

    func refresh(id: Int, token: String, session: ClientSession, loop: ChannelsLoop) {
        guard let verifier else {
            return session.reply(ServerMessage.error(id: id, .badRequest("this server takes no tokens")))
        }
        let user = session.connection.userID ?? ""
        verifier.verifyConnectionToken(token, on: loop.eventLoop)
            .arriving(on: loop.eventLoop, within: configuration.brokerTimeout)
            .assumeIsolated()
            .whenComplete { result in
                guard !session.isClosed else { return }
                switch result {
                case .success(let claims) where claims.subject == user:
                    self.setExpiry(claims.expiresAt, session: session, loop: loop)
                    let expires = claims.expiresAt.map { ",\"expires_at\":\(ServerMessage.unixSeconds($0))" } ?? ""
                    session.reply(ServerMessage.reply(id: id, result: "{" + expires.dropFirst() + "}"))
                case .success:
                    session.reply(ServerMessage.error(id: id, .invalidToken(.wrongUser)))
                    self.refused(.wrongUser, session: session, during: "refresh")
                case .failure(let failure as TokenFailure):
                    session.reply(ServerMessage.error(id: id, .refused(failure)))
                    self.refused(failure, session: session, during: "refresh")
                case .failure:
                    session.reply(ServerMessage.error(id: id, .unavailable))
                }
            }
    }

    /// Checks a subscription token for `channel` and the session's user; completes on the session's loop.
    func checkSubscriptionToken(
        _ token: String, channel: String, session: ClientSession, loop: ChannelsLoop
    ) -> EventLoopFuture<Void> {
        guard let verifier else { return loop.eventLoop.makeFailedFuture(TokenFailure.unknownKey) }
        let user = session.connection.userID ?? ""
        return verifier.verify(token, on: loop.eventLoop)
            .flatMapThrowing { claims in
                guard claims.channel == channel else {
                    throw claims.channel == nil ? TokenFailure.notSubscriptionToken : TokenFailure.wrongChannel
                }
                guard claims.subject == user else { throw TokenFailure.wrongUser }
            }
            .arriving(on: loop.eventLoop, within: configuration.brokerTimeout)
    }

    private func connectResult(_ session: ClientSession) -> String {
        let user = session.connection.userID.map(ServerMessage.quote) ?? "null"
        let expires = session.expiresAt.map { ",\"expires_at\":\(ServerMessage.unixSeconds($0))" } ?? ""
        let data = session.connection.upgradeContext?.grant?.data.map { ",\"data\":\($0)" } ?? ""
        return "{\"client\":\"\(session.member.clientID)\",\"user\":\(user)\(expires)\(data)}"
    }

    // MARK: the application's backend decides

    /// The connect proxy decides the upgrade: its `result` admits the connection as its `user` (with
    /// presence `info`, `data` for the connect reply, `channels` to subscribe and `expire_at`); its `error`
    /// or `disconnect` is 403 with the message; a backend down or slow is 503 (try again), one answering
    /// garbage 502.
    func connectThroughProxy(
        _ proxy: EventProxy, request: HTTPRequestHead, transport: Transport, on eventLoop: any EventLoop
    ) -> EventLoopFuture<UpgradeDecision> {
        let headers = proxy.forwarded(from: request.headers)
        return proxy.call(
            .connect, body: "{\"transport\":\"\(transport.rawValue)\"}", headers: headers, on: eventLoop,
            check: { _ = try ConnectGrant($0) }
        ).map { answer -> UpgradeDecision in
            switch answer {
            case .result(let result):
                guard let grant = try? ConnectGrant(result) else {
                    return .reject(.badGateway, reason: ProtocolError.badBackendAnswer.message)
                }
                guard grant.user != nil || self.anonymousAllowed else {
                    return .reject(.forbidden, reason: "anonymous connections are not allowed")
                }
                let context = UpgradeContext(claims: nil, grant: grant, forwardedHeaders: headers)
                return .accept(
                    userID: grant.user, subprotocol: nil, info: grant.info,
                    expiresAt: grant.expireAt.map { TokenVerifier.deadline($0, now: Date().timeIntervalSince1970) },
                    attachment: context)
            case .error(let error):
                return .reject(.forbidden, reason: error.message)
            case .disconnect(_, let reason):
                return .reject(.forbidden, reason: reason)
            }
        }.recover { error in
            let failure = error as? ProxyFailure ?? ProxyFailure(error)
            guard failure.outcome != .invalid else {
                return .reject(.badGateway, reason: ProtocolError.badBackendAnswer.message)
            }
            return .reject(.serviceUnavailable, reason: "the application's backend is unavailable; try again")
        }
    }

    /// The refresh proxy renews a connection the connect proxy let in, before its `expire_at`: a `result`
    /// sets the new expiry (none: never expires); a `disconnect` closes it now; an `error`, or no answer,
    /// leaves it to close at its expiry (4001, with reconnect advice: connecting asks the backend again).
    /// A backend that gave no usable answer is asked once more, half-way to the expiry: a hiccup must not
    /// make every connection expiring now reconnect through the connect proxy at once.
    func refreshThroughProxy(_ proxy: EventProxy, session: ClientSession, loop: ChannelsLoop, retried: Bool = false) {
        proxy.ask(
            .refresh, for: session, on: loop.eventLoop,
            check: { result in
                // Required, null included: an answer without it must not lift the connection's expiry by omission.
                guard result.has("expire_at") else { throw ProtocolError.badRequest("result.expire_at is required") }
                if let expireAt = try result.number("expire_at", nullable: true), !(0...1e11).contains(expireAt) {
                    throw ProtocolError.badRequest("result.expire_at must be Unix seconds")
                }
            }
        ).assumeIsolated().whenComplete { answer in
            guard !session.isClosed else { return }
            switch answer {
            case .success(.result(let result)):
                let next = try? result.number("expire_at", nullable: true)
                let notice = Double(self.refreshNotice.nanoseconds) / 1e9
                if let next, let previous = session.expiresAt, next - previous < notice {
                    // Barely extended: asking again at once would loop; it expires then, and reconnects.
                    session.expiresAt = next
                    session.connection.expire(
                        at: TokenVerifier.deadline(next, now: Date().timeIntervalSince1970), warnAt: nil)
                } else {
                    self.setExpiry(next, session: session, loop: loop)
                }
            case .success(.disconnect(let code, let reason)):
                session.connection.close(code: CloseCode(code), reason: reason, reconnect: code < 4500)
            case .success(.error):
                break
            case .failure:
                guard !retried, let expiresAt = session.expiresAt else { break }
                let remaining = expiresAt - Date().timeIntervalSince1970
                guard remaining > 1 else { break }
                loop.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(Int64(remaining * 500))) {
                    guard !session.isClosed else { return }
                    self.refreshThroughProxy(proxy, session: session, loop: loop, retried: true)
                }
            }
        }
    }

    /// Counts a refused token and logs it, at most once per interval per client address.
    func refused(_ failure: TokenFailure, address: SocketAddress?, during step: String) {
        application.metrics.authFailures[failure]?.increment()
        application.failureLog.warning(
            "token refused", address: address, metadata: ["reason": "\(failure.rawValue)", "during": "\(step)"])
    }

    /// Refused refresh and subscription tokens a connection may send before it is closed: each costs a
    /// signature check (several, with many keys), so a client cannot make the server verify garbage forever.
    static let maxRefusedTokens = 8

    /// Counts a token refused on an open session; past `maxRefusedTokens` forged or garbled ones, closes it.
    /// Expired, not-yet-valid and unknown-key refusals do not count: an honest client meets them (a stale
    /// token, a key set mid-rotation).
    func refused(_ failure: TokenFailure, session: ClientSession, during step: String) {
        refused(failure, address: session.connection.remoteAddress, during: step)
        guard ![.expired, .notYetValid, .unknownKey].contains(failure) else { return }
        session.refusedTokens += 1
        if session.refusedTokens == Self.maxRefusedTokens {
            refused(.tooManyRefused, address: session.connection.remoteAddress, during: step)
            session.connection.close(.invalidToken, message: TokenFailure.tooManyRefused.message)
        }
    }
}
