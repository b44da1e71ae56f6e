import NIOCore
import SwitchboardCore
import SwitchboardNIO

/// The channel layer's messages as a one-way event stream carries them: what has a stream position is a
/// positioned event (`EventStreamEncoding`), so a reconnecting `EventSource` resumes from it; the rest are
/// the protocol's pushes, which `EventStreamWriter` names after their `push`.
enum EventStreamMessages {
    /// A publication: `event: publication` with the WebSocket protocol's push as data, and its position as
    /// `id:` where the namespace keeps history (elsewhere there is nothing to resume from).
    static func publication(
        _ publication: Publication, channel: String, epoch: String?, options: NamespaceOptions
    ) -> ByteBuffer {
        let json = ServerMessage.publicationJSON(
            publication, channel: channel, showUser: options.showPublisher, push: true)
        let position =
            options.historySize > 0 ? (publication.epoch ?? epoch).map { "\($0):\(publication.offset)" } : nil
        return EventStreamEncoding.positionedEvent(
            stream: channel, position: position, event: "publication", data: ByteBuffer(string: json).readableBytesView)
    }

    /// The start of a channel's stream (or its resynchronization): `event: subscribed` with where it stands
    /// and, when a position was given, whether what was missed since follows (`recovered`), then each
    /// recovered publication. Its `id:` is where the client now is: its own position when the missed
    /// publications follow (a stream cut among them resumes there), the stream's newest otherwise.
    static func subscribed(
        channel: String, snapshot: SubscribeSnapshot, recover: StreamPosition?, options: NamespaceOptions
    ) -> [ByteBuffer] {
        var json = "{\"push\":\"subscribed\",\"channel\":\(ServerMessage.quote(channel)),"
        json += "\"epoch\":\(ServerMessage.quote(snapshot.epoch)),\"offset\":\(snapshot.offset)"
        if recover != nil { json += ",\"recovered\":\(snapshot.recovered)" }
        json += "}"
        let at = snapshot.recovered && recover != nil ? (recover?.offset ?? snapshot.offset) : snapshot.offset
        let position = options.historySize > 0 ? "\(snapshot.epoch):\(at)" : nil
        var frames = [
            EventStreamEncoding.positionedEvent(
                stream: channel, position: position, event: "subscribed",
                data: ByteBuffer(string: json).readableBytesView)
        ]
        for missed in snapshot.publications {
            frames.append(publication(missed, channel: channel, epoch: snapshot.epoch, options: options))
        }
        return frames
    }
}
