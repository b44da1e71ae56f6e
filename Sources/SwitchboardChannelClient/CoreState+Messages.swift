import SwitchboardClient

/// Messages from the server: replies settle commands, pushes become subscription events.
extension CoreState {
    mutating func received(_ message: JSONValue) -> [Effect] {
        guard phase == .running else { return [] }
        if let id = message["id"]?.int { return replied(id, message) }
        guard let push = message["push"]?.string else { return [] }
        let channel = message["channel"]?.string ?? ""
        switch push {
        case "pub":
            return publication(message, channel: channel)
        case "join", "leave":
            guard let info = message["info"].flatMap({ PresenceInfo($0) }) else { return [] }
            return deliver(push == "join" ? .join(info) : .leave(info), to: channel)
        case "gap":
            return deliver(.gap(dropped: message["dropped"]?.int ?? 0), to: channel)
        case "subscribed":
            if entries[channel] == nil {
                entries[channel] = ChannelEntry(id: nextEntryID, events: nil, recover: true, token: nil)
                nextEntryID += 1
            }
            return snapshot(message, channel: channel)
        case "unsubscribed":
            guard let entry = entries.removeValue(forKey: channel) else { return [] }
            let event = SubscriptionEvent.unsubscribed(error: Self.error(message["error"]))
            guard let events = entry.events else { return [.push(.serverSubscription(channel: channel, event: event))] }
            return [.event(events, event), .finish(events)]
        case "message":
            return [.push(.message(data: message["data"]?.text ?? "null"))]
        case "refresh":
            return canRenewToken ? [.refreshToken] : []
        case "disconnect":
            let code = UInt16(clamping: message["code"]?.int ?? 1006)
            notice = DisconnectNotice(
                code: code, reason: message["reason"]?.string ?? "",
                reconnect: message["reconnect"]?.bool ?? !Self.finalCloseCodes.contains(code),
                afterMilliseconds: message["after_ms"]?.int)
            return []
        default:
            return []  // for newer clients
        }
    }

    private mutating func replied(_ id: Int, _ message: JSONValue) -> [Effect] {
        guard let command = pending.removeValue(forKey: id) else { return [] }
        command.timer?.cancel()
        let error = Self.error(message["error"])
        let ok = error == nil ? message["ok"] : nil
        switch command.purpose {
        case .caller(let continuation):
            guard let ok else {
                let failure = error ?? ChannelClientError.unexpectedReply(command: command.name)
                return [.resume(continuation, .failure(failure))]
            }
            return [.resume(continuation, .success(ok))]
        case .connect:
            guard let ok else {
                let failure = error ?? .unexpectedReply(command: "connect")
                connectError = failure
                // A refused token is followed by the server's close; after anything else, close and retry.
                guard let socket, failure.serverCode != 112, failure.serverCode != 113 else { return [] }
                return [.closeSocket(socket)]
            }
            return connected(ok)
        case .subscribe(let channel, let entryID):
            guard var entry = entries[channel], entry.id == entryID else { return [] }
            if let ok { return snapshot(ok, channel: channel) }
            switch error?.serverCode {
            case 110:
                entry.sentOn = nil
                entry.unavailable += 1
                entries[channel] = entry
                return [.retrySubscribe(channel: channel, entry: entryID, attempt: entry.unavailable)]
            case 107:
                // The server subscribed this connection already (a token's `channels`).
                entry.live = true
                entries[channel] = entry
                return []
            default:
                entries[channel] = nil
                let failure = error ?? ChannelClientError.unexpectedReply(command: "subscribe")
                let event = SubscriptionEvent.unsubscribed(error: failure)
                return entry.events.map { [.event($0, event), .finish($0)] } ?? []
            }
        case .ignored:
            return []
        }
    }

    /// `connect` succeeded: subscriptions are made again, recovering, then waiting commands go out in order.
    private mutating func connected(_ ok: JSONValue) -> [Effect] {
        guard let socket else { return [] }
        ready = true
        current = .connected(client: ok["client"]?.string ?? "", user: ok["user"]?.string)
        var effects: [Effect] = [.state(current)]
        for channel in Array(entries.keys) { effects += sendSubscribe(channel) }
        for id in pending.keys.sorted() {
            guard var command = pending[id], command.sentOn == nil else { continue }
            command.sentOn = generation
            pending[id] = command
            effects.append(.send(socket, command.text))
        }
        return effects
    }

    private mutating func publication(_ message: JSONValue, channel: String) -> [Effect] {
        // A duplicate (offset already seen in this epoch) is dropped; so is one before the subscribe reply.
        guard var entry = entries[channel], entry.live, let offset = message["offset"]?.int, offset > entry.offset,
            let publication = Publication(message, channel: channel, epoch: entry.epoch, recovered: false)
        else { return [] }
        entry.offset = offset
        entries[channel] = entry
        return deliver(.publication(publication), to: channel)
    }

    /// A subscribe reply or `subscribed` push: the new position, and what recovery brought.
    private mutating func snapshot(_ result: JSONValue, channel: String) -> [Effect] {
        guard var entry = entries[channel], let epoch = result["epoch"]?.string, let offset = result["offset"]?.int
        else { return [] }
        entry.unavailable = 0
        let recovered = result["recovered"]?.bool
        var events: [SubscriptionEvent] = [.subscribed(epoch: epoch, offset: offset, recovered: recovered)]
        if recovered == true, entry.epoch == epoch {
            for json in result["publications"]?.array ?? [] {
                guard let publication = Publication(json, channel: channel, epoch: epoch, recovered: true),
                    publication.offset > entry.offset
                else { continue }
                entry.offset = publication.offset
                events.append(.publication(publication))
            }
            entry.offset = max(entry.offset, offset)
        } else {
            entry.offset = offset
        }
        entry.epoch = epoch
        entry.live = true
        entries[channel] = entry
        return events.flatMap { deliver($0, to: channel) }
    }

    private func deliver(_ event: SubscriptionEvent, to channel: String) -> [Effect] {
        guard let entry = entries[channel], entry.live else { return [] }
        guard let events = entry.events else { return [.push(.serverSubscription(channel: channel, event: event))] }
        return [.event(events, event)]
    }
}
