import Logging
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The backend closed the connection instead of answering.
struct BackendClosed: Error {}

/// The client's commands, run on the connection's event loop: checks, then the broker's or presence's
/// answer as the command's one reply. Subscribe and unsubscribe go through `SubscriptionLifecycle`;
/// commands for a channel with a subscribe in flight wait their turn there, so replies come in command
/// order and the last one decides the final state.
struct ClientCommands {
    let application: ChannelsApplication

    private var configuration: ChannelsConfiguration { application.configuration }
    private var broker: any Broker { application.broker }
    private var presence: any PresenceManager { application.presence }
    private var logger: Logger { application.logger }
    private var metrics: ChannelsMetrics { application.metrics }
    private func options(for channel: String) -> NamespaceOptions? { application.options(for: channel) }
    private var authentication: ConnectionAuthentication { ConnectionAuthentication(application: application) }
    private var subscriptions: SubscriptionLifecycle { SubscriptionLifecycle(application: application) }

    /// Commands one connection may have waiting behind an in-flight subscribe to one channel.
    static let maxWaitingCommands = 16

    func handle(_ command: ClientCommand, session: ClientSession, loop: ChannelsLoop) {
        let id = command.id
        func fail(_ error: ProtocolError) { session.reply(ServerMessage.error(id: id, error)) }
        guard authentication.admits(command, session: session) else { return }
        switch command.kind {
        case .subscribe(let channel, _, _, _), .unsubscribe(let channel):
            guard session.waiting[channel] == nil else {
                guard session.waiting[channel, default: []].count < Self.maxWaitingCommands else {
                    return fail(.tooManyWaitingCommands)
                }
                session.waiting[channel, default: []].append(.client(command))
                return
            }
        default:
            break
        }
        switch command.kind {
        case .ping:
            session.reply(ServerMessage.reply(id: id))
        case .connect(let token, let recover):
            authentication.connect(id: id, token: token, recover: recover, session: session, loop: loop)
        case .refresh(let token):
            authentication.refresh(id: id, token: token, session: session, loop: loop)
        case .subscribe(let channel, let recover, let token, let data):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard session.subscriptions[channel] == nil else { return fail(.alreadySubscribed) }
            guard session.subscriptions.count < configuration.maxSubscriptionsPerConnection else {
                return fail(.tooManySubscriptions)
            }
            if let refusal = refusal(.subscribe, channel, options, session) { return fail(refusal) }
            guard options.permissions.subscribe == .token || options.proxySubscribe else {
                return subscriptions.subscribe(
                    channel, answer: .reply(id), recover: recover, options: options, session: session, loop: loop)
            }
            if options.permissions.subscribe == .token, token == nil {
                return fail(.notAllowed("subscribe needs a subscription token"))
            }
            if options.proxySubscribe {
                guard startProxyCall(session, fail: fail) else { return }
            }
            // Later commands for the channel wait for the token check and the backend, as they would for the
            // subscribe.
            session.waiting[channel] = []
            let checked =
                token.map { authentication.checkSubscriptionToken($0, channel: channel, session: session, loop: loop) }
                ?? loop.eventLoop.makeSucceededVoidFuture()
            checked.assumeIsolated().flatMap { () -> EventLoopFuture<String?> in
                guard options.proxySubscribe else { return loop.eventLoop.makeSucceededFuture(nil) }
                return self.askBackendToSubscribe(channel, data: data, session: session, loop: loop)
            }
            .whenComplete { result in
                if options.proxySubscribe { session.proxyCalls -= 1 }
                guard !session.isClosed else { return }
                switch result {
                case .success where session.subscriptions.count >= self.configuration.maxSubscriptionsPerConnection:
                    fail(.tooManySubscriptions)
                case .success(let info):
                    return self.subscriptions.subscribe(
                        channel, answer: .reply(id), recover: recover, options: options, session: session,
                        loop: loop, info: info)
                case .failure(let failure as TokenFailure):
                    fail(.refused(failure))
                    self.authentication.refused(failure, session: session, during: "subscribe")
                case .failure(let error as ProtocolError):
                    fail(error)
                case .failure(let failure as ProxyFailure):
                    fail(failure.protocolError)
                case .failure(is BackendClosed):
                    break
                case .failure:
                    fail(.unavailable)
                }
                self.subscriptions.runWaiting(channel, session: session, loop: loop)
            }
        case .rpc(let method, let data):
            rpc(method, data: data, id: id, session: session, loop: loop, fail: fail)
        case .unsubscribe(let channel):
            guard checkedOptions(channel, fail: fail) != nil else { return }
            guard let subscription = session.subscriptions.removeValue(forKey: channel) else {
                return fail(.notSubscribed)
            }
            subscriptions.leave(subscription, session: session, loop: loop)
            session.reply(ServerMessage.reply(id: id))
        case .publish(let channel, let data, let idempotencyKey):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.clientsMayPublish else { return fail(.notAllowed("clients may not publish here")) }
            if let refusal = refusal(.publish, channel, options, session) { return fail(refusal) }
            guard takePublishToken(session, fail: fail) else { return }
            // Keys are the publisher's own (its user, or the connection when anonymous): another client
            // publishing first with a guessed key must not swallow this one's publication.
            // Built only for a keyed publish: a plain one costs no string work here.
            let idempotency = idempotencyKey.map { key in
                let scope = session.connection.userID.map { "user:" + $0 } ?? "client:" + session.member.clientID
                return IdempotencyKey(scope + " " + key, window: configuration.idempotencyWindow)
            }
            guard options.proxyPublish else {
                publish(
                    channel, data: data, options: options, idempotency: idempotency, id: id, session: session,
                    loop: loop)
                return
            }
            publishThroughBackend(
                channel, data: data, options: options, idempotency: idempotency, id: id, session: session,
                loop: loop, fail: fail)
        case .presence(let channel):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.presence else { return fail(.notAllowed("presence is off in this namespace")) }
            if let refusal = refusal(.presence, channel, options, session) { return fail(refusal) }
            let snapshot =
                options.countsOnly
                ? presence.presenceCounts(channel: channel, on: loop.eventLoop)
                : presence.presence(channel: channel, on: loop.eventLoop)
            answer(snapshot, id: id, session: session, loop: loop) {
                snapshot in
                var result = "{\"connections\":\(snapshot.connections),\"users\":\(snapshot.users)"
                if !options.countsOnly {
                    result += ",\"members\":[" + snapshot.members.map(\.json).joined(separator: ",") + "]"
                }
                return result + "}"
            }
        case .history(let channel, let limit, let since):
            guard let options = checkedOptions(channel, fail: fail) else { return }
            guard options.historySize > 0 else { return fail(.notAllowed("no history in this namespace")) }
            if let refusal = refusal(.history, channel, options, session) { return fail(refusal) }
            let page = broker.history(
                channel: channel, since: since, limit: limit, options: options, on: loop.eventLoop)
            answer(page, id: id, session: session, loop: loop) { page in
                let publications = page.publications.map {
                    ServerMessage.publicationJSON($0, channel: nil, showUser: options.showPublisher, push: false)
                }
                return "{\"epoch\":\(ServerMessage.quote(page.epoch)),\"offset\":\(page.offset),"
                    + "\"publications\":[\(publications.joined(separator: ","))]}"
            }
        }
    }

    /// The returned future completes once the publish is answered.
    @discardableResult
    func publish(
        _ channel: String, data: String, options: NamespaceOptions, idempotency: IdempotencyKey?, id: Int,
        session: ClientSession, loop: ChannelsLoop
    ) -> EventLoopFuture<Void> {
        var published = broker.publish(
            channel: channel, data: data, user: session.connection.userID, options: options, idempotency: idempotency,
            on: loop.eventLoop)
        if options.publicationEvents, let lifecycle = application.lifecycle {
            let client = session.member.clientID
            let user = session.connection.userID
            published = published.map { publication in
                if !publication.isRepeat { lifecycle.published(publication, to: channel, client: client, user: user) }
                return publication
            }
        }
        return answer(published, id: id, session: session, loop: loop, failure: ProtocolError.publishFailure) {
            "{\"offset\":\($0.offset)}"
        }
    }

    /// Publishes and RPCs share the connection's rate: each takes a token or is refused with 106; a client
    /// that goes on regardless is closed.
    func takePublishToken(_ session: ClientSession, fail: (ProtocolError) -> Void) -> Bool {
        guard session.bucket.take(now: Int64(NIODeadline.now().uptimeNanoseconds)) else {
            session.rejectedPublishes += 1
            fail(.rateLimited)
            if session.rejectedPublishes >= configuration.maxRejectedPublishes {
                logger.info("closing publish-rate abuser", metadata: ["connection": "\(session.id)"])
                session.connection.close(code: .policyViolation, reason: "publish rate exceeded", reconnect: true)
            }
            return false
        }
        session.rejectedPublishes = 0
        return true
    }

    /// Replies to command `id` with the future's result, on the connection's loop, within the broker
    /// timeout; a failure is answered with error 110. The returned future completes (never fails) once the
    /// command is answered.
    @discardableResult
    private func answer<T>(
        _ future: EventLoopFuture<T>, id: Int, session: ClientSession, loop: ChannelsLoop,
        failure: @escaping (any Error) -> ProtocolError = { _ in .unavailable }, _ result: @escaping (T) -> String
    ) -> EventLoopFuture<Void> {
        let answered = loop.eventLoop.makePromise(of: Void.self)
        future.arriving(on: loop.eventLoop, within: configuration.brokerTimeout).assumeIsolated().whenComplete {
            outcome in
            defer { answered.succeed() }
            guard !session.isClosed else { return }
            switch outcome {
            case .success(let value):
                session.reply(ServerMessage.reply(id: id, result: result(value)))
            case .failure(let error):
                self.logger.warning("broker call failed", metadata: ["error": "\(error)"])
                session.reply(ServerMessage.error(id: id, failure(error)))
            }
        }
        return answered.futureResult
    }

    private func refusal(
        _ action: ChannelPermissions.Action, _ channel: String, _ options: NamespaceOptions, _ session: ClientSession
    ) -> ProtocolError? {
        options.permissions.refusal(
            action, channel: channel, user: session.connection.userID,
            isSubscribed: session.subscriptions[channel] != nil,
            isLocal: session.connection.isLocal)
    }

    private func checkedOptions(_ channel: String, fail: (ProtocolError) -> Void) -> NamespaceOptions? {
        guard ChannelName.validate(channel) else {
            fail(.invalidChannel)
            return nil
        }
        guard let options = options(for: channel) else {
            fail(.unknownNamespace)
            return nil
        }
        return options
    }
}
