import NIOCore
import SwitchboardCore

/// The `text/event-stream` format (the HTML standard's Server-Sent Events) as the hub writes it.
///
/// The channel layer pre-encodes what carries a stream position (a publication, a `subscribed` event) once
/// per event for every receiver: a *positioned event*, sent to the connection as a binary WebSocket frame
/// whose payload is the stream's name on the first line, then `id: <position>`, then the event's other lines:
///
///     chat:lobby\nid: 8f3k:12\nevent: publication\ndata: {…}\n\n
///
/// `EventStreamWriter` writes it from the `id:` line on, zero-copy, or with an `id:` naming every stream's
/// position when the response carries several (so `Last-Event-ID` resumes all of them).
public enum EventStreamEncoding {
    /// Appends `payload` as `data:` lines: one, unless the JSON has line breaks in its whitespace (each
    /// becomes a line of its own; the receiver joins them with "\n", the same JSON).
    public static func appendData(_ payload: ByteBufferView, to buffer: inout ByteBuffer) {
        buffer.writeStaticString("data: ")
        var start = payload.startIndex
        var index = start
        while index < payload.endIndex {
            let byte = payload[index]
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                buffer.writeBytes(payload[start..<index])
                buffer.writeStaticString("\ndata: ")
                start = payload.index(after: index)
            }
            index = payload.index(after: index)
        }
        buffer.writeBytes(payload[start..<payload.endIndex])
        buffer.writeStaticString("\n")
    }

    /// Whether the payload has a line break (then it needs more than one `data:` line).
    static func hasLineBreak(_ payload: ByteBufferView) -> Bool {
        payload.contains { $0 == UInt8(ascii: "\n") || $0 == UInt8(ascii: "\r") }
    }

    /// A positioned event as a binary frame for `LocalConnection.send`: `event: <name>`, the `data:` lines,
    /// tagged with the stream and its position for the `id:` line.
    /// Without a position, no `id:` line (a stream whose events cannot be resumed from).
    public static func positionedEvent(
        stream: String, position: String?, event: String, data: ByteBufferView
    ) -> ByteBuffer {
        var body = ByteBuffer()
        body.reserveCapacity(stream.utf8.count + (position?.utf8.count ?? 0) + event.utf8.count + data.count + 32)
        body.writeString(stream)
        if let position {
            body.writeStaticString("\nid: ")
            body.writeString(position)
        }
        body.writeStaticString("\nevent: ")
        body.writeString(event)
        body.writeStaticString("\n")
        appendData(data, to: &body)
        body.writeStaticString("\n")
        return FrameEncoder.encode(.binary, payload: body)
    }

    /// The event name of one of the protocol's pushes (`{"push":"join",…}` is `join`), read from the
    /// bytes the server wrote; nil for anything else (replies).
    static func pushName(_ payload: ByteBufferView) -> Substring? {
        let prefix = #"{"push":""#.utf8
        guard payload.starts(with: prefix) else { return nil }
        let start = payload.index(payload.startIndex, offsetBy: prefix.count)
        guard let end = payload[start...].firstIndex(of: UInt8(ascii: "\"")), end > start else { return nil }
        let name = payload[start..<end]
        guard name.count <= 32, name.allSatisfy({ $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) else {
            return nil
        }
        return Substring(decoding: name, as: UTF8.self)
    }

    /// A non-negative integer field of one of the hub's own messages (`"after_ms":1234`), found as written.
    static func number(_ field: String, in payload: ByteBufferView) -> Int? {
        let key = Array("\"\(field)\":".utf8)
        guard let range = payload.firstRange(of: key) else { return nil }
        let digits = payload[range.upperBound...].prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        guard !digits.isEmpty, digits.count < 10 else { return nil }
        return Int(String(decoding: digits, as: UTF8.self))
    }
}
