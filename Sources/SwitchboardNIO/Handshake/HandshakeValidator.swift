import Crypto
import Foundation
import NIOHTTP1
import SwitchboardCore

/// Checks an HTTP upgrade request against RFC 6455 §4.2.1 before anything is allocated for it.
package enum HandshakeValidator {
    package typealias Rejection = UpgradeRefusal

    /// Returns the `Sec-WebSocket-Accept` value for a valid request. Runs for every connection, so it
    /// reads headers in place instead of splitting, lowercasing and decoding them into new strings.
    package static func validate(
        _ head: HTTPRequestHead, path: String?, origins: OriginPolicy = .any, ownHosts: OwnHostNames = .any
    ) -> Result<String, Rejection> {
        if let path, !head.uri.utf8.prefix(while: { $0 != UInt8(ascii: "?") }).elementsEqual(path.utf8) {
            return .failure(.init(status: .notFound, reason: "no WebSocket endpoint at this path", kind: .notFound))
        }
        guard head.method == .GET else { return .failure(.bad("WebSocket upgrade requires GET")) }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return .failure(.bad("WebSocket upgrade requires HTTP/1.1"))
        }
        guard head.headers.contains(name: "Host") else { return .failure(.bad("missing Host header")) }
        guard hasToken(head.headers, "Upgrade", "websocket") else {
            return .failure(
                .init(
                    status: .upgradeRequired, reason: "this endpoint speaks WebSocket only", kind: .badRequest,
                    extraHeaders: [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
        }
        guard hasToken(head.headers, "Connection", "upgrade") else {
            return .failure(.bad("Connection header must include Upgrade"))
        }
        guard let version = onlyValue(head.headers, "Sec-WebSocket-Version"), version.elementsEqual("13".utf8) else {
            return .failure(
                .init(
                    status: .upgradeRequired, reason: "unsupported WebSocket version; this server speaks 13",
                    kind: .unsupportedVersion, extraHeaders: [("Sec-WebSocket-Version", "13")]))
        }
        guard let key = onlyValue(head.headers, "Sec-WebSocket-Key"), isBase64Of16Bytes(key) else {
            return .failure(.bad("Sec-WebSocket-Key must be 16 bytes in base64"))
        }
        if let refusal = originRefusal(head, origins: origins, ownHosts: ownHosts) { return .failure(refusal) }
        return .success(acceptValue(for: String(decoding: key, as: UTF8.self)))
    }

    /// The checks a stream's `GET` (or the HTTP transport's `POST`) shares with an upgrade: HTTP/1.1, a
    /// `Host`, and an allowed origin (a cross-origin `EventSource` only where the origin policy admits it).
    package static func validateStream(
        _ head: HTTPRequestHead, origins: OriginPolicy = .any, ownHosts: OwnHostNames = .any
    ) -> Result<String, Rejection> {
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return .failure(.bad("streams require HTTP/1.1"))
        }
        guard head.headers.contains(name: "Host") else { return .failure(.bad("missing Host header")) }
        if let refusal = originRefusal(head, origins: origins, ownHosts: ownHosts) { return .failure(refusal) }
        return .success("")
    }

    /// 403 for a page the origin policy does not admit; nil for an admitted one, or no page (no `Origin`).
    private static func originRefusal(
        _ head: HTTPRequestHead, origins: OriginPolicy, ownHosts: OwnHostNames
    ) -> Rejection? {
        let host = head.headers.first(name: "Host")
        guard !origins.allows(origin: head.headers.first(name: "Origin"), host: host, ownHosts: ownHosts) else {
            return nil
        }
        return .init(status: .forbidden, reason: "origin not allowed", kind: .originNotAllowed)
    }

    static func acceptValue(for key: String) -> String {
        var sha1 = Insecure.SHA1()
        sha1.update(data: Array(key.utf8))
        sha1.update(data: Array("258EAFA5-E914-47DA-95CA-C5AB0DC85B11".utf8))
        return Data(sha1.finalize()).base64EncodedString()
    }

    /// 16 bytes in base64 are 22 characters of the alphabet and "==".
    private static func isBase64Of16Bytes(_ key: Substring.UTF8View) -> Bool {
        guard key.count == 24, key.suffix(2).allSatisfy({ $0 == UInt8(ascii: "=") }) else { return false }
        return key.prefix(22).allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "+"), UInt8(ascii: "/"):
                true
            default: false
            }
        }
    }

    /// The value of a header that must appear once, without surrounding whitespace.
    private static func onlyValue(_ headers: HTTPHeaders, _ name: String) -> Substring.UTF8View? {
        var found: Substring.UTF8View?
        for (headerName, value) in headers where equalsIgnoringCase(headerName.utf8, name.utf8) {
            guard found == nil else { return nil }
            found = trimmed(value.utf8)
        }
        return found
    }

    /// Whether a comma-separated header (in any of its lines) lists `token`, in any letter case.
    private static func hasToken(_ headers: HTTPHeaders, _ name: String, _ token: String) -> Bool {
        headers.contains { headerName, value in
            equalsIgnoringCase(headerName.utf8, name.utf8)
                && value.utf8.split(separator: UInt8(ascii: ",")).contains {
                    equalsIgnoringCase(trimmed($0), token.utf8)
                }
        }
    }

    private static func trimmed<Bytes: BidirectionalCollection<UInt8>>(_ bytes: Bytes) -> Bytes.SubSequence {
        let isSpace = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }) else { return bytes[bytes.endIndex...] }
        let last = bytes.lastIndex(where: { !isSpace($0) }) ?? first
        return bytes[first...last]
    }

    private static func equalsIgnoringCase(_ lhs: some Collection<UInt8>, _ rhs: some Collection<UInt8>) -> Bool {
        func lower(_ byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte }
        return lhs.count == rhs.count && zip(lhs, rhs).allSatisfy { lower($0) == lower($1) }
    }
}
