import Logging
import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// A subscription from subscribe to leave, on the connection's loop: the broker's snapshot and recovery
/// without gap or duplicate, presence join and leave in order, resynchronization after the node may have
/// missed events, and the commands that wait behind a subscribe in flight.
struct SubscriptionLifecycle {
    let application: ChannelsApplication

    private var configuration: ChannelsConfiguration { application.configuration }
    private var broker: any Broker { application.broker }
    private var presence: any PresenceManager { application.presence }
    private var logger: Logger { application.logger }
    private var metrics: ChannelsMetrics { application.metrics }
    private func options(for channel: String) -> NamespaceOptions? { application.options(for: channel) }

    /// Subscribes the session on the server's initiative (a token's `channels`, the server API): no
    /// permission check, answered with a `subscribed` push (or `unsubscribed` with the error).
    /// With a subscribe in flight for the channel, it waits its turn like a client's command.
    func subscribeOnServer(_ channel: String, recover: StreamPosition?, session: ClientSession, loop: ChannelsLoop) {
        guard session.waiting[channel] == nil else {
            return session.queueServer(.serverSubscribe(recover), for: channel)
        }
        guard ChannelName.validate(channel) else {
            return session.reply(ServerMessage.unsubscribed(channel: channel, error: .invalidChannel))
        }
        guard let options = options(for: channel) else {
            logger.warning("server-side subscription in an unknown namespace", metadata: ["channel": "\(channel)"])
            return session.reply(ServerMessage.unsubscribed(channel: channel, error: .unknownNamespace))
        }
        guard session.subscriptions[channel] == nil else { return }
        guard session.subscriptions.count < configuration.maxSubscriptionsPerConnection else {
            return session.reply(ServerMessage.unsubscribed(channel: channel, error: .tooManySubscriptions))
        }
        subscribe(channel, answer: .push, recover: recover, options: options, session: session, loop: loop)
    }

    /// Ends a subscription on the server's initiative, with an `unsubscribed` push; with a subscribe in
    /// flight, after it (so a backend revoking access never loses the race).
    func unsubscribeOnServer(_ channel: String, session: ClientSession, loop: ChannelsLoop) {
        guard session.waiting[channel] == nil else { return session.queueServer(.serverUnsubscribe, for: channel) }
        guard let subscription = session.subscriptions.removeValue(forKey: channel) else { return }
        leave(subscription, session: session, loop: loop)
        session.reply(ServerMessage.unsubscribed(channel: channel, error: nil))
    }

    /// Where the outcome of a subscribe goes: the command's reply, or a push for one the server made.
    enum Answer {
        case reply(Int)
        case push
    }

    /// Subscribe first (live events start arriving and wait in the subscription), then, once the node
    /// receives the channel, take the broker's snapshot, reply with what was missed, then release the
    /// waiting publications newer than the snapshot: no gap, no duplicate.
    /// `info`: the presence data the backend gave this subscription (the subscribe proxy's result).
    func subscribe(
        _ channel: String, answer: Answer, recover: StreamPosition?, options: NamespaceOptions,
        session: ClientSession, loop: ChannelsLoop, info: String? = nil
    ) {
        session.nextGeneration += 1
        let generation = session.nextGeneration
        let local = loop.channel(channel, options: options)
        let subscription = Subscription(
            connection: session.connection, channel: local, generation: generation, eventStream: session.eventStream)
        if let info {
            let member = session.member
            subscription.member = PresenceMember(
                client: member.client, user: member.user, data: info, node: member.node)
        }
        loop.add(subscription)
        session.subscriptions[channel] = subscription
        if session.waiting[channel] == nil { session.waiting[channel] = [] }
        let broker = self.broker
        let eventLoop = loop.eventLoop
        let ready = local.nodeSubscribed
        ready
            .flatMapError { eventLoop.makeFailedFuture(NodeSubscriptionFailed(underlying: $0)) }
            .flatMap { broker.recover(channel: channel, since: recover, options: options, on: eventLoop) }
            .arriving(on: eventLoop, within: configuration.brokerTimeout)
            .assumeIsolated()
            .whenComplete { result in
                if case .failure(let error) = result, error is NodeSubscriptionFailed {
                    loop.retryNodeSubscription(local, failed: ready)
                }
                // A late answer for an earlier generation (or a closed connection) completes nothing.
                if !session.isClosed, session.subscriptions[channel]?.generation == generation {
                    self.subscribed(
                        result, answer: answer, recover: recover, subscription: subscription, session: session,
                        loop: loop)
                }
                self.runWaiting(channel, session: session, loop: loop)
            }
    }

    private func subscribed(
        _ result: Result<SubscribeSnapshot, any Error>, answer: Answer, recover: StreamPosition?,
        subscription: Subscription, session: ClientSession, loop: ChannelsLoop
    ) {
        let options = subscription.channel.options
        let channel = subscription.channel.name
        guard case .success(let snapshot) = result else {
            if case .failure(let error) = result {
                logger.warning(
                    "subscribe failed at the broker", metadata: ["channel": "\(channel)", "error": "\(error)"])
            }
            session.subscriptions[channel] = nil
            loop.remove(subscription)
            // A one-way stream cannot subscribe again by itself: it reconnects (and resumes) instead.
            if session.eventStream {
                return session.connection.close(code: .tryAgainLater, reason: "channel unavailable", reconnect: true)
            }
            switch answer {
            case .reply(let id): session.reply(ServerMessage.error(id: id, .unavailable))
            case .push: session.reply(ServerMessage.unsubscribed(channel: channel, error: .unavailable))
            }
            return
        }
        if session.eventStream {
            for frame in EventStreamMessages.subscribed(
                channel: channel, snapshot: snapshot, recover: recover, options: options)
            {
                session.reply(frame)
            }
        } else {
            let result = Self.snapshotResult(snapshot, recovering: recover != nil, options: options)
            switch answer {
            case .reply(let id): session.reply(ServerMessage.reply(id: id, result: result))
            case .push: session.reply(ServerMessage.subscribed(channel: channel, result: result))
            }
        }
        goLive(subscription, snapshot: snapshot, loop: loop)
        if let lifecycle = application.lifecycle {
            subscription.announced = true
            lifecycle.subscribed(session, to: channel)
        }
        guard options.presence else { return }
        let member = subscription.member ?? session.member
        let broker = self.broker
        let eventLoop = loop.eventLoop
        let presence = self.presence
        // Continuations make their futures on the loop they run on (the store's): the connection's loop
        // may be gone by then.
        let joined = session.presenceInOrder(channel, on: eventLoop) {
            let added = presence.add(member, to: channel, on: eventLoop)
            return added.flatMap { members -> EventLoopFuture<Void> in
                guard options.joinLeave, members <= options.joinLeaveMaxMembers else {
                    return added.eventLoop.makeSucceededVoidFuture()
                }
                return broker.publishJoin(channel: channel, member: member, on: eventLoop)
            }
        }
        joined.whenFailure { [logger] error in
            logger.warning("presence join failed", metadata: ["channel": "\(channel)", "error": "\(error)"])
        }
        subscription.joined = joined
    }

    /// A subscribe's result: the stream's position and, when recovering, what was missed.
    static func snapshotResult(_ snapshot: SubscribeSnapshot, recovering: Bool, options: NamespaceOptions) -> String {
        var result = "{\"epoch\":\(ServerMessage.quote(snapshot.epoch)),\"offset\":\(snapshot.offset)"
        if recovering {
            let recovered = snapshot.publications.map {
                ServerMessage.publicationJSON($0, channel: nil, showUser: options.showPublisher, push: false)
            }
            result += ",\"recovered\":\(snapshot.recovered),\"publications\":[\(recovered.joined(separator: ","))]"
        }
        return result + "}"
    }

    /// The snapshot went out: held events follow; a resynchronization asked for meanwhile (the snapshot
    /// may predate that break) runs now.
    private func goLive(_ subscription: Subscription, snapshot: SubscribeSnapshot, loop: ChannelsLoop) {
        subscription.epoch = snapshot.epoch
        subscription.goLive(after: max(snapshot.offset, snapshot.publications.last?.offset ?? 0))
        guard subscription.needsResynchronization else { return }
        subscription.needsResynchronization = false
        resynchronize([subscription], in: subscription.channel, loop: loop)
    }

    /// The node may have missed events of `channel`: every live subscriber on this loop holds new events,
    /// recovers from its position (one broker read per distinct position) and is told the outcome with a
    /// `subscribed` push (`recovered` true or false), as a reconnecting client would be. Subscribers still
    /// reading their first snapshot do it once live. One that cannot recover (the broker is down again)
    /// is closed with 1013 and recovers when it reconnects.
    func resynchronize(_ channel: LocalChannel, loop: ChannelsLoop) {
        var live: [Subscription] = []
        for subscription in channel.subscribers {
            if subscription.recovering {
                subscription.needsResynchronization = true
            } else {
                live.append(subscription)
            }
        }
        resynchronize(live, in: channel, loop: loop)
    }

    private func resynchronize(_ subscriptions: [Subscription], in channel: LocalChannel, loop: ChannelsLoop) {
        var byPosition: [String: [Subscription]] = [:]
        for subscription in subscriptions {
            subscription.recovering = true
            byPosition["\(subscription.lastOffset) \(subscription.epoch)", default: []].append(subscription)
        }
        for group in byPosition.values { recoverForResynchronization(group, in: channel, loop: loop, attempt: 1) }
    }

    /// Reads to resynchronize wait their turn in the loop's queue, and the broker timeout runs from when
    /// the read is sent. A failed read is tried again (a store that hiccuped is usually back within
    /// seconds) before its subscribers are closed 1013 to recover on their own.
    private func recoverForResynchronization(
        _ group: [Subscription], in channel: LocalChannel, loop: ChannelsLoop, attempt: Int
    ) {
        let name = channel.name
        let options = channel.options
        loop.resynchronizations.enqueue {
            let group = group.filter { subscription in
                guard let session = subscription.connection.session else { return false }
                return !session.isClosed && session.subscriptions[name] === subscription
            }
            guard let first = group.first else { return loop.resynchronizations.finished() }
            let since = StreamPosition(offset: first.lastOffset, epoch: first.epoch)
            self.broker.recover(channel: name, since: since, options: options, on: loop.eventLoop)
                .arriving(on: loop.eventLoop, within: self.configuration.brokerTimeout)
                .assumeIsolated()
                .whenComplete { result in
                    loop.resynchronizations.finished()
                    if case .failure(let error) = result {
                        self.logger.warning(
                            "resynchronizing a channel failed",
                            metadata: ["channel": "\(name)", "error": "\(error)", "attempt": "\(attempt)"])
                        if attempt < Self.resynchronizationAttempts {
                            let retry = NIOLoopBound(
                                {
                                    self.recoverForResynchronization(
                                        group, in: channel, loop: loop, attempt: attempt + 1)
                                },
                                eventLoop: loop.eventLoop)
                            loop.eventLoop.scheduleTask(in: .milliseconds(500 * Int64(attempt))) { retry.value() }
                            return
                        }
                    }
                    for subscription in group {
                        guard let session = subscription.connection.session, !session.isClosed,
                            session.subscriptions[name] === subscription
                        else { continue }
                        switch result {
                        case .success(let snapshot):
                            self.metrics.resynchronized[snapshot.recovered ? "recovered" : "not_recovered"]?
                                .increment()
                            if session.eventStream {
                                let since = StreamPosition(offset: subscription.lastOffset, epoch: subscription.epoch)
                                for frame in EventStreamMessages.subscribed(
                                    channel: name, snapshot: snapshot, recover: since, options: options)
                                {
                                    session.reply(frame)
                                }
                            } else {
                                let result = Self.snapshotResult(snapshot, recovering: true, options: options)
                                session.reply(ServerMessage.subscribed(channel: name, result: result))
                            }
                            self.goLive(subscription, snapshot: snapshot, loop: loop)
                        case .failure:
                            self.metrics.resynchronized["failed"]?.increment()
                            session.connection.close(
                                code: .tryAgainLater, reason: "channel state lost", reconnect: true)
                        }
                    }
                }
        }
    }

    /// Reads of one resynchronization before its subscribers are closed 1013.
    static let resynchronizationAttempts = 3

    /// Runs the commands that waited behind a subscribe, in order, until one goes in flight again.
    func runWaiting(_ channel: String, session: ClientSession, loop: ChannelsLoop) {
        guard var queued = session.waiting.removeValue(forKey: channel) else { return }
        while !queued.isEmpty, session.waiting[channel] == nil, !session.isClosed {
            switch queued.removeFirst() {
            case .client(let command):
                ClientCommands(application: application).handle(command, session: session, loop: loop)
            case .serverSubscribe(let recover):
                subscribeOnServer(channel, recover: recover, session: session, loop: loop)
            case .serverUnsubscribe: unsubscribeOnServer(channel, session: session, loop: loop)
            }
        }
        if !queued.isEmpty, !session.isClosed {
            session.waiting[channel, default: []].insert(contentsOf: queued, at: 0)
        }
    }

    /// Takes a subscription out of the loop's tables (the node unsubscribes after the loop's last) and
    /// out of presence. The caller has removed it from the session.
    func leave(_ subscription: Subscription, session: ClientSession, loop: ChannelsLoop) {
        loop.remove(subscription)
        if subscription.announced {
            subscription.announced = false
            application.lifecycle?.unsubscribed(session, from: subscription.channel.name)
        }
        guard subscription.joined != nil else { return }
        subscription.joined = nil
        let options = subscription.channel.options
        let channel = subscription.channel.name
        let member = subscription.member ?? session.member
        let broker = self.broker
        let presence = self.presence
        let eventLoop = loop.eventLoop
        // After the join, whatever became of it: never a remove before the add, nor a leave before the join;
        // and a later subscription's add waits for this remove in turn.
        session.presenceInOrder(channel, on: eventLoop) {
            let removed = presence.remove(member, from: channel, on: eventLoop)
            return removed.flatMap { members -> EventLoopFuture<Void> in
                guard let members, options.joinLeave, members < options.joinLeaveMaxMembers else {
                    return removed.eventLoop.makeSucceededVoidFuture()
                }
                return broker.publishLeave(channel: channel, member: member, on: eventLoop)
            }
        }
        .whenFailure { [logger] error in
            logger.warning("presence leave failed", metadata: ["channel": "\(channel)", "error": "\(error)"])
        }
    }
}

/// The node's broker subscription failed, as opposed to the read of the stream that follows it.
struct NodeSubscriptionFailed: Error {
    let underlying: any Error
}
