import Foundation

/// A command from a client: `{"id": 1, "cmd": "subscribe", "channel": "chat:lobby", ...}`.
public struct ClientCommand: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        case subscribe(channel: String, recover: StreamPosition?)
        case unsubscribe(channel: String)
        /// `data` is the publication's JSON, kept as the exact bytes the client sent.
        case publish(channel: String, data: String)
        case presence(channel: String)
        case history(channel: String, limit: Int, since: Int?)
        case ping
    }

    public let id: Int
    public let kind: Kind

    /// Parses one text message. A message that is not a JSON object with an integer `id` cannot be
    /// answered and throws with `id` nil; anything else wrong is answered under its `id`.
    public static func parse(_ bytes: some Collection<UInt8>) -> Result<ClientCommand, CommandFailure> {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
            return .failure(CommandFailure(id: nil, error: .badRequest("not a JSON object")))
        }
        guard let id = (object["id"] as? NSNumber).flatMap({ Int(exactly: $0.doubleValue) }), id >= 0 else {
            return .failure(CommandFailure(id: nil, error: .badRequest("missing or invalid id")))
        }
        func fail(_ error: ProtocolError) -> Result<ClientCommand, CommandFailure> {
            .failure(CommandFailure(id: id, error: error))
        }
        guard let cmd = object["cmd"] as? String else { return fail(.badRequest("missing cmd")) }
        if cmd == "ping" { return .success(ClientCommand(id: id, kind: .ping)) }
        guard ["subscribe", "unsubscribe", "publish", "presence", "history"].contains(cmd) else {
            return fail(.unknownCommand)
        }
        guard let channel = object["channel"] as? String else { return fail(.badRequest("missing channel")) }
        switch cmd {
        case "subscribe":
            var position: StreamPosition?
            if let recover = object["recover"] {
                guard let recover = recover as? [String: Any], let offset = recover["offset"] as? Int,
                    let epoch = recover["epoch"] as? String
                else { return fail(.badRequest("recover needs offset and epoch")) }
                position = StreamPosition(offset: offset, epoch: epoch)
            }
            return .success(ClientCommand(id: id, kind: .subscribe(channel: channel, recover: position)))
        case "unsubscribe":
            return .success(ClientCommand(id: id, kind: .unsubscribe(channel: channel)))
        case "publish":
            guard let data = object["data"],
                let encoded = try? JSONSerialization.data(withJSONObject: data, options: [.fragmentsAllowed])
            else { return fail(.badRequest("missing data")) }
            return .success(
                ClientCommand(id: id, kind: .publish(channel: channel, data: String(decoding: encoded, as: UTF8.self))))
        case "presence":
            return .success(ClientCommand(id: id, kind: .presence(channel: channel)))
        default:
            let limit = object["limit"] as? Int ?? 100
            let since = object["since"] as? Int
            guard limit >= 0 else { return fail(.badRequest("limit must not be negative")) }
            return .success(ClientCommand(id: id, kind: .history(channel: channel, limit: limit, since: since)))
        }
    }
}

public struct CommandFailure: Error, Equatable, Sendable {
    public let id: Int?
    public let error: ProtocolError
}

/// A place in a channel's stream: the offset of a publication and the epoch of the history it
/// belongs to. Offsets only compare within one epoch.
public struct StreamPosition: Sendable, Equatable {
    public var offset: Int
    public var epoch: String
    public init(offset: Int, epoch: String) {
        self.offset = offset
        self.epoch = epoch
    }
}
