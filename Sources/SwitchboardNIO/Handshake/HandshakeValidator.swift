import Crypto
import Foundation
import NIOHTTP1

/// Checks an HTTP upgrade request against RFC 6455 §4.2.1 before anything is allocated for it.
enum HandshakeValidator {
    struct Rejection: Error, Equatable {
        var status: HTTPResponseStatus
        var reason: String
        var kind: SwitchboardMetrics.HandshakeRejection
        var extraHeaders: [(String, String)] = []

        static func == (lhs: Rejection, rhs: Rejection) -> Bool {
            lhs.status == rhs.status && lhs.reason == rhs.reason
        }

        static func bad(_ reason: String) -> Rejection { .init(status: .badRequest, reason: reason, kind: .badRequest) }
    }

    /// Returns the `Sec-WebSocket-Accept` value for a valid request.
    static func validate(_ head: HTTPRequestHead, path: String?) -> Result<String, Rejection> {
        if let path, head.uri.split(separator: "?", maxSplits: 1).first.map(String.init) != path {
            return .failure(.init(status: .notFound, reason: "no WebSocket endpoint at this path", kind: .notFound))
        }
        guard head.method == .GET else { return .failure(.bad("WebSocket upgrade requires GET")) }
        guard head.version.major > 1 || (head.version.major == 1 && head.version.minor >= 1) else {
            return .failure(.bad("WebSocket upgrade requires HTTP/1.1"))
        }
        guard !head.headers["Host"].isEmpty else { return .failure(.bad("missing Host header")) }
        guard hasToken(head.headers, "Upgrade", "websocket") else {
            return .failure(
                .init(
                    status: .upgradeRequired, reason: "this endpoint speaks WebSocket only", kind: .badRequest,
                    extraHeaders: [("Upgrade", "websocket"), ("Connection", "Upgrade")]))
        }
        guard hasToken(head.headers, "Connection", "upgrade") else {
            return .failure(.bad("Connection header must include Upgrade"))
        }
        let versions = head.headers[canonicalForm: "Sec-WebSocket-Version"]
        guard versions.count == 1, versions[0] == "13" else {
            return .failure(
                .init(
                    status: .upgradeRequired, reason: "unsupported WebSocket version; this server speaks 13",
                    kind: .unsupportedVersion, extraHeaders: [("Sec-WebSocket-Version", "13")]))
        }
        let keys = head.headers["Sec-WebSocket-Key"]
        guard keys.count == 1, let key = keys.first?.trimmingCharacters(in: .whitespaces),
            let decoded = Data(base64Encoded: key), decoded.count == 16
        else {
            return .failure(.bad("Sec-WebSocket-Key must be 16 bytes in base64"))
        }
        return .success(acceptValue(for: key))
    }

    static func acceptValue(for key: String) -> String {
        let digest = Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
        return Data(digest).base64EncodedString()
    }

    private static func hasToken(_ headers: HTTPHeaders, _ name: String, _ token: String) -> Bool {
        headers[canonicalForm: name].contains { $0.lowercased() == token }
    }
}
