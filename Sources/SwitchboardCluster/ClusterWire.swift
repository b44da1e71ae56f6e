import NIOCore
import SwitchboardCore
import SwitchboardServer

/// How channel events travel through Redis, in pub/sub messages and history entries. Text with length
/// prefixes where a field is free-form, so nothing needs escaping and the Lua scripts can read the
/// fields they need:
///
/// - publication: `p<offset>,<epoch>,<user>` then the data, byte for byte;
/// - join / leave: `j` / `l` then a member;
/// - member: `<node>,<connection id>,<user>` then the member's data (empty: none);
/// - user: `<length>:<bytes>`, or `-1:` for none.
enum ClusterWire {
    static func publicationBody(user: String?, data: String) -> String { field(user) + data }

    static func member(_ member: PresenceMember) -> String {
        "\(member.node ?? ""),\(member.client.rawValue)," + field(member.user) + (member.data ?? "")
    }

    private static func field(_ text: String?) -> String {
        guard let text else { return "-1:" }
        return "\(text.utf8.count):" + text
    }

    enum Event: Equatable {
        case publication(Publication)
        case join(PresenceMember)
        case leave(PresenceMember)
    }

    static func decode(_ buffer: ByteBuffer, receivedAt time: Int64) -> Event? {
        decode(Array(buffer.readableBytesView)[...], receivedAt: time)
    }

    static func decode(_ bytes: ArraySlice<UInt8>, receivedAt time: Int64) -> Event? {
        guard let kind = bytes.first else { return nil }
        var rest = bytes.dropFirst()
        switch kind {
        case UInt8(ascii: "p"):
            guard let offset = number(&rest, until: ","), let epoch = text(&rest, until: ","),
                let user = sized(&rest)
            else { return nil }
            let publication = Publication(
                offset: offset, data: String(decoding: rest, as: UTF8.self), user: user, time: time, epoch: epoch)
            return .publication(publication)
        case UInt8(ascii: "j"):
            return member(rest).map { .join($0) }
        case UInt8(ascii: "l"):
            return member(rest).map { .leave($0) }
        default:
            return nil
        }
    }

    static func member(_ bytes: ArraySlice<UInt8>) -> PresenceMember? {
        var rest = bytes
        guard let node = text(&rest, until: ","), let raw = text(&rest, until: ","), let client = UInt64(raw),
            let user = sized(&rest)
        else { return nil }
        let data = rest.isEmpty ? nil : String(decoding: rest, as: UTF8.self)
        return PresenceMember(
            client: ConnectionID(rawValue: client), user: user, data: data, node: node.isEmpty ? nil : node)
    }

    private static func text(_ bytes: inout ArraySlice<UInt8>, until separator: Character) -> String? {
        guard let ascii = separator.asciiValue, let end = bytes.firstIndex(of: ascii) else { return nil }
        defer { bytes = bytes[(end + 1)...] }
        return String(decoding: bytes[..<end], as: UTF8.self)
    }

    private static func number(_ bytes: inout ArraySlice<UInt8>, until separator: Character) -> Int? {
        text(&bytes, until: separator).flatMap { Int($0) }
    }

    /// A `<length>:<bytes>` field; `.some(nil)` for `-1:`, nil when malformed.
    private static func sized(_ bytes: inout ArraySlice<UInt8>) -> String?? {
        guard let length = number(&bytes, until: ":") else { return nil }
        if length == -1 { return .some(nil) }
        guard length >= 0, bytes.count >= length else { return nil }
        let end = bytes.startIndex + length
        defer { bytes = bytes[end...] }
        return .some(String(decoding: bytes[..<end], as: UTF8.self))
    }
}
