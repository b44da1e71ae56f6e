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

    /// Parses the response head once it is complete in `buffer`; header names are lower-cased. Works on
    /// bytes: the load generator parses one of these per connection it opens.
    static func parseHead(_ buffer: ByteBuffer) -> Response? {
        buffer.withUnsafeReadableBytes { bytes -> Response? in
            guard let headEnd = headLength(bytes) else { return nil }
            var lines = bytes[0..<(headEnd - 4)].split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
                .map { line in
                    String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
                }[...]
            let statusParts = lines.popFirst()?.split(separator: " ") ?? []
            guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
                return Response(status: 0, headers: [:], headerLength: headEnd)
            }
            var headers: [String: String] = [:]
            for line in lines {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let value = line[line.index(after: colon)...].drop { $0 == " " || $0 == "\t" }
                headers[line[..<colon].lowercased()] = String(
                    value.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
            }
            return Response(status: status, headers: headers, headerLength: headEnd)
        }
    }

    /// Bytes up to and including the blank line that ends the head, once it has arrived.
    private static func headLength(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 3..<bytes.count
        where bytes[index] == 0x0A && bytes[index - 1] == 0x0D && bytes[index - 2] == 0x0A && bytes[index - 3] == 0x0D {
            return index + 1
        }
        return nil
    }
}
