/// Where a `ChannelClient`'s connection stands, as `ChannelClient.states` reports it.
public enum ConnectionState: Sendable, Equatable {
    /// `connect()` has not been called yet.
    case idle
    /// Opening a connection; `attempt` counts the failures since the last successful connection.
    case connecting(attempt: Int)
    /// Connected and authenticated: subscriptions are being (re)made and commands flow.
    case connected(client: String, user: String?)
    /// The connection ended with this close `code` (1006 when no close frame came: a network failure, a
    /// dead link found by the watchdog, a refused upgrade) and `reason`. With `willReconnect` false this is
    /// the last state: the client is closed and every stream has finished.
    case disconnected(code: UInt16, reason: String, willReconnect: Bool)
}
