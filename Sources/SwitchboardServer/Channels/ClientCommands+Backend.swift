import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The commands the application's backend answers (the event proxy, docs/PROTOCOL.md): `rpc`, and the
/// subscribe and publish of namespaces that ask it. Each answer comes back on the connection's loop within
/// the proxy's timeout; an `error` is the command's reply, a `disconnect` closes the connection.
extension ClientCommands {
    func rpc(
        _ method: String, data: String?, id: Int, session: ClientSession, loop: ChannelsLoop,
        fail: @escaping (ProtocolError) -> Void
    ) {
        guard let proxy = application.proxy, proxy.configuration.rpcURL != nil else {
            return fail(.notAllowed("rpc is not configured on this server"))
        }
        guard takePublishToken(session, fail: fail), startProxyCall(session, fail: fail) else { return }
        proxy.ask(.rpc, for: session, ["method": ServerMessage.quote(method), "data": data], on: loop.eventLoop)
            .assumeIsolated()
            .whenComplete { answer in
                session.proxyCalls -= 1
                guard !session.isClosed else { return }
                guard case .success(.result(let result)) = answer else {
                    return self.refused(answer, session: session, fail: fail)
                }
                let data = result.json("data").map { "{\"data\":\($0)}" } ?? "{}"
                session.reply(ServerMessage.reply(id: id, result: data))
            }
    }

    /// The publish proxy decides first: it may refuse, replace `data`, or keep the publication out of history.
    /// The backend may answer a connection's publishes to a channel out of order; they reach the broker in
    /// the order the client sent them (each waits for the one before it to be answered).
    func publishThroughBackend(
        _ channel: String, data: String, options: NamespaceOptions, idempotency: IdempotencyKey?, id: Int,
        session: ClientSession, loop: ChannelsLoop, fail: @escaping (ProtocolError) -> Void
    ) {
        guard let proxy = application.proxy, proxy.configuration.publishURL != nil else {
            return fail(.unavailable)
        }
        guard startProxyCall(session, fail: fail) else { return }
        let asked = proxy.ask(
            .publish, for: session, ["channel": ServerMessage.quote(channel), "data": data], on: loop.eventLoop,
            check: { result in _ = try result.bool("skip_history") })
        let turn = session.publishTail[channel] ?? loop.eventLoop.makeSucceededVoidFuture()
        let done = loop.eventLoop.makePromise(of: Void.self)
        session.publishTail[channel] = done.futureResult
        done.futureResult.assumeIsolated().whenComplete { _ in
            if session.publishTail[channel] === done.futureResult { session.publishTail[channel] = nil }
        }
        turn.assumeIsolated().whenComplete { _ in
            asked.assumeIsolated().whenComplete { answer in
                session.proxyCalls -= 1
                guard !session.isClosed else { return done.succeed() }
                guard case .success(.result(let result)) = answer else {
                    self.refused(answer, session: session, fail: fail)
                    return done.succeed()
                }
                var options = options
                if (try? result.bool("skip_history")) == true { options.historySize = 0 }
                self.publish(
                    channel, data: result.json("data") ?? data, options: options, idempotency: idempotency, id: id,
                    session: session, loop: loop
                ).assumeIsolated().whenComplete { _ in done.succeed() }
            }
        }
    }

    /// Anything but a `result`: the backend's error, its disconnect, or why it gave no answer (110, 118).
    private func refused(
        _ answer: Result<ProxyAnswer, any Error>, session: ClientSession, fail: (ProtocolError) -> Void
    ) {
        switch answer {
        case .success(.result): break
        case .success(.error(let error)): fail(error)
        case .success(.disconnect(let code, let reason)): closeForBackend(session, code, reason)
        case .failure(let error): fail((error as? ProxyFailure ?? ProxyFailure(error)).protocolError)
        }
    }

    /// Counts a question to the backend in flight, or refuses it (109) past `maxWaitingCommands`.
    func startProxyCall(_ session: ClientSession, fail: (ProtocolError) -> Void) -> Bool {
        guard session.proxyCalls < Self.maxWaitingCommands else {
            fail(.tooManyWaitingCommands)
            return false
        }
        session.proxyCalls += 1
        return true
    }

    /// The subscribe proxy's decision: the presence `info` it gave (nil: the connection's), or its error, or
    /// the connection closed as it said (`BackendClosed`).
    func askBackendToSubscribe(
        _ channel: String, data: String?, session: ClientSession, loop: ChannelsLoop
    ) -> EventLoopFuture<String?> {
        guard let proxy = application.proxy, proxy.configuration.subscribeURL != nil else {
            return loop.eventLoop.makeFailedFuture(ProtocolError.unavailable)
        }
        return proxy.ask(
            .subscribe, for: session, ["channel": ServerMessage.quote(channel), "data": data], on: loop.eventLoop
        )
        .assumeIsolated()
        .flatMapThrowing { answer in
            switch answer {
            case .result(let result): return result.json("info")
            case .error(let error): throw error
            case .disconnect(let code, let reason):
                self.closeForBackend(session, code, reason)
                throw BackendClosed()
            }
        }
        .nonisolated()
    }

    /// The backend's `disconnect`: codes 4000–4499 advise reconnecting, 4500–4999 not.
    private func closeForBackend(_ session: ClientSession, _ code: UInt16, _ reason: String) {
        session.connection.close(code: CloseCode(code), reason: reason, reconnect: code < 4500)
    }

}
