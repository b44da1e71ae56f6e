/// One connection present in a channel, as presence replies and join/leave events describe it.
public struct PresenceInfo: Sendable, Equatable {
    /// The connection's id on the server (`shard-sequence`, or `node-shard-sequence` in a cluster).
    public let client: String
    /// Its user id; nil for an anonymous connection.
    public let user: String?
    /// What the server's authentication attached to the connection (a token's `info`), as JSON text.
    public let data: String?
}

extension PresenceInfo {
    init?(_ json: JSONValue) {
        guard let client = json["client"]?.string else { return nil }
        self.init(client: client, user: json["user"]?.string, data: json["data"]?.text)
    }
}

/// Who is in a channel: the reply to `ChannelClient.presence(channel:)`.
public struct ChannelPresence: Sendable, Equatable {
    /// Connections subscribed to the channel.
    public let connections: Int
    /// Distinct users among them.
    public let users: Int
    /// Each connection; nil in a counts-only namespace (large channels report counts alone).
    public let members: [PresenceInfo]?

    init?(_ json: JSONValue) {
        guard let connections = json["connections"]?.int, let users = json["users"]?.int else { return nil }
        self.connections = connections
        self.users = users
        self.members = json["members"]?.array?.compactMap { PresenceInfo($0) }
    }
}

/// A page of a channel's history: the reply to `ChannelClient.history(channel:limit:since:)`.
public struct ChannelHistory: Sendable, Equatable {
    /// The stream's current epoch: offsets compare only within one epoch.
    public let epoch: String
    /// The channel's newest offset.
    public let offset: Int
    /// The publications, oldest first.
    public let publications: [Publication]

    init?(_ json: JSONValue, channel: String) {
        guard let epoch = json["epoch"]?.string, let offset = json["offset"]?.int else { return nil }
        self.epoch = epoch
        self.offset = offset
        self.publications = (json["publications"]?.array ?? []).compactMap {
            Publication($0, channel: channel, epoch: epoch, recovered: false)
        }
    }
}
