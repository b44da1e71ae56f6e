import Foundation

/// One message of a channel's stream, live or recovered after a reconnect.
public struct Publication: Sendable, Equatable {
    /// The channel it was published on.
    public let channel: String
    /// Its place in the channel's stream: one more than the previous publication of the same epoch.
    public let offset: Int
    /// The stream's epoch as this client knows it (from the subscribe reply); nil when unknown.
    public let epoch: String?
    /// The published JSON value, byte for byte as the publisher sent it.
    public let data: String
    /// The publisher's user id, when it has one and the namespace shows it.
    public let user: String?
    /// Delivered from history by a recovery after a reconnect, not live.
    public let recovered: Bool

    /// Decodes `data` as `T`, for applications that publish `Codable` values.
    public func decode<T: Decodable>(_ type: T.Type = T.self, using decoder: JSONDecoder = JSONDecoder()) throws -> T {
        try decoder.decode(T.self, from: Data(data.utf8))
    }
}

extension Publication {
    /// Reads a publication object (`{"offset": 42, "data": …, "user": "ada"}`) of a reply or push.
    init?(_ json: JSONValue, channel: String, epoch: String?, recovered: Bool) {
        guard let offset = json["offset"]?.int else { return nil }
        self.init(
            channel: channel, offset: offset, epoch: epoch, data: json["data"]?.text ?? "null",
            user: json["user"]?.string, recovered: recovered)
    }
}
