import NIOHTTP1
import SwitchboardCore
import SwitchboardNIO

/// What a one-way event stream asks for (`GET /sse?channel=…`): its channels, in order, and where each
/// resumes (`Last-Event-ID`, or `since`). Kept with the connection as its attachment (wrapping the
/// upgrade's own: token claims, the proxy's context) and naming the streams of its composite ids.
struct EventStreamRequest: StreamAttachment {
    let channels: [String]
    /// Per channel, the position to recover from; nil: subscribe from now.
    let positions: [StreamPosition?]
    let token: String?
    /// The upgrade's attachment (`TokenClaims`, `UpgradeContext`), once authentication decided.
    var inner: (any Sendable)?

    var streamNames: [String] { channels }

    var streamPositions: [String] {
        positions.map { $0.map { Self.position(epoch: $0.epoch, offset: $0.offset) } ?? "" }
    }

    /// Parses and checks the request; the refusal says what is wrong, as the HTTP answer.
    static func parse(
        _ request: HTTPRequestHead, limit: Int, options: (String) -> NamespaceOptions?
    ) -> Result<EventStreamRequest, EventStreamRefusal> {
        let query = QueryParameters(request.uri)
        let channels = query.all("channel")
        guard !channels.isEmpty else { return .failure(.bad("channel is required: /sse?channel=NAME")) }
        guard channels.count <= limit else {
            return .failure(.bad("too many channels: at most \(limit) in one stream"))
        }
        guard Set(channels).count == channels.count else { return .failure(.bad("a channel is named twice")) }
        for channel in channels {
            guard ChannelName.validate(channel) else { return .failure(.bad("invalid channel name")) }
            guard let namespace = options(channel) else {
                return .failure(
                    .init(status: .notFound, message: "unknown namespace: \(ChannelName.namespace(of: channel))"))
            }
            if namespace.permissions.subscribe == .token || namespace.proxySubscribe {
                return .failure(
                    .init(
                        status: .forbidden,
                        message:
                            "\(channel) needs a subscription token or the backend's approval: use the client protocol"))
            }
        }
        var positions = [StreamPosition?](repeating: nil, count: channels.count)
        if let resume = request.headers.first(name: "Last-Event-ID") ?? query.first("since") {
            guard let parsed = Self.positions(resume, count: channels.count) else {
                return .failure(
                    .bad(
                        "malformed Last-Event-ID or since: expected <epoch>:<offset>, one per channel, comma-separated")
                )
            }
            positions = parsed
        }
        return .success(
            EventStreamRequest(channels: channels, positions: positions, token: query.first("token"), inner: nil))
    }

    /// `<epoch>:<offset>` per channel, comma-separated (an empty item: that channel has no position yet).
    static func positions(_ text: String, count: Int) -> [StreamPosition?]? {
        guard text.utf8.count <= 64 * count + 64 else { return nil }
        let items = text.split(separator: ",", omittingEmptySubsequences: false)
        guard items.count == count else { return nil }
        var positions: [StreamPosition?] = []
        for item in items {
            let item = item.trimmingSpaces
            guard !item.isEmpty else {
                positions.append(nil)
                continue
            }
            guard let colon = item.lastIndex(of: ":"), colon > item.startIndex,
                let offset = Int(item[item.index(after: colon)...]), offset >= 0
            else { return nil }
            let epoch = item[..<colon]
            guard epoch.utf8.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != UInt8(ascii: ",") }) else { return nil }
            positions.append(StreamPosition(offset: offset, epoch: String(epoch)))
        }
        return positions
    }

    /// The `id:` of an event of `epoch` at `offset`.
    static func position(epoch: String, offset: Int) -> String { "\(epoch):\(offset)" }
}

/// A stream request refused before it opened: its HTTP status and message (sent as JSON).
struct EventStreamRefusal: Error {
    let status: HTTPResponseStatus
    let message: String

    static func bad(_ message: String) -> EventStreamRefusal { .init(status: .badRequest, message: message) }
}

extension Substring {
    fileprivate var trimmingSpaces: Substring {
        var text = self
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return text
    }
}
