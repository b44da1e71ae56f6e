/// What a subscription delivers, in the order the server sent it.
public enum SubscriptionEvent: Sendable, Equatable {
    /// The server confirmed the subscription, first or after a reconnect. `recovered` is nil for a fresh
    /// subscription (nothing to recover from), true when every publication missed while disconnected
    /// follows as `.publication` events, false when some are lost (the epoch changed or history no longer
    /// reaches back): reload what you show from your own backend, then carry on from here.
    case subscribed(epoch: String, offset: Int, recovered: Bool?)
    /// A publication; each offset is delivered once per epoch, in order.
    case publication(Publication)
    /// A connection joined the channel (namespaces with join/leave events).
    case join(PresenceInfo)
    /// A connection left the channel.
    case leave(PresenceInfo)
    /// The server dropped `dropped` publications for this slow reader before the next one (namespaces
    /// whose slow-consumer policy drops): fetch them with `history` if they matter.
    case gap(dropped: Int)
    /// The server ended the subscription (server API) or refused it (`error`, e.g. 104 not allowed). The
    /// event stream finishes right after.
    case unsubscribed(error: ChannelClientError?)
}

/// A push from the server that belongs to no subscription made by this client.
public enum ServerPush: Sendable, Equatable {
    /// A message for this user from the application's backend (the server API's `send`): JSON text.
    case message(data: String)
    /// An event of a subscription the server made for this connection (a token's `channels` claim, or the
    /// server API). The client recovers these across reconnects too.
    case serverSubscription(channel: String, event: SubscriptionEvent)
}
