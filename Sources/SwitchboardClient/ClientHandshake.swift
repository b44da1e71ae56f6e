import Crypto
import Foundation
import NIOCore

/// The client side of the opening handshake, done by hand on raw bytes so that tests can also send
/// malformed requests and frames through the same connection.
struct ClientHandshake {
    let key: String
    let request: String

    init(host: String, port: Int, path: String, headers: [(String, String)], subprotocols: [String]) {
        let nonce = (0..<16).map { _ in UInt8.random(in: 0...255) }
        key = Data(nonce).base64EncodedString()
        var lines = [
            "GET \(path) HTTP/1.1", "Host: \(host):\(port)", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Key: \(key)", "Sec-WebSocket-Version: 13",
        ]
        if !subprotocols.isEmpty { lines.append("Sec-WebSocket-Protocol: \(subprotocols.joined(separator: ", "))") }
        lines += headers.map { "\($0.0): \($0.1)" }
        request = lines.joined(separator: "\r\n") + "\r\n\r\n"
    }

    var expectedAccept: String {
        let digest = Insecure.SHA1.hash(data: Data((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").utf8))
        return Data(digest).base64EncodedString()
    }

    struct Response {
        var status: Int
        var headers: [String: String]
        var headerLength: Int
    }

    /// Parses the response head once it is complete in `buffer`; header names are lower-cased.
    static func parseHead(_ buffer: ByteBuffer) -> Response? {
        let view = buffer.readableBytesView
        guard let end = view.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
        let text = String(decoding: view[view.startIndex..<end.lowerBound], as: UTF8.self)
        let lines = text.components(separatedBy: "\r\n")
        let statusParts = lines.first?.split(separator: " ") ?? []
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            return Response(status: 0, headers: [:], headerLength: end.upperBound - view.startIndex)
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(
                in: .whitespaces)
        }
        return Response(status: status, headers: headers, headerLength: end.upperBound - view.startIndex)
    }
}
