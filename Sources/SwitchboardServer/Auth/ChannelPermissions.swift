/// Who may do what in a namespace's channels (docs/CONFIGURATION.md, `permissions`).
public struct ChannelPermissions: Sendable, Equatable {
    /// Who may perform an action; spelled as in the configuration (`"authenticated"`, `"token"`…).
    public enum Access: String, Sendable, CaseIterable {
        /// Any connection, anonymous ones included.
        case anyone
        /// Connections with a user id.
        case authenticated
        /// Connections subscribed to the channel (not for `subscribe`).
        case subscribers
        /// Connections presenting a subscription token for the channel (`subscribe` only).
        case token
        /// Connections from this host (a loopback address) or with a user id: the server's own statistics.
        case localOrAuthenticated
    }

    /// The client commands a namespace's permissions govern; the keys of its `permissions` object.
    public enum Action: String, Sendable, CaseIterable {
        case subscribe, publish, presence, history
    }

    /// Who may subscribe. Default `.anyone`; `.subscribers` is not allowed here.
    public var subscribe = Access.anyone
    /// Who may publish. Default `.anyone`; `.token` is for `subscribe` only.
    public var publish = Access.anyone
    /// Who may read a channel's presence. Default `.anyone`.
    public var presence = Access.anyone
    /// Who may read a channel's history. Default `.anyone`.
    public var history = Access.anyone

    /// Every action open to anyone. Channels with `#` in their name still admit only the users they list.
    public init() {}

    /// The access required for `action`, by name rather than property.
    public subscript(action: Action) -> Access {
        get {
            switch action {
            case .subscribe: return subscribe
            case .publish: return publish
            case .presence: return presence
            case .history: return history
            }
        }
        set {
            switch action {
            case .subscribe: subscribe = newValue
            case .publish: publish = newValue
            case .presence: presence = newValue
            case .history: history = newValue
            }
        }
    }

    /// What each action may require: a subscription token only gates subscribing, and subscribing cannot
    /// require being subscribed.
    static func allowed(for action: Action) -> [Access] {
        action == .subscribe
            ? [.anyone, .authenticated, .token, .localOrAuthenticated]
            : [.anyone, .authenticated, .subscribers, .localOrAuthenticated]
    }

    /// The users a user-limited channel admits: `dm:#alice,bob` → alice and bob; nil for other channels.
    static func users(of channel: String) -> [Substring]? {
        guard let hash = channel.firstIndex(of: "#") else { return nil }
        return channel[channel.index(after: hash)...].split(separator: ",")
    }

    /// Why `user` (nil: anonymous) may not do `action` on `channel`, or nil when it may. A subscription
    /// token, when `access` is `.token`, is checked by the caller.
    func refusal(
        _ action: Action, channel: String, user: String?, isSubscribed: Bool,
        isLocal: @autoclosure () -> Bool = false
    ) -> ProtocolError? {
        if let users = Self.users(of: channel) {
            guard let user, users.contains(Substring(user)) else {
                return .notAllowed("not one of this channel's users")
            }
        }
        switch self[action] {
        case .anyone, .token: return nil
        case .authenticated: return user == nil ? .notAllowed("\(action.rawValue) needs an authenticated user") : nil
        case .subscribers: return isSubscribed ? nil : .notAllowed("\(action.rawValue) is for subscribers only")
        case .localOrAuthenticated:
            return user != nil || isLocal()
                ? nil : .notAllowed("\(action.rawValue) needs an authenticated user or a connection from this host")
        }
    }
}
