/// Why a command or subscription failed: refused by the server (with the protocol's code), or given up by
/// the client.
public enum ChannelClientError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The server refused the command. `code` is the protocol's (docs/PROTOCOL.md, "Errors"): e.g. 104 not
    /// allowed, 102 unknown namespace, 110 temporarily unavailable (retry later; on a publish, read the
    /// message: it may have been made), 112 invalid token, 113 token expired, 118 the application's backend
    /// answered something unusable; from 1000 up, the application's own (its backend's answer to `rpc`).
    case server(code: Int, message: String)
    /// No reply within `commandTimeout`, or no connection in time for a command waiting for one. A publish
    /// that timed out may still have been made.
    case timeout(command: String)
    /// The connection was lost after the command was sent: it may or may not have run.
    case disconnected(command: String)
    /// The client is closed, by `close()` or by a disconnect after which reconnecting would not help;
    /// `code` and `reason` are those of that disconnect. Make a new client to connect again.
    case closed(code: UInt16, reason: String)
    /// A command was issued before `connect()`.
    case notConnected
    /// `subscribe` was called for a channel this client is already subscribed to.
    case alreadySubscribed(channel: String)
    /// The data to publish is not one JSON value.
    case invalidJSON
    /// The server's reply lacked what the command needs: a server speaking another protocol version.
    case unexpectedReply(command: String)

    /// The server's error code, for `.server`; nil for the client's own failures.
    public var serverCode: Int? {
        if case .server(let code, _) = self { return code }
        return nil
    }

    /// A readable summary: the server's code and message, or what the client gave up on.
    public var description: String {
        switch self {
        case .server(let code, let message): return "server error \(code): \(message)"
        case .timeout(let command): return "\(command): no reply in time"
        case .disconnected(let command): return "\(command): connection lost before the reply"
        case .closed(let code, let reason): return "client closed (\(code) \(reason))"
        case .notConnected: return "not connected: call connect() first"
        case .alreadySubscribed(let channel): return "already subscribed to \(channel)"
        case .invalidJSON: return "data is not one JSON value"
        case .unexpectedReply(let command): return "\(command): unexpected reply"
        }
    }
}
