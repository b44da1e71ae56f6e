import NIOCore
import SwitchboardTestSupport

/// Sends one HTTP request and returns the whole response the server sent before closing.
func exchange(_ request: String, port: Int) async throws -> String {
    let connection = try await RawConnection.connect(port: port)
    connection.send(request)
    return try await connection.waitForServerClose()
}

func upgradeRequest(
    path: String = "/ws", method: String = "GET", version: String = "13",
    key: String = "dGhlIHNhbXBsZSBub25jZQ==", upgrade: String = "websocket", connection: String = "Upgrade",
    extra: String = ""
) -> String {
    "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: \(upgrade)\r\nConnection: \(connection)\r\n"
        + "Sec-WebSocket-Key: \(key)\r\nSec-WebSocket-Version: \(version)\r\n\(extra)\r\n"
}
